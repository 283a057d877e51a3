"""Which pods serve each deployment: the router lists and watches its Services' EndpointSlices.

Off the request path: one task per deployment keeps ``PooledClient``'s endpoint table (the
ready pod addresses behind a Service address) in step with the Kubernetes API; a request only
picks from that table (``upstream._Route.pick``). The API client is a small list + watch over
HTTP/1.1 (asyncio streams, httptools), because the router's image carries no Kubernetes client
library and this needs two GETs: the ServiceAccount token is re-read for every connection
(projected tokens rotate), the API's certificate is checked against the cluster CA, and watch
events are newline-delimited JSON.

When the API cannot be listed (no permission, unreachable), the deployment's entry is dropped,
so its requests go to the Service address again (kube-proxy picks a pod per connection), and
the list is retried with a growing delay; a broken watch is re-listed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

from scoring.common.logs import get_log
from scoring.router.config import DiscoveryConfig
from scoring.router.upstream import PooledClient, Target

#: Seconds to connect and get a list's whole answer.
LIST_TIMEOUT_S = 10.0
#: The API ends each watch after this many seconds (``timeoutSeconds``); then it is resumed.
WATCH_S = 240
#: Longest wait between failed lists.
RETRY_MAX_S = 30.0


class ApiError(Exception):
    """The API answered, but not with what was asked (its status and message)."""


@dataclass(frozen=True)
class Service:
    """The Kubernetes Service a deployment address names."""

    namespace: str
    name: str


def service_of(target: Target, default_namespace: str) -> Service | None:
    """``svc``, ``svc.ns``, ``svc.ns.svc[.cluster.local]`` → the Service; an IP address → None
    (nothing to discover)."""
    host = target.host
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return None
    labels = host.split(".")
    return Service(labels[1] if len(labels) > 1 else default_namespace, labels[0])


def ready_addresses(slices: Mapping[str, Mapping[str, Any]], port: int) -> list[tuple[str, int]]:
    """The ready pod addresses in a Service's EndpointSlices, sorted.

    An endpoint is ready unless its ``conditions.ready`` is false (absent means ready, as the
    API says; terminating pods are not ready). A slice's port is its only TCP port, else the
    one equal to the Service address's port; a slice with neither is skipped.
    """
    found: set[tuple[str, int]] = set()
    for item in slices.values():
        if item.get("addressType") not in ("IPv4", "IPv6"):
            continue
        ports = [
            p["port"]
            for p in item.get("ports") or []
            if p.get("port") and p.get("protocol", "TCP") == "TCP"
        ]
        if len(ports) != 1:
            ports = [p for p in ports if p == port]
            if not ports:
                continue
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                found.add((address, ports[0]))
    return sorted(found)


class _Reply:
    """httptools callbacks of one API answer: status, and the body whole or line by line."""

    def __init__(self, streaming: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.body = bytearray()
        self.lines: list[bytes] = []
        self.streaming = streaming
        self.complete = False

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        self.body += data
        if self.streaming and self.status == 200:
            body = self.body
            while (end := body.find(b"\n")) >= 0:
                line = bytes(body[:end]).strip()
                del body[: end + 1]
                if line:
                    self.lines.append(line)

    def on_message_complete(self) -> None:
        self.complete = True


async def api_get(
    api: DiscoveryConfig,
    path: str,
    idle_timeout: float,
    on_lines: Callable[[list[bytes]], bool] | None = None,
) -> tuple[int, bytes]:
    """GET ``path`` from the API: (status, body). With ``on_lines``, a watch: each batch of
    complete lines goes to it as it arrives, until it returns False or the API ends the
    answer; every read waits at most ``idle_timeout`` seconds."""
    url = urlsplit(api.api_url)
    host = url.hostname or ""
    context: ssl.SSLContext | None = None
    if url.scheme == "https":
        context = ssl.create_default_context(cafile=api.ca_file)
    try:
        token = Path(api.token_file).read_text().strip()
    except OSError as exc:
        raise ApiError(f"cannot read token_file {api.token_file}: {exc.strerror or exc}") from exc
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host, url.port or (443 if context else 80), ssl=context, limit=1 << 20
        ),
        LIST_TIMEOUT_S,
    )
    reply = _Reply(streaming=on_lines is not None)
    try:
        writer.write(
            f"GET {url.path}{path} HTTP/1.1\r\nhost: {url.netloc}\r\n"
            f"authorization: Bearer {token}\r\naccept: application/json\r\n"
            "connection: close\r\n\r\n".encode()
        )
        while not reply.complete:
            data = await asyncio.wait_for(reader.read(1 << 16), idle_timeout)
            if not data:
                break
            reply.parser.feed_data(data)
            if reply.lines and on_lines is not None:
                lines, reply.lines = reply.lines, []
                if not on_lines(lines):
                    break
    finally:
        writer.close()
    if not reply.status:
        raise ApiError("the API closed the connection without an answer")
    return reply.status, bytes(reply.body)


def _refusal(status: int, body: bytes) -> ApiError:
    """The API's own reason (a Status object's message) for a non-200 answer."""
    try:
        message = json.loads(body).get("message") or ""
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    return ApiError(f"HTTP {status}: {message}".strip())


class _Watch:
    """Keeps one deployment's ready pods in the client's table: list, then watch, forever."""

    def __init__(
        self, client: PooledClient, api: DiscoveryConfig, target: Target, service: Service
    ) -> None:
        self.client = client
        self.api = api
        self.target = target
        self.service = service
        self.slices: dict[str, Mapping[str, Any]] = {}
        self.published: list[tuple[str, int]] | None = None
        self.failing = False
        selector = quote(f"kubernetes.io/service-name={service.name}", safe="")
        self.path = (
            f"/apis/discovery.k8s.io/v1/namespaces/{service.namespace}/endpointslices"
            f"?labelSelector={selector}"
        )

    def _log(self, level: str, message: str) -> None:
        get_log().event(
            level,
            f"deployment {self.target.name!r} (Service {self.service.namespace}/"
            f"{self.service.name}): {message}",
            event="discovery",
            deployment=self.target.name,
        )

    def publish(self) -> None:
        addresses = ready_addresses(self.slices, self.target.port)
        if addresses == self.published:
            return
        self.published = addresses
        self.client.set_endpoints(self.target, addresses)
        pods = ", ".join(f"{h}:{p}" for h, p in addresses) or "none; using the Service address"
        self._log("info", f"{len(addresses)} ready pod(s): {pods}")

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                version = await self.list()
            except Exception as exc:  # never let discovery die: fall back, retry
                if not self.failing:
                    self._log(
                        "warning",
                        f"cannot list EndpointSlices ({type(exc).__name__}: {exc}); sending "
                        f"to the Service address until a list succeeds",
                    )
                    self.failing = True
                self.slices = {}
                self.published = []
                self.client.set_endpoints(self.target, [])
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if self.failing:
                self._log("info", "EndpointSlices listed again")
                self.failing = False
            delay = 1.0
            try:
                while version:
                    version = await self.watch(version)
            except Exception as exc:  # re-list (the table stays meanwhile)
                self._log("info", f"watch ended ({type(exc).__name__}: {exc}); listing again")
                await asyncio.sleep(1.0)

    async def list(self) -> str:
        """Read every slice; returns the list's resourceVersion to watch from."""
        status, body = await asyncio.wait_for(
            api_get(self.api, self.path, LIST_TIMEOUT_S), LIST_TIMEOUT_S
        )
        if status != 200:
            raise _refusal(status, body)
        doc = json.loads(body)
        self.slices = {i["metadata"]["name"]: i for i in doc.get("items") or []}
        self.publish()
        return str(doc["metadata"]["resourceVersion"])

    async def watch(self, version: str) -> str:
        """Apply events from ``version`` on until the API ends the watch; the version to
        resume from, or "" when it is too old (410 Gone: list again)."""
        state = {"version": version}

        def events(lines: list[bytes]) -> bool:
            for line in lines:
                event = json.loads(line)
                kind, item = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if item.get("code") == 410:
                        state["version"] = ""
                        return False
                    raise ApiError(f"watch error: {item.get('message') or item}")
                meta = item.get("metadata") or {}
                state["version"] = meta.get("resourceVersion") or state["version"]
                if kind in ("ADDED", "MODIFIED"):
                    self.slices[meta["name"]] = item
                elif kind == "DELETED":
                    self.slices.pop(str(meta.get("name")), None)
            self.publish()
            return True

        path = (
            f"{self.path}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_S}"
            f"&resourceVersion={quote(version, safe='')}"
        )
        status, body = await api_get(self.api, path, WATCH_S + 30.0, events)
        if status == 410:
            return ""
        if status != 200:
            raise _refusal(status, body)
        return state["version"]


class Discovery:
    """One watch per deployment of the current config; ``sync`` after every (re)load."""

    def __init__(self, client: PooledClient) -> None:
        self.client = client
        #: (host, port, api) of a deployment address → the task watching its Service.
        self.watches: dict[tuple[str, int, DiscoveryConfig], tuple[Target, asyncio.Task[None]]] = {}

    def sync(self, api: DiscoveryConfig | None, targets: Mapping[str, Target]) -> None:
        """Watch the Services behind ``targets`` (none without ``api``); stop the rest, whose
        requests go to their Service address again."""
        want: dict[tuple[str, int, DiscoveryConfig], tuple[Target, Service]] = {}
        if api is not None:
            for target in targets.values():
                service = service_of(target, api.namespace)
                if service is not None:
                    want[(target.host, target.port, api)] = (target, service)
        for key in [k for k in self.watches if k not in want]:
            target, task = self.watches.pop(key)
            task.cancel()
            self.client.set_endpoints(target, [])
        for key, (target, service) in want.items():
            if key not in self.watches:
                watch = _Watch(self.client, key[2], target, service)
                task = asyncio.get_running_loop().create_task(watch.run())
                self.watches[key] = (target, task)

    async def aclose(self) -> None:
        tasks = [task for _, task in self.watches.values()]
        self.watches.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
