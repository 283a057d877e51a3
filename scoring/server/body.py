"""Reading a scoring request's body: the media types taken and the size limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from scoring.server.errors import BadInput, PayloadTooLarge, UnsupportedMediaType

_TEXTUAL = (b"application/json", b"text/", b"application/x-www-form-urlencoded")


def check_content_type(value: bytes | None) -> None:
    """JSON, text, a form-encoded body (curl -d's default) or no header pass; others 415."""
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
