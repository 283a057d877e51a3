"""The router's listeners beyond the main one: HTTPS contexts swapped on reload, and the
metrics port.

TLS: the listening server keeps the ``SSLContext`` it was created with (uvloop gives no way
to replace it), so that context's SNI callback, run once per handshake (with or without SNI),
moves the new connection to the newest context. A rotated certificate Secret therefore takes
effect for new connections at the next reload, with no restart and no dropped connection.

Metrics: ``/metrics`` on its own plain-HTTP port, which the public Service does not expose,
so deployment names and traffic counts are not public. The main port answers 404 for it.
"""

from __future__ import annotations

import asyncio
import ssl

import httptools

from scoring.common.http_errors import error_body
from scoring.common.request_id import new_request_id
from scoring.router.dispatch import JSON_HEADER, Router
from scoring.router.protocol import encode_response

_PROM = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")


class TlsContexts:
    """The context a TLS listener was created with (``listener``) and the current one."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.listener = context
        self.current = context
        context.sni_callback = self._pick

    def swap(self, context: ssl.SSLContext) -> None:
        """Handshakes from now on use ``context`` (connections already open keep theirs)."""
        self.current = context

    def _pick(self, conn: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        current = self.current
        if current is not ctx:
            conn.context = current


class MetricsProtocol(asyncio.Protocol):
    """One connection to the metrics port: ``GET /metrics`` only, then close."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._answer(400, [JSON_HEADER], error_body("malformed HTTP request", new_request_id()))

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        path = self._url.partition(b"?")[0]
        if path == b"/metrics" and self._parser.get_method() == b"GET":
            self._answer(200, [_PROM], self.router.metrics.render(self.router))
        else:
            message = f"no route {path.decode('latin-1')}; this port serves GET /metrics only"
            self._answer(404, [JSON_HEADER], error_body(message, new_request_id()))

    def _answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = self._parser.get_method() == b"HEAD"  # no body after HEAD (HTTP)
        self.transport.write(encode_response(status, headers, body, keep_alive=False, head=head))
        self.transport.close()
