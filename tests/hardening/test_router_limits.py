"""The router's front door under attack: every size, count and time limit, as a client sees it.

Real router processes (``python -m scoring router``) in front of real upstreams on loopback,
driven over raw sockets so a test can send what no HTTP library would; plus one in-process
``HttpProtocol`` with a counting parser, to measure the parsing work a huge header costs.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlendpoints._procs import Proc
from scoring.router.config import RouterConfig, Secrets
from scoring.router.dispatch import Router, RouterState
from scoring.router.protocol import HttpProtocol
from tests.support.router import (
    AUTH1,
    KEY1,
    StubTransport,
    cfg,
    metric,
    read_response,
    router,
    upstream,
)

pytestmark = [pytest.mark.router, pytest.mark.hardening]

MB = 1024 * 1024
AUTH_LINE = f"Authorization: Bearer {KEY1}\r\n".encode()


@pytest.fixture(scope="module")
def blue() -> Iterator[Proc]:
    with upstream("blue") as p:
        yield p


@pytest.fixture(scope="module")
def front(blue: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A router with the default limits, except short time limits so tests stay short."""
    config = cfg({"blue": blue.url}, {"blue": 100}, header_timeout_ms=1000, body_timeout_ms=1000)
    with router(tmp_path_factory.mktemp("front"), config) as (proc, _):
        yield proc


def connect(proc: Proc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proc.port), timeout=20)


def answer(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    status, headers, body = read_response(sock, bytearray())
    return status, headers, json.loads(body)


def closed(sock: socket.socket) -> bool:
    """The router closed the connection (EOF or reset) after its answer."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


# -- header size: refused as the bytes arrive, with linear work ---------------------------------


class _CountingParser:
    """The real httptools parser, counting the bytes it is given (the parsing work)."""

    def __init__(self, parser: object) -> None:
        self.parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.parser.feed_data(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.parser, name)


def _protocol() -> tuple[HttpProtocol, _CountingParser, StubTransport]:
    config = RouterConfig.model_validate(cfg({"blue": "http://127.0.0.1:9"}, {"blue": 100}))
    router_ = Router(RouterState.build(config, Secrets(KEY1.encode(), None, None)))
    proto = HttpProtocol(router_, set())
    counting = _CountingParser(proto._parser)
    proto._parser = counting  # type: ignore[assignment]
    transport = StubTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, counting, transport


@pytest.mark.parametrize(
    "packet", [16 * 1024, 1], ids=["80 MB in 16 KiB packets", "200 KB in 1-byte packets"]
)
def test_a_huge_header_costs_at_most_the_limit_of_parsing_and_gets_431(packet: int) -> None:
    proto, parser, transport = _protocol()
    total = 80 * MB if packet > 1 else 200_000
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nX-Big: "
    proto.data_received(head)
    sent = len(head)
    chunk = b"a" * packet
    while sent < total and not transport.closed:
        proto.data_received(chunk)
        sent += packet
    limit = RouterConfig.model_fields["max_header_bytes"].default
    assert parser.fed <= limit + 16 * 1024  # never more than the limit (+ the first read)
    assert transport.closed and sent < 2 * limit + packet  # refused as soon as it was over
    status_line, _, rest = bytes(transport.out).partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == f"request line and headers are over max_header_bytes ({limit})"


def test_an_80_mb_header_over_a_socket_is_refused_early(front: Proc) -> None:
    sock = connect(front)
    sent = 0
    got: list[tuple[int, dict[str, str], dict]] = []
    reader = threading.Thread(target=lambda: got.append(answer(sock)))
    reader.start()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
    chunk = b"a" * 65536
    try:
        while sent < 80 * MB:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # the router closed: the rest was never read
        pass
    reader.join(20)
    sock.close()
    assert sent < 16 * MB, f"the router read {sent} bytes of one header"
    [(status, headers, body)] = got
    assert (status, headers["connection"]) == (431, "close")
    assert body["error"] == "request line and headers are over max_header_bytes (65536)"


def test_a_long_url_gets_414(front: Proc) -> None:
    sock = connect(front)
    sock.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = answer(sock)
    assert (status, headers["connection"]) == (414, "close")
    assert body["error"] == "request target is over max_url_bytes (8192 bytes)"
    assert closed(sock)


def test_headers_that_never_end_get_408(front: Proc) -> None:
    sock = connect(front)
    sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")
    status, _, body = answer(sock)
    assert status == 408
    assert body["error"] == "request headers did not arrive within header_timeout_ms (1000)"
    assert closed(sock)


def test_parser_errors_come_back_as_json(front: Proc) -> None:
    sock = connect(front)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    status, headers, body = answer(sock)
    assert (status, headers["content-type"]) == (400, "application/json")
    assert body["error"].startswith("malformed HTTP request (")
    assert set(body) >= {"error", "request_id"}


# -- bodies: authentication and size are decided on the headers ---------------------------------


def test_an_unauthenticated_request_never_has_its_body_read(front: Proc) -> None:
    """The 401 comes back while the announced 10 MB body has not been sent at all."""
    sock = connect(front)
    sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
    status, headers, body = answer(sock)
    assert (status, headers["connection"]) == (401, "close")
    assert body["error"].startswith("missing Authorization header")
    sock.close()


def test_a_body_over_the_limit_gets_413_before_it_is_sent(front: Proc) -> None:
    sock = connect(front)
    sock.sendall(
        b"POST /score HTTP/1.1\r\nHost: x\r\n" + AUTH_LINE + b"Content-Length: 11000000\r\n\r\n"
    )
    status, headers, body = answer(sock)
    assert (status, headers["connection"]) == (413, "close")
    assert body["error"] == "request body is over max_body_bytes (10485760)"
    sock.close()


def test_a_chunked_body_is_refused_as_it_passes_the_limit(blue: Proc, tmp_path: Path) -> None:
    config = cfg({"blue": blue.url}, {"blue": 100}, max_body_bytes=1000)
    with router(tmp_path, config) as (proc, _):
        sock = connect(proc)
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\n"
            + AUTH_LINE
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(3):  # 1800 bytes, no final chunk: the 413 cannot wait for the end
            sock.sendall(b"258\r\n" + b"a" * 600 + b"\r\n")
        status, _, body = answer(sock)
        assert status == 413 and body["error"] == "request body is over max_body_bytes (1000)"
        sock.close()


def test_a_trailer_never_overrides_the_authorization_header(front: Proc) -> None:
    def send(header_key: str, trailer_key: str) -> int:
        sock = connect(front)
        sock.sendall(
            f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {header_key}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
            f"Authorization: Bearer {trailer_key}\r\n\r\n".encode()
        )
        status = read_response(sock, bytearray())[0]
        sock.close()
        return status

    assert send(KEY1, "wrong-key") == 200
    assert send("wrong-key", KEY1) == 401


def test_router_memory_stays_flat_under_100_unauthenticated_10_mb_uploads(
    blue: Proc, tmp_path: Path
) -> None:
    config = cfg({"blue": blue.url}, {"blue": 100})
    with router(tmp_path, config) as (proc, _):
        pid = proc.popen.pid
        before = rss_kb(pid)
        body = b"x" * (10 * MB)
        statuses: list[int] = []
        lock = threading.Lock()

        def upload(n: int) -> None:
            for _ in range(n):
                sock = connect(proc)
                head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                try:
                    sock.sendall(head + body)
                    status = read_response(sock, bytearray())[0]
                except OSError:
                    status = -1  # the router stopped reading: fine, as long as it held nothing
                with lock:
                    statuses.append(status)
                sock.close()

        threads = [threading.Thread(target=upload, args=(10,)) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        peak = rss_kb(pid, "VmHWM")
        assert len(statuses) == 100 and set(statuses) <= {401, -1}, statuses
        assert statuses.count(401) >= 90
        assert peak - before < 50 * 1024, f"RSS {before} kB → peak {peak} kB"
        text = httpx.get(f"{proc.url}/metrics").text
        assert metric(text, "router_rejected_total", status="401", reason="auth") >= 90


# -- connections ------------------------------------------------------------------------------


def test_one_connection_past_max_connections_gets_503(blue: Proc, tmp_path: Path) -> None:
    config = cfg({"blue": blue.url}, {"blue": 100}, max_connections=4)
    with router(tmp_path, config) as (proc, _):
        held = [connect(proc) for _ in range(4)]
        for sock in held:  # each is accepted and counted before the next test
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock, bytearray())[0] == 200
        extra = connect(proc)
        status, headers, body = answer(extra)
        assert (status, headers["connection"]) == (503, "close")
        assert body["error"] == "the router has max_connections (4) open; retry later"
        extra.close()
        held.pop().close()
        # A slot is free again once the router saw the close.
        deadline = time.monotonic() + 10
        while True:
            sock = connect(proc)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status = read_response(sock, bytearray())[0]
            sock.close()
            if status == 200 or time.monotonic() > deadline:
                break
        assert status == 200
        for sock in held:
            sock.close()


def test_legitimate_requests_keep_their_latency_under_20_attacking_connections(
    blue: Proc, tmp_path: Path
) -> None:
    """10 connections send endless headers, 10 send bodies a byte at a time: every legitimate
    request is answered 200, and its median latency stays within 2x of the same test's baseline
    (with absolute slack for a loaded 2-core machine). The p99 is printed, not asserted: on a
    shared 2-core machine one scheduler hiccup moves it past any ratio (seen once in CI-like
    runs); the stalls this guards against (seconds per oversized header) move the median too."""
    config = cfg({"blue": blue.url}, {"blue": 100})
    with router(tmp_path, config) as (proc, _):
        client = httpx.Client(timeout=30)

        def measure(n: int) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = client.post(f"{proc.url}/score", content=b"{}", headers=AUTH1)
                out.append(time.perf_counter() - t0)
                assert r.status_code == 200
            return out

        measure(20)  # warm up
        base = measure(300)
        attack = subprocess.Popen(
            [sys.executable, "-m", "tests.support.attack", str(proc.port), KEY1, "10", "10"],
            stdout=subprocess.PIPE,
        )
        try:
            assert attack.stdout is not None and attack.stdout.readline() == b"attacking\n"
            time.sleep(0.5)
            attacked = measure(300)
            assert attack.poll() is None
        finally:
            attack.kill()
            attack.wait(10)
            client.close()
        med_base, med_att = statistics.median(base), statistics.median(attacked)
        p99_base = statistics.quantiles(base, n=100)[98]
        p99_att = statistics.quantiles(attacked, n=100)[98]
        figures = (
            f"median {med_base * 1000:.2f}→{med_att * 1000:.2f} ms, "
            f"p99 {p99_base * 1000:.2f}→{p99_att * 1000:.2f} ms"
        )
        print(figures)
        assert med_att < 2 * med_base + 0.010, figures
