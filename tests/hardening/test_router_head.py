"""HEAD requests get headers and no body (HTTP), so a kept-alive connection stays in step.

The router routes no HEAD (``/score`` is POST, the rest GET), so it answers every HEAD itself
(405, 404, 401, ...) and never forwards one: its upstream client never parses a HEAD answer.
A body after a HEAD answer would be read by the client as the start of its next response.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from mlendpoints._procs import Proc
from tests.support.router import AUTH1, KEY1, cfg, read_response, router, upstream

pytestmark = [pytest.mark.router, pytest.mark.hardening]


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with upstream("blue") as blue:
        config = cfg({"blue": blue.url}, {"blue": 100})
        with router(tmp_path_factory.mktemp("head"), config) as (proc, _):
            yield proc


def head_answer(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str]]:
    """One answer to a HEAD: status and headers; what follows them stays in ``buf``."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    del buf[:]
    buf += rest
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers


def test_head_then_get_on_one_connection_gives_two_well_formed_answers(front: Proc) -> None:
    """``HEAD /`` (405: not a route) has the content-length of its JSON error but no body; the
    ``GET /`` and ``POST /score`` after it on the same connection are answered intact."""
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as sock:
        buf = bytearray()
        sock.sendall(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")
        status, headers = head_answer(sock, buf)
        assert status == 405
        assert int(headers["content-length"]) > 0  # what a body would have been
        assert "connection" not in headers  # kept alive
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_response(sock, buf)[::2] == (200, b"Healthy")  # no leftover body first
        sock.sendall(
            b"POST /score HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
            + KEY1.encode()
            + b"\r\ncontent-length: 2\r\n\r\n{}"
        )
        assert read_response(sock, buf)[0] == 200
        assert not buf


def test_pipelined_head_answers_keep_their_order_and_carry_no_body(front: Proc) -> None:
    """``HEAD /score`` with a key (405 from the routing) and ``HEAD /nowhere`` (404), pipelined
    with a GET in one write: three answers in order, only the GET's with a body."""
    auth = f"authorization: {AUTH1['Authorization']}\r\n".encode()
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as sock:
        buf = bytearray()
        sock.sendall(
            b"HEAD /score HTTP/1.1\r\nhost: x\r\n" + auth + b"\r\n"
            b"HEAD /nowhere HTTP/1.1\r\nhost: x\r\n" + auth + b"\r\n"
            b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        assert head_answer(sock, buf)[0] == 405
        assert head_answer(sock, buf)[0] == 404
        assert read_response(sock, buf)[::2] == (200, b"Ready")
        assert not buf


def test_a_refused_head_gets_headers_only_then_the_connection_closes(front: Proc) -> None:
    """A refusal decided while parsing (401: no key on ``HEAD /score``) has no body either."""
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as sock:
        buf = bytearray()
        sock.sendall(b"HEAD /score HTTP/1.1\r\nhost: x\r\n\r\n")
        status, headers = head_answer(sock, buf)
        assert (status, headers["connection"]) == (401, "close")
        assert int(headers["content-length"]) > 0
        while chunk := sock.recv(65536):
            buf += chunk
        assert not buf  # EOF and nothing after the headers


def test_other_methods_answers_keep_their_body(front: Proc) -> None:
    """The HEAD rule does not touch other methods' refusals: a 401 to a POST has its body."""
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as sock:
        sock.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        status, headers, body = read_response(sock, bytearray())
        assert status == 401 and len(body) == int(headers["content-length"]) > 0
