"""The router over real sockets: real upstream processes behind a real router process.

Upstreams are ``tests/assets/echo_upstream.py`` (uvicorn, answers with its own name; told to
be slow or fail per request through headers the router forwards). Each router is
``python -m scoring router`` started on a free loopback port with a config file written here.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlendpoints._procs import Proc, free_port
from scoring.router.auth import issue_token
from scoring.router.upstream import (
    Headers,
    Target,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
)
from tests.support.router import (
    AUTH1,
    KEY1,
    KEY2,
    SIGNING,
    cfg,
    metric,
    read_response,
    router,
    upstream,
    wait_for,
)
from tests.support.serving import error_json

pytestmark = pytest.mark.router

MINTED_ID = re.compile(r"^[0-9a-f]{32}$")  # minted ids: the inference server's format


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ups() -> Iterator[dict[str, Proc]]:
    with upstream("blue") as blue, upstream("green") as green, upstream("shadow") as shadow:
        yield {"blue": blue, "green": green, "shadow": shadow}


@pytest.fixture(scope="module")
def keyed(ups: dict[str, Proc], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """blue 70 / green 30, shadow at 0% (reachable only by pinning)."""
    config = cfg({n: p.url for n, p in ups.items()}, {"blue": 70, "green": 30, "shadow": 0})
    with router(tmp_path_factory.mktemp("keyed"), config) as (proc, _):
        yield proc


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


# ---------------------------------------------------------------------------------- auth


def test_primary_and_secondary_key_both_accepted(keyed: Proc, client: httpx.Client) -> None:
    for key in (KEY1, KEY2):
        r = client.post(
            f"{keyed.url}/score",
            json={"data": [[1, 2]]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["deployment"] == r.headers["azureml-model-deployment"]
        assert body["deployment"] in {"blue", "green"}
        assert json.loads(body["body"]) == {"data": [[1, 2]]}
        # The caller's key is not passed on to the deployment.
        assert body["has_authorization"] is False


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing Authorization header; send 'Authorization: Bearer <key or token>'"),
        ({"Authorization": "Bearer not-the-key"}, "invalid key"),
        ({"Authorization": f"Bearer {KEY1}x"}, "invalid key"),
        ({"Authorization": f"Basic {KEY1}"}, "Authorization header is not 'Bearer <key or token>'"),
        ({"Authorization": "Bearer"}, "Authorization header is not 'Bearer <key or token>'"),
    ],
)
def test_bad_or_missing_key_is_401_with_reason(
    keyed: Proc, client: httpx.Client, headers: dict[str, str], reason: str
) -> None:
    r = client.post(f"{keyed.url}/score", json={"data": []}, headers=headers)
    assert r.status_code == 401
    assert r.json() == error_json(reason, r.headers["x-request-id"])
    assert r.headers["www-authenticate"] == 'Bearer realm="endpoint"'
    assert "azureml-model-deployment" not in r.headers


def test_token_mode(ups: dict[str, Proc], tmp_path: Path, client: httpx.Client) -> None:
    config = cfg({"blue": ups["blue"].url}, {"blue": 100}, auth_mode="aml_token")
    with router(tmp_path, config) as (proc, _):
        good = issue_token(SIGNING, "diabetes", ttl_s=600)
        assert good["refreshAfterTimeUtc"] < good["expiryTimeUtc"]
        expired = issue_token(SIGNING, "diabetes", ttl_s=60, now=time.time() - 3600)
        forged = issue_token("another-signing-key-0123456789abcdefgh", "diabetes", ttl_s=600)
        other = issue_token(SIGNING, "another-endpoint", ttl_s=600)
        cases = [
            (good["accessToken"], 200, None),
            (expired["accessToken"], 401, "token expired; get a new one"),
            (forged["accessToken"], 401, "token signature is invalid"),
            (other["accessToken"], 401, "token is not for endpoint 'diabetes'"),
            (KEY1, 401, "token is invalid (DecodeError)"),  # keys do not work in token mode
        ]
        for token, status, reason in cases:
            r = client.post(
                f"{proc.url}/score", json={"data": []}, headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == status, (reason, r.text)
            if reason:
                assert r.json() == error_json(reason, r.headers["x-request-id"])
            else:
                assert r.json()["deployment"] == "blue"


# ------------------------------------------------------------------------- routing & split


def test_weighted_split_within_tolerance(keyed: Proc, client: httpx.Client) -> None:
    n = 2000
    seen: Counter[str] = Counter()
    for _ in range(n):
        r = client.post(f"{keyed.url}/score", content=b"{}", headers=AUTH1)
        assert r.status_code == 200
        seen[r.headers["azureml-model-deployment"]] += 1
    assert set(seen) == {"blue", "green"}  # shadow at 0% never gets unpinned traffic
    # 70/30 over 2000: one standard deviation is ~1%; allow 4 percentage points.
    assert abs(seen["blue"] / n - 0.70) < 0.04, seen


def test_pin_reaches_any_deployment_even_at_zero_percent(keyed: Proc, client: httpx.Client) -> None:
    for name in ("shadow", "green", "blue"):
        for _ in range(5):
            r = client.post(
                f"{keyed.url}/score",
                content=b"{}",
                headers={**AUTH1, "azureml-model-deployment": name},
            )
            assert r.status_code == 200
            assert r.headers["azureml-model-deployment"] == name
            assert r.json()["deployment"] == name


def test_unknown_pin_is_404_naming_known_deployments(keyed: Proc, client: httpx.Client) -> None:
    r = client.post(
        f"{keyed.url}/score", content=b"{}", headers={**AUTH1, "azureml-model-deployment": "purple"}
    )
    assert r.status_code == 404
    assert r.json() == error_json(
        "deployment 'purple' named by header azureml-model-deployment does not exist "
        "(known: blue, green, shadow)",
        r.headers["x-request-id"],
    )


def test_no_traffic_is_404_but_pinning_works(
    ups: dict[str, Proc], tmp_path: Path, client: httpx.Client
) -> None:
    config = cfg({"blue": ups["blue"].url, "green": ups["green"].url}, {})
    with router(tmp_path, config) as (proc, _):
        r = client.post(f"{proc.url}/score", content=b"{}", headers=AUTH1)
        assert r.status_code == 404
        assert r.json()["error"] == (
            "endpoint 'diabetes' has no deployment with traffic; set "
            "traffic or pin one with header azureml-model-deployment"
        )
        r = client.post(
            f"{proc.url}/score",
            content=b"{}",
            headers={**AUTH1, "azureml-model-deployment": "green"},
        )
        assert r.status_code == 200 and r.json()["deployment"] == "green"


def test_request_id_propagated_or_generated(keyed: Proc, client: httpx.Client) -> None:
    r = client.post(
        f"{keyed.url}/score", content=b"{}", headers={**AUTH1, "x-request-id": "req-42.abc"}
    )
    assert r.headers["x-request-id"] == "req-42.abc"
    assert r.json()["request_id"] == "req-42.abc"  # the deployment saw the same id
    r = client.post(f"{keyed.url}/score", content=b"{}", headers=AUTH1)
    rid = r.headers["x-request-id"]
    assert MINTED_ID.match(rid), rid
    assert r.json()["request_id"] == rid
    # An unsafe id (header injection, too long) is replaced, not echoed.
    r = client.post(
        f"{keyed.url}/score", content=b"{}", headers={**AUTH1, "x-request-id": "a" * 200}
    )
    assert MINTED_ID.match(r.headers["x-request-id"])


def test_upstream_status_and_body_pass_through(keyed: Proc, client: httpx.Client) -> None:
    r = client.post(
        f"{keyed.url}/score",
        content=b"{}",
        headers={**AUTH1, "x-test-status": "422", "azureml-model-deployment": "blue"},
    )
    assert r.status_code == 422
    assert r.json()["deployment"] == "blue"
    assert r.headers["x-upstream"] == "blue"


def test_own_routes(keyed: Proc, client: httpx.Client) -> None:
    r = client.get(f"{keyed.url}/")
    assert (r.status_code, r.text) == (200, "Healthy")
    r = client.get(f"{keyed.url}/ready")
    assert (r.status_code, r.text) == (200, "Ready")
    r = client.get(
        f"{keyed.url}/swagger.json", headers={**AUTH1, "azureml-model-deployment": "green"}
    )
    assert r.status_code == 200 and r.json()["info"]["title"] == "green"
    r = client.get(f"{keyed.url}/swagger.json")
    assert r.status_code == 401
    r = client.get(f"{keyed.url}/score", headers=AUTH1)
    assert r.status_code == 405
    assert r.json()["error"] == "use POST for /score (got GET)"
    r = client.get(f"{keyed.url}/nope")
    assert r.status_code == 404
    assert r.json()["error"].startswith(
        "no route GET /nope; routes: GET /, GET /ready, POST /score"
    )
    r = client.get(f"{keyed.url}/metrics")
    assert r.status_code == 200
    assert "# TYPE router_requests_total counter" in r.text


def test_body_over_limit_is_413(ups: dict[str, Proc], tmp_path: Path, client: httpx.Client) -> None:
    config = cfg({"blue": ups["blue"].url}, {"blue": 100}, max_body_bytes=1000)
    with router(tmp_path, config) as (proc, _):
        r = client.post(f"{proc.url}/score", content=b"x" * 1001, headers=AUTH1)
        assert r.status_code == 413
        assert r.json()["error"] == "request body is over max_body_bytes (1000)"
        r = client.post(f"{proc.url}/score", content=b"x" * 1000, headers=AUTH1)
        assert r.status_code == 200


# ------------------------------------------------------------------------ mirror & metrics


def _summary(client: httpx.Client, url: str) -> dict:
    r = client.get(f"{url}/mirror/summary", headers=AUTH1)
    assert r.status_code == 200, r.text
    return r.json()


def _settled(client: httpx.Client, url: str) -> dict:
    return wait_for(
        lambda: (s := _summary(client, url))["mirror_calls_in_flight"] == 0 and s,
        "mirror calls to finish",
    )


def test_mirror_counts_and_equality(
    ups: dict[str, Proc], tmp_path: Path, client: httpx.Client
) -> None:
    config = cfg(
        {"blue": ups["blue"].url, "green": ups["green"].url},
        {"blue": 100},
        mirror_traffic={"green": 50},
    )
    with router(tmp_path, config) as (proc, _):
        url = proc.url
        # Phase 1: answers that do not depend on the deployment -> every mirror copy is equal.
        for i in range(300):
            r = client.post(f"{url}/score", json={"i": i}, headers={**AUTH1, "x-test-same": "1"})
            assert r.status_code == 200
            assert r.headers["azureml-model-deployment"] == "blue"  # client sees live only
        s1 = _settled(client, url)["mirrors"]["green"]
        assert 150 - 45 <= s1["sent"] <= 150 + 45, s1  # 50% of 300, ±5 sigma
        assert (s1["equal"], s1["different"], s1["not_compared"]) == (s1["sent"], 0, 0)
        assert s1["statuses"] == {"200": s1["sent"]}
        assert s1["skipped_overload"] == 0 and s1["errors"] == {}
        # Phase 2: answers name the deployment -> every mirror copy differs.
        for i in range(200):
            client.post(f"{url}/score", json={"i": i}, headers=AUTH1)
        s2 = _settled(client, url)["mirrors"]["green"]
        sent2 = s2["sent"] - s1["sent"]
        assert 100 - 36 <= sent2 <= 100 + 36, s2
        assert (s2["equal"], s2["different"]) == (s1["equal"], sent2)
        # Phase 3: pinned requests are never mirrored, even to a live deployment.
        for _ in range(100):
            client.post(
                f"{url}/score",
                content=b"{}",
                headers={**AUTH1, "azureml-model-deployment": "green"},
            )
        s3 = _settled(client, url)["mirrors"]["green"]
        assert s3["sent"] == s2["sent"]
        assert s3["latency_ms"]["mean"] > 0
        # The same figures in Prometheus form, next to exact live counts.
        text = client.get(f"{url}/metrics").text
        assert metric(text, "router_requests_total", deployment="blue", status="200") == 500
        assert metric(text, "router_requests_total", deployment="green", status="200") == 100
        assert (
            metric(text, "router_mirror_requests_total", deployment="green", status="200")
            == s3["sent"]
        )
        assert (
            metric(text, "router_mirror_comparisons_total", deployment="green", result="equal")
            == s3["equal"]
        )
        assert (
            metric(text, "router_mirror_comparisons_total", deployment="green", result="different")
            == s3["different"]
        )
        assert (
            metric(text, "router_mirror_duration_seconds_count", deployment="green") == s3["sent"]
        )
        assert metric(text, "router_request_duration_seconds_count", deployment="blue") == 500


def test_mirror_to_dead_deployment_never_hurts_live(
    ups: dict[str, Proc], tmp_path: Path, client: httpx.Client
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = cfg(
        {"blue": ups["blue"].url, "candidate": dead},
        {"blue": 100},
        mirror_traffic={"candidate": 50},
    )
    with router(tmp_path, config) as (proc, _):
        for _ in range(100):
            r = client.post(f"{proc.url}/score", content=b"{}", headers=AUTH1)
            assert r.status_code == 200 and r.json()["deployment"] == "blue"
        s = _settled(client, proc.url)["mirrors"]["candidate"]
        assert s["sent"] > 0
        assert s["errors"] == {"connect": s["sent"]}
        assert (s["equal"], s["different"], s["not_compared"]) == (0, 0, s["sent"])


# ------------------------------------------------------------------------ upstream failures


def test_upstream_down_slow_and_busy(
    ups: dict[str, Proc], tmp_path: Path, client: httpx.Client
) -> None:
    dead_port = free_port()
    config = cfg(
        {"blue": ups["blue"].url, "dead": f"http://127.0.0.1:{dead_port}"},
        {"blue": 100},
        request_timeout_ms=2500,
        connect_timeout_ms=200,
        max_connections_per_deployment=1,
    )
    with router(tmp_path, config) as (proc, _):
        url = proc.url
        # Down: nothing listens -> 502 naming the deployment and the reason.
        r = client.post(
            f"{url}/score", content=b"{}", headers={**AUTH1, "azureml-model-deployment": "dead"}
        )
        assert r.status_code == 502
        # The body names the deployment, never its internal URL (that goes to the log).
        assert r.json()["error"] == "deployment 'dead' is unreachable: Connection refused"
        assert str(dead_port) not in r.text
        assert r.headers["azureml-model-deployment"] == "dead"
        # Slow: no answer within request_timeout_ms -> 504.
        r = client.post(f"{url}/score", content=b"{}", headers={**AUTH1, "x-test-delay-ms": "4000"})
        assert r.status_code == 504
        assert r.json()["error"] == "deployment 'blue' did not answer within 2500 ms"
        # Busy: the one allowed connection is held by a slow request (1.2 s) -> the next one
        # waits connect_timeout_ms (0.2 s) for it, then gets 503.
        results: list[int] = []
        slow = threading.Thread(
            target=lambda: results.append(
                client.post(
                    f"{url}/score",
                    content=b"{}",
                    headers={**AUTH1, "x-test-delay-ms": "1200"},
                ).status_code
            )
        )
        slow.start()
        try:
            wait_for(
                lambda: metric(httpx.get(f"{url}/metrics").text, "router_in_flight_requests") == 1,
                "slow request in flight",
            )
            r = httpx.post(f"{url}/score", content=b"{}", headers=AUTH1)
            assert r.status_code == 503
            assert r.json()["error"] == (
                "deployment 'blue' has all 1 connections busy; retry later"
            )
        finally:
            slow.join(10)
        assert results == [200]
        text = httpx.get(f"{url}/metrics").text
        for dep, kind in (("dead", "connect"), ("blue", "timeout"), ("blue", "pool")):
            assert metric(text, "router_upstream_errors_total", deployment=dep, kind=kind) == 1


# ------------------------------------------------------------------------ HTTP/1.1 details


def test_expect_continue_chunked_body_and_pipelining(keyed: Proc) -> None:
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=10) as sock:
        buf = bytearray()
        auth = f"Authorization: Bearer {KEY1}\r\n"
        # Expect: 100-continue -> the router answers 100 itself, then the real response.
        body = b'{"data": "continue"}'
        sock.sendall(
            (
                f"POST /score HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
        )
        status, _, _ = read_response(sock, buf)
        assert status == 100
        sock.sendall(body)
        status, headers, got = read_response(sock, buf)
        assert status == 200 and json.loads(got)["body"] == body.decode()
        # A chunked request body reaches the deployment whole.
        sock.sendall(
            (
                f"POST /score HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked"
                "\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            ).encode()
        )
        status, _, got = read_response(sock, buf)
        assert status == 200 and json.loads(got)["body"] == "hello world"
        # Pipelined requests are answered in order on the same connection.
        reqs = b"".join(
            (
                f"POST /score HTTP/1.1\r\nHost: x\r\n{auth}x-request-id: pipe-{i}\r\n"
                f"azureml-model-deployment: {name}\r\nContent-Length: 2\r\n\r\n{{}}"
            ).encode()
            for i, name in enumerate(["blue", "green", "shadow", "blue"])
        )
        sock.sendall(reqs)
        answers = [read_response(sock, buf) for _ in range(4)]
        assert [(s, h["x-request-id"], h["azureml-model-deployment"]) for s, h, _ in answers] == [
            (200, "pipe-0", "blue"),
            (200, "pipe-1", "green"),
            (200, "pipe-2", "shadow"),
            (200, "pipe-3", "blue"),
        ]
        # Garbage is a 400 and the connection closes.
        sock.sendall(b"NOT HTTP\r\n\r\n")
        status, headers, got = read_response(sock, buf)
        assert status == 400 and headers["connection"] == "close"
        assert json.loads(got)["error"].startswith("malformed HTTP request")


async def request(
    client: UpstreamClient,
    target: Target,
    method: bytes,
    path: bytes,
    headers: Headers,
    body: bytes,
    timeout: float,
) -> UpstreamResponse:
    """``await``-style call through ``client.send`` (the router itself never awaits one)."""
    import asyncio

    fut: asyncio.Future[UpstreamResponse] = asyncio.get_running_loop().create_future()

    def done(resp: UpstreamResponse | None, err: UpstreamError | None) -> None:
        if err is not None:
            fut.set_exception(err)
        elif resp is not None:
            fut.set_result(resp)

    client.send(target, method, path, headers, body, timeout, done)
    return await fut


def test_pooled_client_reuses_keep_alive_connections(ups: dict[str, Proc]) -> None:
    import asyncio

    from scoring.router.upstream import PooledClient

    async def run() -> None:
        client = PooledClient(max_connections=4, connect_timeout=1.0)
        target = Target.from_url("blue", ups["blue"].url)
        for i in range(20):
            resp = await request(
                client,
                target,
                b"POST",
                b"/score",
                [(b"x-request-id", f"c{i}".encode())],
                b"{}",
                5.0,
            )
            assert resp.status == 200 and json.loads(resp.body)["request_id"] == f"c{i}"
        pool = client._pools[(target.host, target.port)]
        assert (pool.open, len(pool.idle), pool.idle[0].uses) == (1, 1, 20)  # one connection
        # Concurrent requests open more connections, up to the limit.
        got = await asyncio.gather(
            *(
                request(
                    client, target, b"POST", b"/score", [(b"x-test-delay-ms", b"100")], b"{}", 5.0
                )
                for _ in range(4)
            )
        )
        assert [r.status for r in got] == [200] * 4 and pool.open == 4
        dead = Target.from_url("dead", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(UpstreamError) as info:
            await request(client, dead, b"POST", b"/score", [], b"{}", 5.0)
        assert info.value.kind == "connect"
        # Connections past max_age are replaced after their response (spreads pods).
        client.configure(4, 1.0, client.max_response, max_age=0.0)
        before = set(pool.idle)
        await request(client, target, b"POST", b"/score", [], b"{}", 5.0)
        await asyncio.sleep(0.05)
        # The connection that served it was closed, not put back: 4 idle -> 3.
        assert len(before) == 4 and len(pool.idle) == 3 and set(pool.idle) < before
        await client.aclose()

    asyncio.run(run())


def test_a_request_dropped_after_it_was_sent_is_replayed_only_when_idempotent() -> None:
    """A server that drops a kept-alive connection without answering may have run the request
    (a poison request that killed its worker): it is not sent again, unless the deployment
    declares its scoring idempotent; then once, on a fresh connection."""
    import asyncio

    from scoring.router.upstream import PooledClient

    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def run(idempotent: bool) -> list[int]:
        seen: list[int] = []  # requests per accepted connection

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(0)
            index = len(seen) - 1
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                    await reader.readexactly(2)
                except asyncio.IncompleteReadError:  # the client closed an idle connection
                    return
                seen[index] += 1
                if index == 0 and seen[index] == 2:
                    writer.close()  # drop it, no answer
                    return
                writer.write(ok)
                await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = PooledClient(max_connections=1)
        target = Target.from_url("blue", f"http://127.0.0.1:{port}", idempotent=idempotent)
        resp = await request(client, target, b"POST", b"/score", [], b"{}", 5.0)
        assert (resp.status, resp.body) == (200, b"ok")
        if idempotent:
            resp = await request(client, target, b"POST", b"/score", [], b"{}", 5.0)
            assert (resp.status, resp.body) == (200, b"ok")
        else:
            with pytest.raises(UpstreamError) as info:
                await request(client, target, b"POST", b"/score", [], b"{}", 5.0)
            assert info.value.kind == "closed"
        await client.aclose()
        server.close()
        await server.wait_closed()
        return seen

    assert asyncio.run(run(idempotent=False)) == [2]  # dropped on conn 1, never replayed
    assert asyncio.run(run(idempotent=True)) == [2, 1]  # replayed once on conn 2
