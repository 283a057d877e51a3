"""uvicorn, adapted: each response leaves in one write, and a drained worker exits 0.

``OneWriteProtocol`` is uvicorn's httptools protocol whose responses go out in one
``write`` (one syscall, one segment) instead of two; ``DrainingServer`` is uvicorn's
``Server`` without re-raising the stop signal once it has drained.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


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
    """uvicorn's httptools protocol, each request's response written with one syscall."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and cycle is not None:  # a new request (not an upgrade)
            writer = _OneWrite(self.transport, cycle)
            cycle.transport = writer  # type: ignore[assignment]
            cycle.on_response = writer.complete
