"""Errors a scoring request can end in.

Every failure the server answers with is a ``ScoringError`` (an ``HttpError``: a status and
a message a person can act on); ``common.http_errors.error_body`` renders it.
"""

from __future__ import annotations

from scoring.common.http_errors import HttpError


class ScoringError(HttpError):
    """A scoring request failed with ``status``; ``message`` is safe to show the caller."""


class BadInput(ScoringError):
    """The body is not something the script, schema or model accepts (400)."""

    status = 400


class NotFound(ScoringError):
    status = 404


class MethodNotAllowed(ScoringError):
    status = 405


class PayloadTooLarge(ScoringError):
    """The body is over ``max_request_body_bytes`` (413)."""

    status = 413

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"request body is {size} bytes; the limit is {limit} bytes (max_request_body_bytes)",
            413,
        )


class UnsupportedMediaType(ScoringError):
    """The Content-Type is not one the scorer reads (415)."""

    status = 415

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"Content-Type {content_type!r} is not supported; send application/json "
            "(or text/plain for scripts that read the raw string)",
            415,
        )


class ScriptFailed(ScoringError):
    """``run()`` raised; the traceback is in the server log under the request id (500)."""

    status = 500

    def __init__(self, exc: BaseException, where: str = "run()") -> None:
        super().__init__(f"{where} raised {type(exc).__name__}; see server log", 500)


class TimedOut(ScoringError):
    """``run()`` took longer than ``request_timeout_ms`` (504)."""

    status = 504

    def __init__(self, timeout_ms: int, interrupted: bool) -> None:
        what = "it was interrupted" if interrupted else "it is still running in the background"
        super().__init__(
            f"run() did not finish within request_timeout_ms={timeout_ms}; {what}", 504
        )


class Overloaded(ScoringError):
    """More requests are waiting than the instance takes, for longer than allowed (429)."""

    status = 429

    def __init__(self, slots: int, max_wait_ms: int) -> None:
        super().__init__(
            f"too many requests: {slots} already running in this worker and this one waited "
            f"longer than max_queue_wait_ms={max_wait_ms}; retry later",
            429,
        )


class OverBytesInFlight(ScoringError):
    """Admitting this body would pass the worker's share of ``max_request_bytes_in_flight``:
    429 while others hold it, 413 when the body alone is over the share."""

    def __init__(self, size: int, held: int, share: int) -> None:
        if size > share:
            super().__init__(
                f"request body is {size} bytes; a worker holds at most {share} bytes of request "
                "bodies at once (max_request_bytes_in_flight, split over the workers)",
                413,
            )
        else:
            super().__init__(
                f"too many bytes in flight: {held} bytes of request bodies are held in this "
                f"worker and {size} more would pass its {share} (max_request_bytes_in_flight); "
                "retry later",
                429,
            )
