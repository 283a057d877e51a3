"""A stand-in Kubernetes API for the router's discovery tests: EndpointSlices only.

A real HTTP server on loopback (the router's discovery client is what is tested, over real
sockets): ``GET /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices?labelSelector=
kubernetes.io/service-name=SVC`` lists, and with ``watch=1&resourceVersion=V`` streams
newline-delimited JSON events after V, as the API server does. A request without
``Authorization: Bearer <token>`` gets 401; ``refuse=True`` answers 403 to everything.
The test changes pods with ``set_pods``, which emits an ADDED or MODIFIED event.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PATH = re.compile(r"^/apis/discovery\.k8s\.io/v1/namespaces/([^/]+)/endpointslices$")


class FakeKubeApi:
    """EndpointSlices of Services, by (namespace, service); every change is an event."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.refuse = False
        self.version = 100
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, tuple[str, str], dict[str, Any]]] = []
        self.changed = threading.Condition()
        self.requests: list[str] = []
        self.url = ""

    def set_pods(
        self, namespace: str, service: str, pods: dict[str, bool], port: int = 5001
    ) -> None:
        """The Service's one slice: address → ready."""
        with self.changed:
            self.version += 1
            key = (namespace, service)
            item = {
                "kind": "EndpointSlice",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {
                    "name": f"{service}-abcde",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": service},
                    "resourceVersion": str(self.version),
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": [address], "conditions": {"ready": ready}}
                    for address, ready in pods.items()
                ],
            }
            kind = "MODIFIED" if key in self.slices else "ADDED"
            self.slices[key] = item
            self.events.append((self.version, key, {"type": kind, "object": item}))
            self.changed.notify_all()


def _handler(api: FakeKubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            api.requests.append(self.path)
            url = urlsplit(self.path)
            found = PATH.match(url.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if self.headers.get("authorization") != f"Bearer {api.token}":
                self._answer(401, {"kind": "Status", "code": 401, "message": "Unauthorized"})
                return
            if api.refuse:
                self._answer(
                    403,
                    {
                        "kind": "Status",
                        "code": 403,
                        "message": "endpointslices.discovery.k8s.io is forbidden",
                    },
                )
                return
            selector = query.get("labelSelector", "")
            if not found or not selector.startswith("kubernetes.io/service-name="):
                self._answer(404, {"kind": "Status", "code": 404, "message": "not found"})
                return
            key = (found.group(1), selector.split("=", 1)[1])
            if query.get("watch") != "1":
                with api.changed:
                    items = [api.slices[key]] if key in api.slices else []
                    version = api.version
                self._answer(
                    200,
                    {
                        "kind": "EndpointSliceList",
                        "metadata": {"resourceVersion": str(version)},
                        "items": items,
                    },
                )
                return
            self._watch(key, int(query.get("resourceVersion", "0")))

        def _watch(self, key: tuple[str, str], since: int) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            seen = since
            with contextlib.suppress(OSError):
                while True:
                    with api.changed:
                        api.changed.wait_for(
                            lambda s=seen: any(v > s for v, _, _ in api.events), timeout=1.0
                        )
                        new = [(v, e) for v, k, e in api.events if v > seen and k == key]
                        seen = max([seen, *(v for v, _, _ in api.events)])
                    for _, event in new:
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()

    return Handler


@contextlib.contextmanager
def fake_kube_api(token: str) -> Iterator[FakeKubeApi]:
    """A FakeKubeApi served on 127.0.0.1 (``api.url``) until the block ends."""
    api = FakeKubeApi(token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    server.daemon_threads = True
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
