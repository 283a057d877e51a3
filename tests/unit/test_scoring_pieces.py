"""Small scoring modules in-process: request ids, limits, result encoding, metrics,
collection sink, the Azure compat names."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from scoring.common.http_errors import HttpError, error_body
from scoring.common.request_id import new_request_id, new_request_id_bytes, request_id_from
from scoring.server import collector
from scoring.server.app import encode_result
from scoring.server.body import BytesInFlight, check_content_type, nesting_depth, read_body
from scoring.server.errors import BadInput, PayloadTooLarge, TimedOut, UnsupportedMediaType
from scoring.server.metrics import Stats, render
from scoring.server.runners import InlineRunner

pytestmark = pytest.mark.server


def test_request_ids() -> None:
    for good in (b"abc-1.2:3_X", b"has space", b"{guid}/a+b=c", b"x" * 100):
        assert request_id_from(good) == good.decode()  # what Microsoft's server echoes too
    for bad in (None, b"", b'q"uote', b"back\\slash", b"tab\tx", b"\xff", b"x" * 101):
        assert re.fullmatch(r"[0-9a-f]{32}", request_id_from(bad))


def test_forked_workers_mint_different_request_ids() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker, as the server forks them
        os.write(write_end, new_request_id_bytes())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 64).decode()
    os.close(read_end)
    os.close(write_end)
    parent = new_request_id()
    assert re.fullmatch(r"[0-9a-f]{32}", child) and re.fullmatch(r"[0-9a-f]{32}", parent)
    assert child != parent


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"application/json",
        b"application/json; charset=utf-8",
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"application/vnd.api+json",
        b"Application/JSON",
    ],
)
def test_accepted_content_types(value: bytes | None) -> None:
    check_content_type(value)


@pytest.mark.parametrize(
    "value", [b"application/octet-stream", b"image/png", b"multipart/form-data; boundary=x"]
)
def test_rejected_content_types(value: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        check_content_type(value)
    assert info.value.status == 415
    assert repr(value.decode()) in info.value.message


def test_read_body_limits() -> None:
    async def chunks(parts: list[bytes]):
        messages = [
            {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
            for i, p in enumerate(parts)
        ]

        async def receive() -> dict:
            return messages.pop(0)

        return receive

    async def go() -> None:
        budget = BytesInFlight(100)
        assert await read_body(await chunks([b"ab", b"cd"]), None, 10, budget) == b"abcd"
        assert budget.held == 4  # the caller gives it back
        with pytest.raises(PayloadTooLarge, match="request body is 12 bytes; the limit is 10"):
            await read_body(await chunks([b"x" * 6, b"y" * 6]), None, 10, budget)
        with pytest.raises(PayloadTooLarge, match="request body is 11 bytes"):
            await read_body(await chunks([b""]), b"11", 10, budget)
        with pytest.raises(BadInput, match="Content-Length 'abc' is not a number"):
            await read_body(await chunks([b""]), b"abc", 10, budget)
        assert budget.held == 4

    asyncio.run(go())


def test_bytes_in_flight_429_while_held_413_when_a_body_never_fits() -> None:
    async def receive() -> dict:
        return {"type": "http.request", "body": b"x" * 60, "more_body": False}

    async def go() -> None:
        budget = BytesInFlight(100)
        assert await read_body(receive, b"60", 1000, budget) == b"x" * 60
        with pytest.raises(HttpError) as busy:
            await read_body(receive, b"60", 1000, budget)
        assert busy.value.status == 429
        assert busy.value.message == (
            "too many bytes in flight: 60 bytes of request bodies are held in this worker and "
            "60 more would pass its 100 (max_request_bytes_in_flight); retry later"
        )
        with pytest.raises(HttpError) as never:
            await read_body(receive, b"101", 1000, budget)
        assert never.value.status == 413
        assert budget.held == 60  # refused bodies hold nothing
        budget.held -= 60
        assert await read_body(receive, b"60", 1000, budget) == b"x" * 60

    asyncio.run(go())


def test_nesting_depth_ignores_brackets_in_strings() -> None:
    assert nesting_depth('{"a": [[1], "[[[[", {"b": "\\"}]}', 100) == 3
    assert nesting_depth("[" * 10_000, 500) == 500


def test_inline_runner_interrupts_a_slow_run_even_if_it_catches_exception() -> None:
    runner = InlineRunner(timeout_ms=50)

    def stubborn(raw: str, headers: object) -> str:
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.005)
        except Exception:
            return "swallowed"
        return "finished"

    with pytest.raises(TimedOut) as info:
        runner(stubborn, "", None, "rid", False)
    assert info.value.message == (
        "run() did not finish within request_timeout_ms=50; it was interrupted"
    )
    assert runner(lambda raw, h: raw + "!", "ok", None, "rid", False)[0] == "ok!"


def test_encode_result_shapes() -> None:
    assert encode_result([1, 2])[:3] == (200, b"[1, 2]", b"application/json")
    assert encode_result("hi")[:2] == (200, b'"hi"')  # strings are JSON-encoded, as azmlinfsrv
    assert encode_result({"a": np.int64(3), "b": np.array([1.5])})[1] == b'{"a": 3, "b": [1.5]}'
    assert encode_result(b"\x00raw")[1:3] == (b"\x00raw", b"application/octet-stream")


def test_error_body() -> None:
    assert json.loads(error_body('bad "thing"', "r1")) == {
        "error": 'bad "thing"',
        "message": 'bad "thing"',
        "request_id": "r1",
    }


def test_metrics_sum_workers_and_drop_dead_gauges(tmp_path: Path) -> None:
    a = Stats(tmp_path)
    a.observe("/score", 200, 0.002)
    a.observe("/score", 500, 0.2)
    a.error("script_failed")
    a.in_flight, a.ready = 1, 1
    dead = a.snapshot() | {"pid": 999_999_999, "in_flight": 5, "ready": 1}
    text = render([a.snapshot(), dead]).decode()
    assert 'scoring_requests_total{route="/score",status="200"} 2' in text
    assert 'scoring_requests_total{route="/score",status="500"} 2' in text
    assert 'scoring_request_duration_seconds_bucket{route="/score",le="0.0025"} 2' in text
    assert 'scoring_request_duration_seconds_bucket{route="/score",le="+Inf"} 4' in text
    assert 'scoring_request_duration_seconds_count{route="/score"} 4' in text
    assert "scoring_requests_in_flight 1" in text  # the dead worker's gauge is dropped
    assert "scoring_workers_ready 1" in text
    assert 'scoring_errors_total{kind="script_failed"} 2' in text
    a.write()
    assert (tmp_path / f"{os.getpid()}.json").exists()


def test_metrics_text_parses_with_prometheus_client() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    stats = Stats(None)
    stats.observe("/score", 200, 0.001)
    stats.collected["model_inputs"] = 3
    families = {f.name: f for f in text_string_to_metric_families(stats.render().decode())}
    assert families["scoring_requests"].type == "counter"
    assert families["scoring_request_duration_seconds"].type == "histogram"
    assert families["scoring_requests_in_flight"].type == "gauge"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("scoring_collected_records_total", (("collection", "model_inputs"),))] == 3


def test_sink_rolls_files_and_counts_failures(tmp_path: Path) -> None:
    stats = Stats(None)
    sink = collector.Sink(tmp_path / "out", max_file_bytes=300, stats=stats)
    for i in range(6):
        sink.record("model_inputs", {"i": i}, f"c{i}", f"r{i}")
    sink.flush()
    sink.record("model_inputs", {"i": 6}, "c6", "r6")
    sink.flush()
    files = sorted((tmp_path / "out" / "model_inputs").rglob("*.jsonl"))
    assert len(files) == 2  # the second flush no longer fits in 300 bytes
    records = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert [r["data"]["i"] for r in records] == list(range(7))
    assert stats.collected == {"model_inputs": 7}

    blocked = tmp_path / "file"
    blocked.write_text("")
    bad = collector.Sink(blocked / "sub", stats=stats)
    bad.record("model_outputs", [1], "c", "r")
    bad.flush()  # must not raise
    assert (bad.failed, stats.collection_failures) == (1, 1)


def test_collector_api_correlates_and_respects_sampling(tmp_path: Path) -> None:
    import pandas as pd

    sink = collector.Sink(tmp_path)
    collector.configure(sink)
    try:
        collector.set_request("req-1", True)
        ctx = collector.Collector(name="model_inputs").collect(pd.DataFrame({"a": [1, 2]}))
        assert ctx.id == "req-1"
        collector.Collector(name="model_outputs").collect(np.array([0, 1]), ctx)
        collector.set_request("req-2", False)  # not sampled: dropped
        collector.Collector(name="model_inputs").collect([9])
        sink.flush()
    finally:
        collector.configure(None)
        collector.set_request(None, True)
    rows = {
        p.parent.parts[-5]: [json.loads(x) for x in p.read_text().splitlines()]
        for p in tmp_path.rglob("*.jsonl")
    }
    assert [r["data"] for r in rows["model_inputs"]] == [[{"a": 1}, {"a": 2}]]
    assert [r["data"] for r in rows["model_outputs"]] == [[0, 1]]
    assert rows["model_outputs"][0]["correlation_id"] == "req-1"
    with pytest.raises(ValueError, match="Collector name 'bad name'"):
        collector.Collector(name="bad name")


def test_model_get_model_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    from scoring.server.script import COMPAT_DIR

    spec = importlib.util.spec_from_file_location(
        "compat_model", COMPAT_DIR / "azureml" / "core" / "model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["compat_model"] = module
    spec.loader.exec_module(module)
    model = module.Model
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    (tmp_path / "model.pkl").write_bytes(b"x")
    assert model.get_model_path("anything") == str(tmp_path / "model.pkl")  # the only file
    assert model.get_model_path("model") == str(tmp_path / "model.pkl")
    (tmp_path / "other.pkl").write_bytes(b"y")
    (tmp_path / "clf").mkdir()
    (tmp_path / "clf" / "1").mkdir()
    (tmp_path / "clf" / "1" / "m.joblib").write_bytes(b"z")
    assert model.get_model_path("clf", version=1) == str(tmp_path / "clf" / "1" / "m.joblib")
    with pytest.raises(FileNotFoundError) as info:
        model.get_model_path("missing")
    assert "holds: clf, model.pkl, other.pkl" in str(info.value)


class _Transport:
    """What the HTTP protocol writes to, recorded (no socket)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 5001), "peername": ("127.0.0.1", 40000)}.get(name)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_each_response_is_one_write_and_leaves_no_garbage_cycle() -> None:
    """The server's protocol sends status line, headers and body in one write (uvicorn's own
    writes them apart), HEAD included, and a finished request is freed by refcounting."""
    import gc

    import uvicorn
    from uvicorn.server import ServerState

    from scoring.server.uvicorn_http import OneWriteProtocol as _OneWriteProtocol

    async def app(scope: dict, receive: object, send: object) -> None:
        await receive()  # type: ignore[operator]
        await send(
            {
                "type": "http.response.start",
                "status": 200,  # type: ignore[operator]
                "headers": [(b"content-length", b"3")],
            }
        )
        await send({"type": "http.response.body", "body": b"[1]"})  # type: ignore[operator]

    post = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    head = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"

    async def main() -> tuple[list[bytes], int]:
        config = uvicorn.Config(app, http=_OneWriteProtocol, log_config=None)
        config.load()
        protocol = _OneWriteProtocol(
            config=config,
            server_state=ServerState(),
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        transport = _Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        gc.collect()
        gc.disable()
        try:
            for data in (post, head, post) * 20:
                protocol.data_received(data)
                for _ in range(3):
                    await asyncio.sleep(0)
            return transport.writes, gc.collect()
        finally:
            gc.enable()

    writes, garbage = asyncio.run(main())
    assert len(writes) == 60
    assert all(w.startswith(b"HTTP/1.1 200 OK\r\n") for w in writes)
    assert writes[0].endswith(b"\r\n\r\n[1]") and writes[1].endswith(b"\r\n\r\n")
    assert garbage == 0


def test_bytes_in_flight_default_comes_from_the_cgroup_memory_limit(tmp_path: Path) -> None:
    from scoring.server.config import MiB, default_bytes_in_flight, memory_limit

    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert memory_limit([v2, v1]) is None  # neither file: not in a cgroup with a limit
    v1.write_text("9223372036854771712\n")  # cgroup v1's "unlimited"
    assert memory_limit([v2, v1]) is None
    v2.write_text("max\n")
    assert memory_limit([v2, v1]) is None
    v2.write_text(f"{1024 * MiB}\n")
    assert memory_limit([v2, v1]) == 1024 * MiB
    assert default_bytes_in_flight(1024 * MiB) == 32 * MiB  # the prod stack's 1 GiB pods
    assert default_bytes_in_flight(None) == 512 * MiB
