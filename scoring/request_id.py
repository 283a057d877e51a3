"""Request ids: echo a caller's ``x-request-id`` when it is sane, otherwise mint one.

A caller's id is echoed only if it is 1-128 characters of ``[A-Za-z0-9._:-]``, so it can
go into log lines and file names unescaped. Minted ids are 32 hex digits (like a UUID
without dashes), from ``os.urandom``: cheaper than ``uuid.uuid4()`` on the hot path.
"""

from __future__ import annotations

import os
import re

_SANE = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_fullmatch = _SANE.fullmatch
_urandom = os.urandom

HEADER = b"x-request-id"


def new_request_id() -> str:
    """A fresh id: 32 lowercase hex digits."""
    return _urandom(16).hex()


def request_id_from(value: bytes | None) -> str:
    """The id to use for a request whose ``x-request-id`` header is ``value``."""
    if value is not None and _fullmatch(value):
        return value.decode("ascii")
    return _urandom(16).hex()
