"""The router in front of deployments that misbehave: poison requests, unsolicited responses,
close-delimited and chunked framing, huge answers; and a key change racing a reload.

Upstreams are ``tests.support.raw_upstream`` servers (raw sockets, threads of this process),
so each can break HTTP on purpose and count what reached it. Routers are real processes.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scoring.router import main as router_main
from scoring.router.config import load_config
from scoring.router.dispatch import Router, RouterState
from scoring.router.main import RouterProcess
from scoring.router.mirror import MirrorStats
from tests.support.raw_upstream import RawRequest, raw_upstream, reset, response
from tests.support.router import AUTH1, cfg, metric, router

pytestmark = [pytest.mark.router, pytest.mark.hardening]

MB = 1024 * 1024


def echo(req: RawRequest, sock: socket.socket) -> bytes:
    """The answer of a well-behaved deployment: the body back, the request id echoed."""
    rid = req.headers.get("x-request-id", "")
    body = json.dumps({"echo": req.body.decode()}).encode()
    return response(200, body, ("content-type", "application/json"), ("x-request-id", rid))


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


# -- retries: a request that may have reached run() is never replayed ---------------------------


def poisoned(req: RawRequest, sock: socket.socket) -> bool:
    if b"poison" in req.body:
        return reset(sock)  # the worker died in run(): no answer, connection reset
    sock.sendall(echo(req, sock))
    return True


@pytest.mark.parametrize("idempotent", [False, True])
def test_a_poison_request_reaches_the_deployment_once(
    tmp_path: Path, client: httpx.Client, idempotent: bool
) -> None:
    with raw_upstream(poisoned) as up:
        config = cfg({"blue": up.url}, {"blue": 100})
        config["deployments"]["blue"]["idempotent"] = idempotent
        with router(tmp_path, config) as (proc, _):
            for i in range(10):
                # A normal request first, so the poison one rides a kept-alive connection.
                ok = client.post(f"{proc.url}/score", content=b"fine", headers=AUTH1)
                assert ok.status_code == 200 and ok.json() == {"echo": "fine"}
                r = client.post(f"{proc.url}/score", content=f"poison {i}".encode(), headers=AUTH1)
                assert r.status_code == 502
                assert r.json()["error"].startswith(
                    "deployment 'blue' closed the connection before answering"
                )
            attempts = [q.body for q in up.requests if b"poison" in q.body]
            want = [f"poison {i}".encode() for i in range(10)]
            # Not idempotent: exactly one attempt each. Idempotent: replayed once, as declared.
            assert attempts == (sorted(want * 2) if idempotent else want)


def test_an_unreachable_deployment_gets_502_naming_it(tmp_path: Path, client: httpx.Client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    with router(tmp_path, cfg({"blue": f"http://127.0.0.1:{port}"}, {"blue": 100})) as (proc, _):
        r = client.post(f"{proc.url}/score", content=b"{}", headers=AUTH1)
        assert r.status_code == 502
        assert r.json()["error"].startswith("deployment 'blue' is unreachable: ")


# -- one upstream connection never serves two requests ------------------------------------------


def test_unsolicited_responses_never_reach_another_client(tmp_path: Path) -> None:
    """A deployment that answers some requests twice (in the same write, or a moment later,
    maybe after the router sent the next request on that connection):
    every client gets its own answer or a 502 naming the problem; none gets another's, none
    hangs, the in-flight gauge returns to 0 and shutdown does not wait out its drain."""
    count = [0]
    lock = threading.Lock()

    def doubled(req: RawRequest, sock: socket.socket) -> bool:
        with lock:
            count[0] += 1
            n = count[0]
        own = echo(req, sock)
        extra = own  # the same answer twice: a framing bug in a bring-your-own image
        if n % 3 == 0:
            sock.sendall(own + extra)
        elif n % 3 == 1:
            sock.sendall(own)
            time.sleep(0.002)
            sock.sendall(extra)
        else:
            sock.sendall(own)
        return True

    results: list[tuple[str, int, dict]] = []
    with (
        raw_upstream(doubled) as up,
        router(tmp_path, cfg({"blue": up.url}, {"blue": 100})) as (proc, _),
    ):

        def call(i: int) -> None:
            with httpx.Client(timeout=15) as c:
                for j in range(8):
                    mine = f"client {i} request {j}"
                    r = c.post(f"{proc.url}/score", content=mine.encode(), headers=AUTH1)
                    results.append((mine, r.status_code, r.json()))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a client hung"
        assert len(results) == 160
        for mine, status, body in results:
            if status == 200:
                assert body == {"echo": mine}, (mine, body)
            else:
                assert status == 502, (mine, status, body)
                assert body["error"].startswith("deployment 'blue' "), body
        assert sum(1 for _, s, _ in results if s == 200) >= 50
        text = httpx.get(f"{proc.url}/metrics").text
        assert metric(text, "router_in_flight_requests") == 0
        t0 = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(30) == 0  # drained, not cut off by --drain-timeout
        assert time.monotonic() - t0 < 5  # its drain timeout is 10 s


# -- framing -----------------------------------------------------------------------------------


def test_a_close_delimited_response_is_relayed(tmp_path: Path, client: httpx.Client) -> None:
    def close_delimited(req: RawRequest, sock: socket.socket) -> bool:
        head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
        sock.sendall(head.encode() + b'{"answer": "' + b"a" * 100_000 + b'"}')
        return False

    with (
        raw_upstream(close_delimited) as up,
        router(tmp_path, cfg({"blue": up.url}, {"blue": 100})) as (proc, _),
    ):
        for _ in range(3):
            r = client.post(f"{proc.url}/score", content=b"{}", headers=AUTH1)
            assert r.status_code == 200, r.text
            assert r.json() == {"answer": "a" * 100_000}


def test_response_trailers_are_not_merged_into_headers(
    tmp_path: Path, client: httpx.Client
) -> None:
    def with_trailers(req: RawRequest, sock: socket.socket) -> bool:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-from-trailer\r\n"
            b"content-type: application/json\r\n\r\n"
            b'7\r\n{"a": 1\r\n1\r\n}\r\n0\r\nx-from-trailer: sneaky\r\n\r\n'
        )
        return True

    with (
        raw_upstream(with_trailers) as up,
        router(tmp_path, cfg({"blue": up.url}, {"blue": 100})) as (proc, _),
    ):
        r = client.post(f"{proc.url}/score", content=b"{}", headers=AUTH1)
        assert r.status_code == 200 and r.json() == {"a": 1}
        assert "x-from-trailer" not in r.headers


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_200_mb_response_is_refused_in_bounded_memory(tmp_path: Path, framing: str) -> None:
    def huge(req: RawRequest, sock: socket.socket) -> bool:
        chunk = b"x" * MB
        try:
            if framing == "content-length":
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (200 * MB))
                for _ in range(200):
                    sock.sendall(chunk)
            else:
                sock.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for _ in range(200):
                    sock.sendall(b"100000\r\n" + chunk + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the router closed this connection
            return False
        return True

    with (
        raw_upstream(huge) as up,
        router(tmp_path, cfg({"blue": up.url}, {"blue": 100})) as (proc, _),
    ):
        pid = proc.popen.pid
        before = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        )
        r = httpx.post(f"{proc.url}/score", content=b"{}", headers=AUTH1, timeout=60)
        assert r.status_code == 502
        assert r.json()["error"] == (
            "deployment 'blue' answered with more than max_response_bytes (16777216); "
            "its connection was closed"
        )
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        peak = int(next(x.split()[1] for x in status if x.startswith("VmHWM:")))
        assert peak - before < 50 * 1024, f"RSS {before} kB → peak {peak} kB"
        # The router still serves.
        assert httpx.get(f"{proc.url}/").status_code == 200


# -- reload: a key change inside the reload window is picked up --------------------------------


def test_a_key_change_landing_during_a_reload_is_picked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "keys"
    secrets.mkdir()
    (secrets / "primary_key").write_text("key-one-0123456789")
    path = tmp_path / "router.json"
    config = cfg({"blue": "http://127.0.0.1:9"}, {"blue": 100}, secrets_dir=str(secrets))
    path.write_text(json.dumps(config))
    proc = RouterProcess(path, Router(RouterState.build(*load_config(path))), 1.0, 0.0)
    assert proc.router.state.secrets.primary_key == b"key-one-0123456789"

    def load_then_rotate(p: Path):  # the Secret changes right after the router read it
        loaded = load_config(p)
        (secrets / "primary_key").write_text("key-two-0123456789")
        return loaded

    monkeypatch.setattr(router_main, "load_config", load_then_rotate)
    path.write_text(json.dumps({**config, "traffic": {"blue": 100}, "mirror_traffic": {}}) + " ")
    assert proc.poll()  # the config changed: reload (it reads key one; key two lands after)
    monkeypatch.setattr(router_main, "load_config", load_config)
    assert proc.poll()  # key two differs from what was read: reload again
    assert proc.router.state.secrets.primary_key == b"key-two-0123456789"
    assert not proc.poll()  # and then it is stable


# -- JSON the router writes itself is valid JSON ------------------------------------------------


def test_mirror_summary_never_writes_infinity() -> None:
    stats = MirrorStats()
    stats.record(200, 1e6, None, (200, b"{}"), b"{}")  # past the last histogram bucket
    text = json.dumps(stats.summary(), allow_nan=False)
    assert json.loads(text)["latency_ms"]["p99_le"] is None
