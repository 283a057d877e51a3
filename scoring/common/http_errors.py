"""The error base class both programs answer with, and the one JSON error body.

An ``HttpError`` carries an HTTP status and a message a person can act on (what was wrong,
the bad value, what to do). Its body is always ``{"error": m, "message": m, "request_id": id}``:
``message`` is the field Azure ML's clients read (Microsoft's server answers
``{"message": ...}``), ``error`` the one ours always had. Tracebacks go to the log, never
into a body.
"""

from __future__ import annotations

import json


class HttpError(Exception):
    """A request failed with ``status``; ``message`` is safe to show the caller."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


def error_body(message: str, request_id: str) -> bytes:
    """The JSON body of every error response."""
    return json.dumps({"error": message, "message": message, "request_id": request_id}).encode()
