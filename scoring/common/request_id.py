"""Request ids: echo a caller's ``x-request-id`` when it is sane, otherwise mint one.

A caller's id is echoed when it is 1-100 printable ASCII characters (Azure's limit; spaces,
braces, ``/``, ``+``, ``=`` included, as Microsoft's server takes them) other than ``"`` and
``\\``, so it can go into JSON log lines unescaped. Anything else gets a new id (Microsoft's
server answers 431 for an id over 100 characters; a tracing header is no reason to fail a
request here). Minted ids are 32 hex digits (like a UUID
without dashes) from a Mersenne Twister seeded by the OS: ids need uniqueness, not secrecy,
and ``os.urandom`` costs a getrandom(2) per request (seen with strace on the router's hot
path). Forked workers reseed, so no two processes mint the same sequence.
"""

from __future__ import annotations

import os
import random
import re

_SANE = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]{1,100}")
_fullmatch = _SANE.fullmatch
_rng = random.Random()  # seeded from os.urandom
os.register_at_fork(after_in_child=_rng.seed)
_getrandbits = _rng.getrandbits


def new_request_id_bytes() -> bytes:
    """A fresh id: 32 lowercase hex digits, as the router writes it into headers."""
    return b"%032x" % _getrandbits(128)


def new_request_id() -> str:
    """A fresh id: 32 lowercase hex digits."""
    return f"{_getrandbits(128):032x}"


def request_id_from(value: bytes | None) -> str:
    """The id to use for a request whose ``x-request-id`` header is ``value``."""
    if value is not None and _fullmatch(value):
        return value.decode("ascii")
    return new_request_id()


def client_request_id_from(value: bytes | None) -> bytes | None:
    """``x-ms-client-request-id`` to echo (Azure echoes it), or None when absent or unsafe."""
    if value is not None and _fullmatch(value):
        return value
    return None


def request_id_bytes_from(value: bytes | None) -> bytes:
    """``request_id_from`` as the router writes it into headers (bytes)."""
    if value is not None:
        return request_id_from(value).encode()
    return new_request_id_bytes()
