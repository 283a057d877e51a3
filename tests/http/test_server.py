"""The inference server over real HTTP: the sample diabetes script, 2 workers, collection on.

One server per module (started as a subprocess on 127.0.0.1), shared by the tests below.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest

from mlendpoints._procs import Proc
from tests.support.serving import SAMPLE, error_json, serve, train_sample

pytestmark = pytest.mark.server

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sample(tmp_path_factory.mktemp("diabetes") / "model")


@pytest.fixture(scope="module")
def collect_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("collected")


@pytest.fixture(scope="module")
def server(model_dir: Path, collect_dir: Path) -> Iterator[Proc]:
    with serve(
        SAMPLE / "score.py",
        model_dir,
        "--workers",
        "2",
        "--max-request-body-bytes",
        str(LIMIT),
        "--collect",
        "true",
        "--collect-dir",
        str(collect_dir),
        "--collect-sampling-rate",
        "1",
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def rows(n: int) -> list[list[float]]:
    from sklearn.datasets import load_diabetes

    return load_diabetes().data[:n].tolist()


def test_predictions_equal_calling_the_model_directly(
    client: httpx.Client, model_dir: Path
) -> None:
    data = rows(100)
    resp = client.post("/score", json={"data": data})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    expected = joblib.load(model_dir / "model.pkl").predict(np.array(data)).tolist()
    assert resp.json() == expected
    assert set(expected) == {0, 1}  # the comparison covers both classes


def test_sample_request_file_scores(client: httpx.Client) -> None:
    body = (SAMPLE / "sample-request.json").read_text()
    resp = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 200
    assert len(resp.json()) == len(json.loads(body)["data"])


def test_liveness_readiness_and_options(client: httpx.Client) -> None:
    live = client.get("/")
    assert (live.status_code, live.text) == (200, "Healthy")
    ready = client.get("/ready")
    assert (ready.status_code, ready.text) == (200, "Ready")
    options = client.options("/score")
    assert options.status_code == 200
    assert options.headers["allow"] == "GET, POST, OPTIONS"


def test_request_id_is_echoed_or_minted(client: httpx.Client) -> None:
    echoed = client.post("/score", json={"data": rows(1)}, headers={"x-request-id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    minted = client.post("/score", json={"data": rows(1)})
    assert re.fullmatch(r"[0-9a-f]{32}", minted.headers["x-request-id"])
    unsafe = client.post(
        "/score", json={"data": rows(1)}, headers={"x-request-id": 'bad"id with spaces'}
    )
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])


def test_run_time_header(client: httpx.Client) -> None:
    resp = client.post("/score", json={"data": rows(1)})
    assert float(resp.headers["x-ms-run-fn-exec-ms"]) >= 0.0


def test_malformed_json_is_400_and_server_keeps_serving(client: httpx.Client) -> None:
    resp = client.post(
        "/score",
        content=b'{"data": [[1,2',
        headers={"content-type": "application/json", "x-request-id": "bad-json"},
    )
    assert resp.status_code == 400
    assert resp.json() == error_json(
        "request body is not valid JSON: Expecting ',' delimiter: line 1 column 15 (char 14)",
        "bad-json",
    )
    assert client.post("/score", json={"data": rows(2)}).status_code == 200


def test_non_utf8_body_is_400(client: httpx.Client) -> None:
    resp = client.post(
        "/score",
        content=b"\xff\xfe{}",
        headers={"content-type": "application/json", "x-request-id": "bin"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("request body is not UTF-8 text: ")
    assert resp.json()["request_id"] == "bin"


def test_any_media_type_reaches_a_plain_script(client: httpx.Client) -> None:
    """As on Microsoft's server, run(raw_data) gets the body whatever its Content-Type."""
    resp = client.post(
        "/score",
        content=json.dumps({"data": rows(2)}).encode(),
        headers={"content-type": "application/octet-stream"},
    )
    assert resp.status_code == 200
    assert len(resp.json()) == 2


def test_body_over_limit_is_413(client: httpx.Client) -> None:
    body = b'{"data": "' + b"x" * LIMIT + b'"}'
    resp = client.post(
        "/score", content=body, headers={"content-type": "application/json", "x-request-id": "big"}
    )
    assert resp.status_code == 413
    assert resp.json() == error_json(
        f"request body is {len(body)} bytes; the limit is {LIMIT} bytes (max_request_body_bytes)",
        "big",
    )
    assert client.post("/score", json={"data": rows(1)}).status_code == 200


def test_huge_declared_body_is_refused_before_it_is_sent(
    server: Proc, client: httpx.Client
) -> None:
    """1 GB announced, 1 KB sent: 413 comes back at once and the server keeps serving."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\nx-request-id: huge\r\n\r\n" + b"[" * 1024
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body) == error_json(
        f"request body is 1000000000 bytes; the limit is {LIMIT} bytes (max_request_body_bytes)",
        "huge",
    )
    assert client.post("/score", json={"data": rows(1)}).status_code == 200


def _read_responses(
    sock: socket.socket, count: int, no_body: tuple[int, ...] = ()
) -> list[tuple[bytes, bytes]]:
    """``count`` whole HTTP/1.1 responses (status line + headers, body) from ``sock``; the
    ones at positions ``no_body`` answer HEAD (Content-Length but no body)."""
    data, out = b"", []
    deadline = time.monotonic() + 10
    while len(out) < count and time.monotonic() < deadline:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if head.startswith(b"HTTP/1.1 100 ") or len(out) in no_body:
                length = 0
            if len(rest) >= length:
                out.append((head, rest[:length]))
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return out


def test_pipelined_head_and_expect_continue_get_whole_answers_in_order(server: Proc) -> None:
    """Each response leaves in one write; these are the cases where that must not hold back
    or reorder anything: pipelined requests, HEAD (no body), 100 Continue, an error."""
    body = json.dumps({"data": rows(1)}).encode()
    post = (
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nx-request-id: p%d\r\n\r\n%s"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            post % (len(body), 1, body)
            + b"HEAD / HTTP/1.1\r\nHost: x\r\nx-request-id: h\r\n\r\n"
            + b"GET /nope HTTP/1.1\r\nHost: x\r\nx-request-id: n\r\n\r\n"
            + post % (len(body), 2, body)
        )
        answers = _read_responses(sock, 4, no_body=(1,))
        assert [h.split(b"\r\n")[0] for h, _ in answers] == [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 404 Not Found",
            b"HTTP/1.1 200 OK",
        ]
        assert [b for _, b in answers] == [
            b"[1]",
            b"",
            json.dumps(
                error_json(
                    "no route '/nope'; try POST /score, GET /, "
                    "GET /ready, GET /swagger.json or GET /metrics",
                    "n",
                )
            ).encode(),
            b"[1]",
        ]
        assert b"x-request-id: p2" in answers[3][0]

        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        interim = _read_responses(sock, 1)
        assert [h for h, _ in interim] == [b"HTTP/1.1 100 Continue"]
        sock.sendall(body)
        ((head, answer),) = _read_responses(sock, 1)
        assert head.startswith(b"HTTP/1.1 200 OK") and answer == b"[1]"


def test_chunked_body_over_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * (LIMIT // 4)

    resp = client.post(
        "/score",
        content=chunks(),
        headers={"content-type": "application/json", "x-request-id": "chunked"},
    )
    assert resp.status_code == 413
    assert resp.json()["error"].endswith(
        f"bytes; the limit is {LIMIT} bytes (max_request_body_bytes)"
    )


def test_unknown_route_and_method(client: httpx.Client) -> None:
    resp = client.get("/nope", headers={"x-request-id": "r404"})
    assert resp.status_code == 404
    assert resp.json() == error_json(
        "no route '/nope'; try POST /score, GET /, GET /ready, GET /swagger.json or GET /metrics",
        "r404",
    )
    resp = client.put("/score", headers={"x-request-id": "r405"})
    assert resp.status_code == 405
    assert resp.json() == error_json("PUT /score is not allowed; use POST", "r405")


def test_swagger_for_a_plain_script(client: httpx.Client) -> None:
    doc = client.get("/swagger.json").json()
    assert doc["swagger"] == "2.0"
    assert "/score" in doc["paths"]
    assert doc["definitions"]["ServiceInput"]["type"] == "object"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _published(client: httpx.Client, name: str, quiet_s: float = 1.2) -> float:
    """NAME once every worker has published what it counted: each publishes once a second, so
    a value unchanged for longer than that, with no request sent, includes earlier tests'."""
    value, since = _metric(client.get("/metrics").text, name), time.monotonic()
    deadline = since + 10
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.2)
        now = _metric(client.get("/metrics").text, name)
        if now != value:
            value, since = now, time.monotonic()
    return value


def test_metrics_count_requests_across_workers(client: httpx.Client) -> None:
    name = 'scoring_requests_total{route="/score",status="400"}'
    before = _published(client, name)  # an earlier test's 400 may not be published yet
    for _ in range(6):  # spread over both workers by the kernel
        client.post("/score", content=b"x", headers={"content-type": "image/png"})
    deadline = time.monotonic() + 10
    while True:  # each worker publishes its counters (and readiness) every second
        text = client.get("/metrics").text
        settled = _metric(text, name) == before + 6 and _metric(text, "scoring_workers_ready") == 2
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert _metric(text, name) == before + 6
    assert "# TYPE scoring_request_duration_seconds histogram" in text
    assert 'scoring_errors_total{kind="bad_input"}' in text
    assert _metric(text, "scoring_workers_ready") == 2


def _collected(folder: Path, collection: str) -> list[dict]:
    records = []
    for path in sorted((folder / collection).rglob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


def test_collected_files_hold_inputs_and_outputs_by_request_id(
    client: httpx.Client, collect_dir: Path
) -> None:
    data = rows(3)
    resp = client.post("/score", json={"data": data}, headers={"x-request-id": "collect-me"})
    assert resp.status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        inputs = [
            r for r in _collected(collect_dir, "model_inputs") if r["request_id"] == "collect-me"
        ]
        outputs = [
            r for r in _collected(collect_dir, "model_outputs") if r["request_id"] == "collect-me"
        ]
        if inputs and outputs:
            break
        time.sleep(0.1)
    assert [r["data"] for r in inputs] == [{"data": data}]
    assert [r["data"] for r in outputs] == [resp.json()]
    assert inputs[0]["correlation_id"] == outputs[0]["correlation_id"] == "collect-me"
    files = list((collect_dir / "model_inputs").rglob("*.jsonl"))
    assert all(
        re.search(r"model_inputs/\d{4}/\d{2}/\d{2}/\d{2}/\d+-\d+-\d+\.jsonl$", str(f))
        for f in files
    )


def test_passing_probes_are_not_logged_failures_are(server: Proc, client: httpx.Client) -> None:
    for path in ("/", "/ready", "/no-such-route", "/swagger.json"):
        client.get(path, headers={"x-request-id": "probe-" + (path.strip("/") or "root")})
    deadline = time.monotonic() + 5
    logged: set[str] = set()
    while time.monotonic() < deadline and len(logged) < 2:
        logged = {
            json.loads(x)["request_id"]
            for x in server.log().splitlines()
            if x.startswith("{") and '"probe-' in x
        }
        time.sleep(0.1)
    assert logged == {"probe-no-such-route", "probe-swagger.json"}


def test_access_log_has_one_json_line_per_request(server: Proc, client: httpx.Client) -> None:
    client.post("/score", json={"data": rows(1)}, headers={"x-request-id": "logged-1"})
    deadline = time.monotonic() + 5
    lines: list[dict] = []
    while time.monotonic() < deadline and not lines:
        lines = [
            json.loads(x)
            for x in server.log().splitlines()
            if '"logged-1"' in x and x.startswith("{")
        ]
        time.sleep(0.1)
    assert len(lines) == 1
    line = lines[0]
    assert (line["event"], line["status"], line["path"], line["method"]) == (
        "request",
        200,
        "/score",
        "POST",
    )
    assert line["latency_ms"] >= line["run_ms"] >= 0
