"""Reading a scoring request's body: the media types taken, the size limit, GET's query, and
the bytes a worker holds at once (``BytesInFlight``: memory safety, decided before the body is
read)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from scoring.server.errors import (
    BadInput,
    OverBytesInFlight,
    PayloadTooLarge,
    UnsupportedMediaType,
)

_TEXTUAL = (b"application/json", b"text/", b"application/x-www-form-urlencoded")


def check_content_type(value: bytes | None) -> None:
    """JSON, text, a form-encoded body (curl -d's default) or no header pass; others 415.

    Only for scripts with an input schema and MLflow models: a plain ``run(raw)`` script gets
    any body as text, as on Microsoft's server.
    """
    if value is None or value.startswith(b"application/json"):
        return
    media = value.split(b";", 1)[0].strip().lower()
    if media.startswith(_TEXTUAL) or media.endswith(b"+json") or media == b"":
        return
    raise UnsupportedMediaType(value.decode("latin-1"))


class BytesInFlight:
    """The request-body bytes one worker holds, bounded by its share of
    ``max_request_bytes_in_flight``: a script's ``json.loads`` makes ~25x its body, so the
    count of requests alone does not keep a pod under its memory limit; this does."""

    __slots__ = ("held", "share")

    def __init__(self, share: int) -> None:
        self.share = share
        self.held = 0

    def take(self, size: int) -> None:
        """Admit ``size`` more bytes, or ``OverBytesInFlight`` (429, or 413 if it never fits)."""
        if self.held + size > self.share:
            raise OverBytesInFlight(size, self.held, self.share)
        self.held += size


async def read_body(
    receive: Callable[[], Awaitable[Mapping[str, Any]]],
    length: bytes | None,
    limit: int,
    budget: BytesInFlight,
) -> bytes:
    """The whole body, taken from ``budget`` (the caller gives ``len(body)`` back when done).

    ``PayloadTooLarge`` as soon as it is known to exceed ``limit``; ``OverBytesInFlight``
    before reading a body with a ``Content-Length``, after reading a chunked one.
    """
    if length is None:
        body = await _read(receive, limit)
        budget.take(len(body))
        return body
    try:
        size = int(length)
    except ValueError as exc:
        raise BadInput(f"Content-Length {length.decode('latin-1')!r} is not a number") from exc
    if size > limit:
        raise PayloadTooLarge(size, limit)
    budget.take(size)
    try:
        return await _read(receive, limit)
    except BaseException:
        budget.held -= size
        raise


async def _read(receive: Callable[[], Awaitable[Mapping[str, Any]]], limit: int) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    total = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadInput("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(total, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def nesting_depth(text: str, stop: int) -> int:
    """How deeply ``[``/``{`` nest in ``text`` outside strings, counting up to ``stop``.

    Only called after ``run()`` raised ``RecursionError``, to tell a body nested too deeply
    (400) from a script that recursed by itself (500).
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest >= stop:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def query_args(query_string: bytes) -> dict[str, Any]:
    """``GET /score?a=1&b=[1,2]&c=x`` as the body Microsoft's server makes of it:
    ``{"a": 1, "b": [1, 2], "c": "x"}`` (each value parsed as JSON where it is JSON, a string
    otherwise; a repeated name becomes a list)."""
    found: dict[str, list[Any]] = {}
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        found.setdefault(key, []).append(parsed)
    return {k: v[0] if len(v) == 1 else v for k, v in found.items()}
