"""The router's HTTP/1.1 server side: one ``HttpProtocol`` per client connection.

uvloop + httptools, no framework: the hot path allocates little and runs no middleware
stack, because a Python proxy's speed is decided there (ENVIRONMENT.md). Requests on a
connection are answered in order (pipelining queues them); the headers the router acts on
are captured while parsing, the rest are forwarded.

Every limit (``RouterLimits``) is an integer comparison in a callback the parser calls
anyway. A request is refused as soon as its bytes say so: a head over ``max_header_bytes``
(431) before it is parsed, a bad credential (401), a too-large Content-Length (413) or a full
memory budget (503) when the headers are complete, before the body is read. A refusal
answers with ``connection: close``, then reads and drops what the client still sends (for
``LINGER_S``, up to the body it announced and may still be uploading) so that its unread
upload does not turn the close into a reset before it reads the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from http import HTTPStatus

import httptools

from scoring.common.http_errors import error_body
from scoring.common.logs import get_log
from scoring.common.request_id import request_id_bytes_from, request_id_from
from scoring.router.config import RouterLimits
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
    {
        b"authorization",
        REQUEST_ID_HEADER,
        PIN_HEADER,
        b"expect",
        b"content-length",
        CREDENTIAL_HEADER,
    }
)
#: Seconds a refused connection is still read (and dropped) before it is closed.
LINGER_S = 2.0
#: Bytes read and dropped after refusing a malformed head (no body to wait for).
LINGER_HEAD_BYTES = 64 * 1024
_HEAD_END = b"\r\n\r\n"
Response = tuple[int, Headers, bytes]
_monotonic = time.monotonic
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


def encode_response(
    status: int, headers: Headers, body: bytes, keep_alive: bool, head: bool = False
) -> bytes:
    """The response's bytes. ``head``: the answer to a HEAD request, i.e. the headers a GET
    would get (its content-length included) and no body, which HTTP forbids after HEAD and a
    kept-alive client would read as the start of its next response."""
    status_line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()
    lines = b"".join([b"%s: %s\r\n" % h for h in headers])
    tail = b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n"
    return b"%s%scontent-length: %d%s%s" % (
        status_line,
        lines,
        len(body),
        tail,
        b"" if head else body,
    )


class _Refuse(Exception):
    """Raised from a parser callback to stop parsing and answer ``response`` (then close)."""

    def __init__(self, response: Response) -> None:
        self.response = response


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, handle requests in order, keep-alive."""

    __slots__ = (
        "_auth",
        "_body",
        "_body_size",
        "_busy",
        "_continue",
        "_cur",
        "_discard",
        "_drop_left",
        "_final",
        "_head",
        "_head_fed",
        "_headers",
        "_held",
        "_in_head",
        "_keep",
        "_length",
        "_max_body",
        "_parser",
        "_path",
        "_pending",
        "_pin",
        "_query",
        "_queue",
        "_receiving",
        "_rid",
        "_since",
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
        self._path = self._query = b""
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._max_body = 0
        self._length = -1  # Content-Length, -1 when absent
        self._head_fed = 0  # bytes fed to the parser while the head was incomplete
        self._pending: bytearray | None = None  # the rest of an incomplete head, not yet fed
        self._held = 0  # body bytes received here and not yet answered (in router.budget)
        self._cur = 0  # body bytes of the request being answered
        self._queue: deque[Request] = deque()
        self._busy = False
        self._keep = True
        self._auth: bytes | None = None
        self._pin: bytes | None = None
        self._rid: bytes | None = None
        self._continue = False
        self._receiving = False
        self._in_head = False
        self._discard = False  # refused: what still arrives is dropped
        self._drop_left = 0  # ... up to this many bytes, then the connection closes
        self._final: bytes | None = None  # a refusal waiting for earlier pipelined answers
        self._head = False  # the request being answered is a HEAD: its answer has no body
        self.last_active = self._since = _monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limit = self.router.state.config.max_connections
        if len(self.conns) >= limit:
            self._refuse(
                self._error(503, f"the router has max_connections ({limit}) open; retry later")
            )
            return
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conns.discard(self)
        if self._held:
            self.router.budget.used -= self._held
            self._held = 0

    def data_received(self, data: bytes) -> None:
        if self._discard:
            self._drop_left -= len(data)
            if self._drop_left < 0:
                self.close()
            return
        pending = self._pending
        if pending is not None:
            # The rest of a head that did not come in one read: collected, then fed whole
            # once complete, so a head in many small packets costs linear work, and refused
            # unparsed once over the limit.
            start = max(len(pending) - 3, 0)
            pending += data
            end = pending.find(_HEAD_END, start)
            limit = self.router.state.config.max_header_bytes
            if self._head_fed + (len(pending) if end < 0 else end + 1) > limit:
                self._refuse(self._too_large_head(limit))
                return
            if end < 0:
                return
            self._pending = None
            data = bytes(pending[3:])  # one copy of one head
        elif not self._receiving:
            limit = self.router.state.config.max_header_bytes
            if len(data) > limit and data.find(_HEAD_END, 0, limit) < 0:
                self._refuse(self._too_large_head(limit))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(self._error(400, "protocol upgrades are not supported"))
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refuse):
                self._refuse(cause.response)
            else:
                self._refuse(self._error(400, f"malformed HTTP request ({exc})"))
            return
        if self._in_head:
            self._pending = bytearray(b"\0\0\0" + data[-3:])[-3:]  # 3 bytes: find's overlap
            self._head_fed += len(data)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.last_active = self._since = _monotonic()
        self._receiving = self._in_head = True
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = self._head_fed = 0
        self._length = -1
        self._auth = self._pin = self._rid = None
        self._continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url  # at most twice per request: a head is fed in at most two parts
        limit = self.router.state.config.max_url_bytes
        if len(self._url) > limit:
            raise _Refuse(self._error(414, f"request target is over max_url_bytes ({limit} bytes)"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked trailer: never merged into the headers (nor the credential)
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
            if name == b"content-length":
                self._length = int(value)  # digits only: the parser checked
                return  # the router frames what it forwards
            if name == CREDENTIAL_HEADER:
                return  # only the router's own credential reaches a deployment
            self._pin = value
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Everything is decided here, before any of the body is read.
        router = self.router
        cfg = router.state.config
        self._in_head = False
        self._since = _monotonic()
        path, _, self._query = self._url.partition(b"?")
        self._path = path
        refusal = router.check_head(path, self._auth, self._rid)
        if refusal is not None:
            raise _Refuse(refusal)
        self._max_body = limit = cfg.max_body_bytes
        length = self._length
        if length > 0:
            if length > limit:
                raise _Refuse(self._too_large_body(limit))
            budget = router.budget
            if budget.used + length > budget.limit:
                raise _Refuse(self._no_memory(budget.limit))
        if self._continue and length:  # -1: chunked; 0: no body to wait for
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        n = len(body)
        self._body_size += n
        self._held += n
        budget = self.router.budget
        budget.used += n
        if self._body_size > self._max_body:  # chunked: counted as it arrives
            raise _Refuse(self._too_large_body(self._max_body))
        if budget.used > budget.limit:
            raise _Refuse(self._no_memory(budget.limit))
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._receiving = False
        req = Request(
            self._parser.get_method(),
            self._path,
            self._query,
            self._headers,
            b"".join(self._body),
            self._parser.should_keep_alive(),
            self._auth,
            self._pin,
            self._rid,
            True,  # check_head passed
        )
        self._body = []
        if self._busy:
            self._queue.append(req)
            if len(self._queue) > 16 and self.transport is not None:
                self.transport.pause_reading()
            return
        self._start(req)

    def _start(self, req: Request) -> None:
        self._busy = True
        self._keep = req.keep_alive
        self._head = req.method == b"HEAD"
        self._cur = len(req.body)
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
        if self._cur:
            self._held -= self._cur
            self.router.budget.used -= self._cur
            self._cur = 0
        self.last_active = _monotonic()
        keep = self._keep and not self.router.draining
        data = encode_response(status, headers, body, keep, self._head)
        self.transport.write(data)  # type: ignore[union-attr]
        if not keep:
            self.close()
            return
        self._busy = False
        if self._queue:
            req = self._queue.popleft()
            if len(self._queue) <= 4 and self.transport is not None:
                self.transport.resume_reading()
            self._start(req)
        elif self._final is not None:
            self._write_final(self._final)

    # refusals
    def _error(self, status: int, message: str) -> Response:
        """A JSON error answer the router gives itself (counted in router_rejected_total)."""
        self.router.metrics.reject(status, reject_reason(status))
        rid = request_id_bytes_from(self._rid)
        headers: Headers = [JSON_HEADER, (REQUEST_ID_HEADER, rid)]
        return status, headers, error_body(message, rid.decode("latin-1"))

    def _too_large_head(self, limit: int) -> Response:
        return self._error(431, f"request line and headers are over max_header_bytes ({limit})")

    def _too_large_body(self, limit: int) -> Response:
        return self._error(413, f"request body is over max_body_bytes ({limit})")

    def _no_memory(self, limit: int) -> Response:
        return self._error(
            503, f"the router holds max_buffered_bytes ({limit}) of bodies already; retry later"
        )

    def _refuse(self, response: Response) -> None:
        """Answer the request being received with ``response`` and close; parse no more of it.

        A refusal once the headers are in drops up to ``max_body_bytes`` that the client may
        still be uploading (so it reads the answer); a broken head, ``LINGER_HEAD_BYTES``.
        """
        self._discard = True
        self._drop_left = (
            LINGER_HEAD_BYTES
            if self._in_head or self._pending is not None or not self._receiving
            else self.router.state.config.max_body_bytes
        )
        # A refusal of a complete head (401, 413, 503, a body timeout) answers a HEAD with
        # headers only. One decided while the head is still arriving (400, 414, 431, a header
        # timeout) carries its body: that request never was a complete HEAD, and whether its
        # method had been read would otherwise depend on where the packets happened to split.
        head = (
            self._receiving
            and not self._in_head
            and self._pending is None
            and self._parser.get_method() == b"HEAD"
        )
        self._receiving = self._in_head = False
        self._pending = None
        self._body = []
        data = encode_response(*response, keep_alive=False, head=head)
        if self._busy or self._queue:
            self._final = data  # after the answers to the requests before it
        else:
            self._write_final(data)

    def _write_final(self, data: bytes) -> None:
        transport = self.transport
        self._final = None
        if transport is None or self.closed:
            return
        self.closed = True
        transport.write(data)
        if transport.can_write_eof():
            transport.write_eof()  # the answer, then FIN; reading (and dropping) goes on
            asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        else:
            transport.close()

    def check_time(self, limits: RouterLimits, now: float) -> None:
        """Apply the time limits (called about once a second for every connection)."""
        if self._busy or self._queue or self._discard:
            return
        if self._receiving:
            part, name, ms = (
                ("headers", "header_timeout_ms", limits.header_timeout_ms)
                if self._in_head
                else ("body", "body_timeout_ms", limits.body_timeout_ms)
            )
            if now - self._since > ms / 1000:
                message = f"request {part} did not arrive within {name} ({ms})"
                self._refuse(self._error(408, message))
        elif now - self.last_active > limits.keep_alive_timeout_ms / 1000:
            self.close()  # idle keep-alive

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


def check_times(conns: set[HttpProtocol], limits: RouterLimits) -> None:
    """Header, body and keep-alive timeouts of every client connection (408 or close)."""
    now = _monotonic()
    for conn in list(conns):
        conn.check_time(limits, now)
