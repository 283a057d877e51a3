"""Request size and time limits, and answers that are always JSON (issue #12, findings 1, 7).

- request line + headers over ``max_request_header_bytes`` → 431 as the bytes arrive: the
  server stops reading a 10 MB header after its limit (the client cannot send it all);
- a connection that has not sent a whole request within ``request_read_timeout_ms`` → 408
  and closed (idle from connecting, partial headers, partial body), while legitimate requests
  on other connections are answered;
- a connection past ``max_connections`` → 503 and closed at once;
- NaN / Infinity in a ``run()`` result → ``null`` (valid JSON), deep nesting → 400 (in the
  body) or 500 (in the result), parser errors → the JSON error shape.
"""

from __future__ import annotations

import json
import select
import socket
from pathlib import Path

import httpx
import pytest

from tests.support.attacks import is_error, write_attacker
from tests.support.router import read_response, wait_for
from tests.support.serving import serve

pytestmark = [pytest.mark.server, pytest.mark.hardening]


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _error(sock: socket.socket) -> tuple[int, dict, bytes]:
    """The server's answer on ``sock`` and what follows it (b'' once the server closed)."""
    status, _, body = read_response(sock, bytearray())
    try:
        rest = sock.recv(1)
    except ConnectionResetError:
        rest = b""
    return status, json.loads(body), rest


def _is(body: dict, message: str) -> bool:
    return body["error"] == message and isinstance(body["request_id"], str)


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_attacker(tmp_path_factory.mktemp("attacker"))


def test_oversized_headers_are_refused_after_the_limit(attacker: Path) -> None:
    with serve(attacker, None, "--max-request-header-bytes", "65536") as proc:
        sock = _connect(proc.url)
        sock.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent, chunk = 0, b"a" * 16384
        while sent < 10_000_000:  # 10 MB of one header value, unless the server answers first
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, body, rest = _error(sock)
        assert status == 431
        assert _is(body, "request line and headers are over 65536 bytes (max_request_header_bytes)")
        assert rest == b""  # closed
        assert sent < 10_000_000  # answered and closed before the header was all sent
        sock.close()
        # refused as the bytes arrive: 100 KB of a header that never ends gets its answer
        sock = _connect(proc.url)
        sock.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000)
        status, body, _ = _error(sock)
        assert status == 431
        assert _is(body, "request line and headers are over 65536 bytes (max_request_header_bytes)")
        sock.close()
        # a long URL counts too; a request under the limit is served
        sock = _connect(proc.url)
        sock.sendall(b"GET /score?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _error(sock)[0] == 431
        sock.close()
        ok = httpx.post(proc.url + "/score", json={}, headers={"x-fine": "a" * 60_000})
        assert ok.status_code == 200


def test_slow_requests_time_out_with_408_and_others_are_served(attacker: Path) -> None:
    with serve(attacker, None, "--request-read-timeout-ms", "1000") as proc:
        idle = _connect(proc.url)  # sends nothing
        partial_headers = _connect(proc.url)
        partial_headers.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\n")
        partial_body = _connect(proc.url)
        partial_body.sendall(
            b"POST /score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"a": '
        )
        slow = [_connect(proc.url) for _ in range(20)]
        for sock in slow:
            sock.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\n")
        served = [httpx.post(proc.url + "/score", json={}, timeout=10) for _ in range(20)]
        assert [r.status_code for r in served] == [200] * 20
        for sock in [idle, partial_headers, partial_body, *slow]:
            status, body, rest = _error(sock)
            assert status == 408
            assert _is(
                body, "the request was not received within 1000 ms (request_read_timeout_ms)"
            )
            assert rest == b""
            sock.close()
        # a keep-alive connection's later request has the same clock, from its first byte
        sock = _connect(proc.url)
        request = b"POST /score HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
        buf = bytearray()
        for _ in range(3):
            sock.sendall(request)
            assert read_response(sock, buf)[0] == 200
        sock.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\n")
        assert _error(sock)[0] == 408
        sock.close()


def test_connections_past_the_limit_get_503_and_are_closed(attacker: Path) -> None:
    with serve(attacker, None, "--max-connections", "4") as proc:  # the probe's is closed
        held = [_connect(proc.url) for _ in range(4)]
        held[0].sendall(b"POST /score HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        assert read_response(held[0], bytearray())[0] == 200  # the four are being served
        extra = _connect(proc.url)
        status, body, rest = _error(extra)
        assert status == 503
        assert _is(
            body,
            "this worker has 4 connections open already (max_connections, split over the "
            "workers); retry later",
        )
        assert rest == b""
        extra.close()
        for sock in held:
            sock.close()
        wait_for(  # once the server has seen the closes
            lambda: httpx.post(proc.url + "/score", json={}, timeout=10).status_code == 200,
            "a free connection",
        )
        ok = [httpx.post(proc.url + "/score", json={}, timeout=10) for _ in range(5)]
        assert [r.status_code for r in ok] == [200] * 5


def test_parser_errors_are_json(attacker: Path) -> None:
    with serve(attacker, None) as proc:
        sock = _connect(proc.url)
        sock.sendall(b"GARBAGE / NOT-HTTP\r\n\r\n")
        status, body, _ = _error(sock)
        assert status == 400
        assert _is(body, "malformed HTTP request: Invalid HTTP request received (parser error)")
        sock.close()


def test_nan_and_infinity_are_sent_as_null(attacker: Path) -> None:
    with serve(attacker, None) as proc:
        resp = httpx.post(proc.url + "/score", json={"attack": "nan"})
        assert resp.status_code == 200
        assert "NaN" not in resp.text and "Infinity" not in resp.text
        assert json.loads(resp.text) == {"a": None, "b": [None, None, 1.5], "c": [None, 2.0]}


def test_deep_nesting_is_400_in_the_body_and_500_in_the_result(attacker: Path) -> None:
    with serve(attacker, None) as proc:
        deep = "[" * 100_000 + "]" * 100_000
        resp = httpx.post(
            proc.url + "/score", content=deep, headers={"content-type": "application/json"}
        )
        assert is_error(resp, 400, "request body is nested too deeply (RecursionError in run())")
        out = httpx.post(proc.url + "/score", json={"attack": "deep"})
        assert is_error(
            out, 500, "run() returned a value nested too deeply to encode as JSON; see server log"
        )
        assert httpx.post(proc.url + "/score", json={}).status_code == 200
