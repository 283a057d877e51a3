"""Reading a scoring request's body: the media types taken, the size limit, GET's query."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from scoring.server.errors import BadInput, PayloadTooLarge, UnsupportedMediaType

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


async def read_body(
    receive: Callable[[], Awaitable[Mapping[str, Any]]], length: bytes | None, limit: int
) -> bytes:
    """The whole body, or ``PayloadTooLarge`` as soon as it is known to exceed ``limit``."""
    if length is not None:
        try:
            size = int(length)
        except ValueError as exc:
            raise BadInput(f"Content-Length {length.decode('latin-1')!r} is not a number") from exc
        if size > limit:
            raise PayloadTooLarge(size, limit)
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
