"""uvicorn, adapted: each response leaves in one write, requests are bounded in size and
time, and a drained worker exits 0.

``OneWriteProtocol`` is uvicorn's httptools protocol whose responses go out in one
``write`` (one syscall, one segment) instead of two, and which enforces what uvicorn does not:
request line + headers over ``max_header_bytes`` answer 431 as the bytes arrive (uvicorn's
parser keeps accumulating them, at a cost that grows faster than their size), a request not
wholly received within ``read_timeout_s`` (counted from connecting, for a first request, or
from a later request's first byte) answers 408 and the connection closes (uvicorn's
keep-alive timeout only covers the wait *between* requests), and a request the parser rejects
gets the JSON error body instead of uvicorn's plain text; a connection past
``max_connections`` gets 503 and is closed at once. ``protocol()`` makes the subclass
with a worker's settings. ``DrainingServer`` is uvicorn's ``Server`` without re-raising the
stop signal once it has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from scoring.common.http_errors import error_body
from scoring.common.request_id import new_request_id


class DrainingServer(uvicorn.Server):
    """uvicorn's Server without re-raising the stop signal at the end (exit 0 when drained)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        sigs = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class _OneWrite:
    """A response's transport: holds the status line and headers until the body comes, so a
    response leaves in one ``write`` (one syscall, one segment) instead of uvicorn's two.

    Writes before the response starts (``100 Continue``) and after the first body part pass
    through; whatever is held goes out when the response completes (a HEAD answer has no
    body write) or the connection closes. The references back to the cycle and the protocol
    are dropped then, so a finished request leaves no reference cycle for the garbage
    collector (refcounting frees it, as with uvicorn's own transport).
    """

    __slots__ = ("cycle", "done", "held", "on_response", "transport")

    def __init__(self, transport: Any, cycle: RequestResponseCycle) -> None:
        self.transport = transport
        self.cycle: RequestResponseCycle | None = cycle
        self.held: bytes | None = None
        self.done = False
        self.on_response: Callable[[], None] | None = cycle.on_response

    def write(self, data: bytes) -> None:
        if self.done or not self.cycle.response_started:  # type: ignore[union-attr]
            self.transport.write(data)
        elif self.held is None:
            self.held = data
        else:
            self.done = True
            self.transport.write(self.held + data)
            self.held = None

    def flush(self) -> None:
        self.done = True
        self.cycle = None
        if self.held is not None:
            self.transport.write(self.held)
            self.held = None

    def complete(self) -> None:
        """The cycle's ``on_response``: the response is whole."""
        self.flush()
        on_response, self.on_response = self.on_response, None
        if on_response is not None:
            on_response()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self.transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each request's response written with one syscall, and
    each request's headers and time to arrive bounded."""

    max_header_bytes = 64 * 1024
    read_timeout_s = 30.0
    max_connections = 2048
    _header_bytes: int | None = 0  # bytes of the request line + headers so far; None: all in
    # The read clock: one timer per connection, not per request (a timer costs ~1 us to arm
    # and cancel). ``_reading_since`` is when the request being received began (None between
    # requests); the timer, when it fires, checks it and re-arms for that request's deadline.
    _read_timer: asyncio.TimerHandle | None = None
    _reading_since: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:  # this one is in the set already
            self._refuse(
                503,
                f"this worker has {self.max_connections} connections open already "
                "(max_connections, split over the workers); retry later",
            )
            return
        self._reading_since = self.loop.time()  # the first request's clock starts now
        self._read_timer = self.loop.call_later(self.read_timeout_s, self._check_read)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        counted = self._header_bytes
        if counted is not None:
            counted += len(data)
            if counted > self.max_header_bytes:  # rare: look where the headers end
                end = data.find(b"\r\n\r\n")
                if end < 0 or counted - len(data) + end + 4 > self.max_header_bytes:
                    self._refuse_headers()
                    return
            self._header_bytes = counted
        super().data_received(data)
        # Headers still incomplete after the parser took this read (their end split across
        # reads): nothing past the limit is parsed again, so the cost is linear in the limit.
        if self._header_bytes is not None and self._header_bytes > self.max_header_bytes:
            self._refuse_headers()

    def _refuse_headers(self) -> None:
        self._refuse(
            431,
            f"request line and headers are over {self.max_header_bytes} bytes "
            "(max_request_header_bytes)",
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._reading_since is None:  # a later request on this connection: its clock starts
            self._reading_since = self.loop.time()
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(self.read_timeout_s, self._check_read)

    def on_headers_complete(self) -> None:
        self._header_bytes = None
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and cycle is not None:  # a new request (not an upgrade)
            writer = _OneWrite(self.transport, cycle)
            cycle.transport = writer  # type: ignore[assignment]
            cycle.on_response = writer.complete

    def on_message_complete(self) -> None:
        self._header_bytes = 0
        self._reading_since = None
        super().on_message_complete()

    def _check_read(self) -> None:
        self._read_timer = None
        since = self._reading_since
        if since is None:  # between requests: the next one arms the clock again
            return
        left = since + self.read_timeout_s - self.loop.time()
        if left > 0:  # a later request, begun after this timer was armed
            self._read_timer = self.loop.call_later(left, self._check_read)
            return
        self._refuse(
            408,
            f"the request was not received within {self.read_timeout_s * 1000:.0f} ms "
            "(request_read_timeout_ms)",
        )

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with the JSON error (unless a response is under way) and close."""
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            if cycle is not None:  # the app reads a disconnect; its own answer is dropped
                cycle.disconnected = True
                cycle.message_event.set()
            transport.write(_error_response(status, message))
        transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser rejects, as our JSON error."""
        self.transport.write(
            _error_response(400, f"malformed HTTP request: {msg.rstrip('.')} (parser error)")
        )
        self.transport.close()


def _error_response(status: int, message: str) -> bytes:
    body = error_body(message, new_request_id())
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def protocol(
    max_header_bytes: int, read_timeout_ms: int, max_connections: int
) -> type[OneWriteProtocol]:
    """``OneWriteProtocol`` with a worker's limits (uvicorn instantiates the class itself)."""
    return type(
        "OneWriteProtocol",
        (OneWriteProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "read_timeout_s": read_timeout_ms / 1000.0,
            "max_connections": max_connections,
        },
    )
