"""The router's HTTP/1.1 server side: one ``HttpProtocol`` per client connection.

uvloop + httptools, no framework: the hot path allocates little and runs no middleware
stack, because a Python proxy's speed is decided there (ENVIRONMENT.md). Requests on a
connection are answered in order (pipelining queues them); the three headers the router
acts on are captured while parsing, the rest are forwarded.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from http import HTTPStatus

import httptools

from scoring.common.http_errors import error_body
from scoring.common.logs import get_log
from scoring.common.request_id import new_request_id, request_id_from
from scoring.router.dispatch import (
    CREDENTIAL_HEADER,
    JSON_HEADER,
    PIN_HEADER,
    REQUEST_ID_HEADER,
    Request,
    Router,
    reject_reason,
)
from scoring.router.upstream import Headers

_CAPTURED = frozenset(
    {b"authorization", REQUEST_ID_HEADER, PIN_HEADER, b"expect", CREDENTIAL_HEADER}
)
_monotonic = time.monotonic
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


def encode_response(status: int, headers: Headers, body: bytes, keep_alive: bool) -> bytes:
    head = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()
    lines = b"".join([b"%s: %s\r\n" % h for h in headers])
    tail = b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n"
    return b"%s%scontent-length: %d%s%s" % (head, lines, len(body), tail, body)


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, handle requests in order, keep-alive."""

    __slots__ = (
        "_auth",
        "_body",
        "_body_size",
        "_busy",
        "_continue",
        "_headers",
        "_keep",
        "_parser",
        "_pin",
        "_queue",
        "_receiving",
        "_rid",
        "_too_large",
        "_url",
        "closed",
        "conns",
        "last_active",
        "router",
        "transport",
    )

    def __init__(self, router: Router, conns: set[HttpProtocol]) -> None:
        self.router = router
        self.conns = conns
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._too_large = False
        self._queue: deque[Request] = deque()
        self._busy = False
        self._keep = True
        self._auth: bytes | None = None
        self._pin: bytes | None = None
        self._rid: bytes | None = None
        self._continue = False
        self._receiving = False
        self.last_active = _monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_and_close(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reply_and_close(400, f"malformed HTTP request ({exc})")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.last_active = _monotonic()
        self._receiving = True
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0
        self._too_large = False
        self._auth = self._pin = self._rid = None
        self._continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_headers_complete(self) -> None:
        if self._continue:
            self._continue = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _CAPTURED:
            if name == b"authorization":
                self._auth = value
                return  # never forwarded
            if name == REQUEST_ID_HEADER:
                self._rid = value
                return  # forwarded as the router's (checked) id
            if name == b"expect":
                # Answered here (below); a deployment's "100 Continue" must not reach the client.
                if value.lower() == b"100-continue" and self.transport is not None:
                    self._continue = True
                return
            if name == CREDENTIAL_HEADER:
                return  # only the router's own credential reaches a deployment
            self._pin = value
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.router.state.config.max_body_bytes:
            self._too_large = True
            self._body = []
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._receiving = False
        if self._too_large:
            limit = self.router.state.config.max_body_bytes
            self._reply_and_close(413, f"request body is over max_body_bytes ({limit})")
            return
        path, _, query = self._url.partition(b"?")
        req = Request(
            self._parser.get_method(),
            path,
            query,
            self._headers,
            b"".join(self._body),
            self._parser.should_keep_alive(),
            self._auth,
            self._pin,
            self._rid,
        )
        if self._busy:
            self._queue.append(req)
            if len(self._queue) > 16 and self.transport is not None:
                self.transport.pause_reading()
            return
        self._start(req)

    def _start(self, req: Request) -> None:
        self._busy = True
        self._keep = req.keep_alive
        try:
            self.router.handle(req, self._respond)
        except Exception as exc:  # a bug: log it, answer 500, keep serving
            get_log().event(
                "error",
                f"internal error on {req.method.decode()} {req.path.decode('latin-1')}: "
                f"{type(exc).__name__}: {exc}",
                event="server_error",
            )
            rid = request_id_from(req.request_id)
            self._respond(500, [JSON_HEADER], error_body("internal router error", rid))

    def _respond(self, status: int, headers: Headers, body: bytes) -> None:
        if self.closed:
            return
        self.last_active = _monotonic()
        keep = self._keep and not self.router.draining
        self.transport.write(encode_response(status, headers, body, keep))  # type: ignore[union-attr]
        if not keep:
            self.close()
            return
        self._busy = False
        if self._queue:
            req = self._queue.popleft()
            if len(self._queue) <= 4 and self.transport is not None:
                self.transport.resume_reading()
            self._start(req)

    def _reply_and_close(self, status: int, message: str) -> None:
        if self.transport is None or self.closed:
            return
        self.router.metrics.reject(status, reject_reason(status))
        body = error_body(message, new_request_id())
        self.transport.write(encode_response(status, [JSON_HEADER], body, keep_alive=False))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def idle(self) -> bool:
        """No request being answered, queued, or half received: safe to close when draining."""
        return not self._busy and not self._receiving and not self._queue

    @property
    def busy(self) -> bool:
        """A request is being answered or queued (a half-received one does not count)."""
        return self._busy or bool(self._queue)
