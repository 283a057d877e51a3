"""Adaptive batching over real HTTP: an MLflow model, batching scripts and inference-schema
scripts (batched unasked) under concurrent load.

To make batches form without relying on timing, a request whose first value is 999 makes its
model call sleep 2 s: requests sent while it runs queue behind it and form the next batch.
Every answer is compared with the sample model called directly on that request's rows; the
batches are read from ``/metrics`` (``scoring_batch_size``). A NaN row makes the model raise,
for the whole batch it is in: only its own request may fail, with the error it gets alone.
An inference-schema script's answers are compared, byte for byte, with its ``run()`` called
directly in this process on that request's input.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest

from mlendpoints._procs import Proc
from mlendpoints.paths import REPO, SAMPLE
from tests.support.serving import SCRIPTS, serve, train_sample

pytestmark = pytest.mark.server

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
SLOW = 999.0  # first value of a row that makes the model call sleep 2 s
BURST = 12  # requests sent while the slow one runs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sample(tmp_path_factory.mktemp("diabetes") / "model")


@pytest.fixture(scope="module")
def mlflow_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample model as an MLflow pyfunc with a signature (offline: no requirement
    inference); 999 as ``age`` makes predict sleep 2 s."""
    out = tmp_path_factory.mktemp("mlflow") / "model"
    code = f"""
import time, numpy as np, pandas as pd, mlflow.pyfunc
from mlflow.models import infer_signature

class Slow(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import joblib
        self.model = joblib.load(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        if (model_input["age"] == {SLOW}).any():
            time.sleep(2)
        return self.model.predict(model_input.values)

x = pd.DataFrame(np.zeros((2, 10)), columns={FEATURES!r})
mlflow.pyfunc.save_model({str(out)!r}, python_model=Slow(),
    artifacts={{"model": {str(model_dir / "model.pkl")!r}}},
    signature=infer_signature(x, np.array([0, 1])), pip_requirements=["scikit-learn"])
"""
    subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO, timeout=180
    )
    return out


def data_rows() -> list[list[float]]:
    from sklearn.datasets import load_diabetes

    return load_diabetes().data.tolist()


def expected(model_dir: Path, rows: list[list[float]]) -> list[int]:
    """The sample model called directly on one request's rows."""
    return joblib.load(model_dir / "model.pkl").predict(np.array(rows)).tolist()


def mlflow_body(rows: list[list[float]], shape: int) -> dict[str, Any]:
    """One of the body forms the server accepts for an MLflow model."""
    records = [dict(zip(FEATURES, r, strict=True)) for r in rows]
    return [
        {"input_data": {"columns": FEATURES, "index": list(range(len(rows))), "data": rows}},
        {"input_data": rows},
        {"dataframe_split": {"columns": FEATURES, "data": rows}},
        {"dataframe_records": records},
        {"input_data": records},
    ][shape % 5]


def batches(url: str, at_least: int = 0) -> tuple[int, int, int]:
    """(batches formed, batches of one request, requests batched) from ``/metrics``, once
    ``at_least`` requests are counted (each worker publishes its counters every second)."""
    give_up = time.monotonic() + 10
    while True:
        text = httpx.get(url + "/metrics").text

        def value(pattern: str, text: str = text) -> int:
            found = re.search(pattern, text, re.M)
            return int(float(found.group(1))) if found else 0

        counts = (
            value(r"^scoring_batch_size_count (\S+)$"),
            value(r'^scoring_batch_size_bucket\{le="1"\} (\S+)$'),
            value(r"^scoring_batch_size_sum (\S+)$"),
        )
        if counts[2] >= at_least or time.monotonic() > give_up:
            return counts
        time.sleep(0.2)


def settled(url: str) -> tuple[int, int, int]:
    """The counts once every worker has published its last requests."""
    time.sleep(1.2)
    return batches(url)


def post_json(url: str, body: Any, request_id: str) -> httpx.Response:
    """POST ``body`` to /score; a NaN goes as Python's json writes it (the server reads it)."""
    return httpx.post(
        url + "/score",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-request-id": request_id},
        timeout=30,
    )


def burst(url: str, bodies: list[Any], slow_body: Any = None) -> list[httpx.Response]:
    """A slow request first (``slow_body``, else one guessed from ``bodies``), then ``bodies``
    at once while it runs: they queue and batch."""
    slow_row = [SLOW, *[0.0] * 9]
    if slow_body is None:
        slow_body = (
            {"input_data": [slow_row]}
            if isinstance(bodies[0], dict) and "data" not in bodies[0]
            else {"data": [slow_row]}
        )
    answers: dict[int, httpx.Response] = {}

    def post(i: int, body: Any) -> None:
        answers[i] = post_json(url, body, f"r{i}")

    slow = threading.Thread(target=post, args=(-1, slow_body))
    slow.start()
    time.sleep(0.3)  # the slow one is running: the burst queues behind it
    with ThreadPoolExecutor(len(bodies)) as pool:
        list(pool.map(post, range(len(bodies)), bodies))
    slow.join()
    assert answers[-1].status_code == 200, answers[-1].text
    return [answers[i] for i in range(len(bodies))]


@pytest.fixture(scope="module", params=["limited", "unlimited"])
def mlflow_server(request: pytest.FixtureRequest, mlflow_dir: Path) -> Iterator[Proc]:
    """2 workers; ``limited``: the default queue limit (a long enough wait for the slow
    request), ``unlimited``: no concurrency limit (run() would be inline, batches still run
    in a thread)."""
    if request.param == "limited":
        limits = ("--max-queue-wait-ms", "20000")
    else:
        limits = ("--max-concurrent-requests-per-instance", "0")
    with serve(None, mlflow_dir, "--workers", "2", *limits, timeout=120) as proc:
        yield proc


def test_mlflow_every_client_gets_its_own_answer_and_batches_form(
    mlflow_server: Proc, model_dir: Path
) -> None:
    rows = data_rows()
    before = settled(mlflow_server.url)
    inputs = [rows[3 * i : 3 * i + 1 + i % 3] for i in range(BURST)]  # 1 to 3 rows each
    answers = burst(mlflow_server.url, [mlflow_body(r, i) for i, r in enumerate(inputs)])
    after = batches(mlflow_server.url, before[2] + BURST + 1)
    for i, (resp, mine) in enumerate(zip(answers, inputs, strict=True)):
        assert resp.status_code == 200, resp.text
        assert resp.json() == expected(model_dir, mine), f"request {i}"
        assert resp.headers["x-request-id"] == f"r{i}"
        assert float(resp.headers["x-ms-run-fn-exec-ms"]) >= 0
    formed, ones, batched = (a - b for a, b in zip(after, before, strict=True))
    assert batched == BURST + 1  # every request went through the batcher once
    assert ones < formed, "no batch of more than one request formed"
    assert formed < BURST  # fewer model calls than requests


def test_mlflow_poisoned_input_fails_only_its_own_request(
    mlflow_server: Proc, model_dir: Path
) -> None:
    rows = data_rows()
    poisoned = [[float("nan"), *rows[0][1:]]]
    alone = post_json(mlflow_server.url, {"input_data": poisoned}, "poison")
    assert alone.status_code >= 400
    inputs = [rows[i : i + 1] for i in range(BURST)]
    bodies: list[Any] = [{"input_data": r} for r in inputs]
    bodies[5] = {"input_data": poisoned}
    before = settled(mlflow_server.url)
    answers = burst(mlflow_server.url, bodies)
    after = batches(mlflow_server.url, before[2] + BURST + 1)
    formed, ones, _ = (a - b for a, b in zip(after, before, strict=True))
    assert ones < formed, "no batch of more than one request formed"
    for i, resp in enumerate(answers):
        if i == 5:
            assert resp.status_code == alone.status_code
            assert resp.json()["error"] == alone.json()["error"]
            assert (
                resp.headers["x-ms-run-function-failed"]
                == alone.headers["x-ms-run-function-failed"]
            )
        else:
            assert resp.status_code == 200, resp.text
            assert resp.json() == expected(model_dir, inputs[i])


@pytest.mark.parametrize("limit", ["1", "0"])
def test_one_connection_never_waits_for_a_batch(
    mlflow_dir: Path, model_dir: Path, limit: str
) -> None:
    """One client at a time: every batch is that request alone, dispatched at once (a wait
    bound of 1 s that the batcher would otherwise use). Limit 0: scored on the loop, as
    unbatched, since no other connection is open."""
    rows = data_rows()
    args = ("--max-batch-wait-ms", "1000", "--max-concurrent-requests-per-instance", limit)
    with serve(None, mlflow_dir, *args, timeout=120) as proc:
        with httpx.Client() as client:
            for i in range(20):
                resp = client.post(proc.url + "/score", json=mlflow_body(rows[i : i + 1], i))
                assert resp.status_code == 200
                assert resp.json() == expected(model_dir, rows[i : i + 1])
        formed, ones, batched = batches(proc.url, 20)
        text = httpx.get(proc.url + "/metrics").text
    assert (formed, ones, batched) == (20, 20, 20)
    waited_long = re.search(r'^scoring_batch_wait_seconds_bucket\{le="0.5"\} (\S+)$', text, re.M)
    assert waited_long is not None and int(float(waited_long.group(1))) == 20


def test_batching_off_with_max_batch_size_1(mlflow_dir: Path, model_dir: Path) -> None:
    rows = data_rows()
    with serve(None, mlflow_dir, "--max-batch-size", "1", timeout=120) as proc:
        resp = httpx.post(proc.url + "/score", json={"input_data": rows[:2]})
        assert resp.json() == expected(model_dir, rows[:2])
        assert "scoring_batch_size" not in httpx.get(proc.url + "/metrics").text


@pytest.mark.parametrize("script", ["batch_run.py", "batched_run.py"])
def test_batching_script_answers_each_client_and_isolates_a_poisoned_input(
    script: str, model_dir: Path
) -> None:
    rows = data_rows()
    inputs = [rows[2 * i : 2 * i + 1 + i % 2] for i in range(BURST)]
    poisoned = [[float("nan"), *rows[0][1:]]]
    bodies: list[Any] = [{"data": r} for r in inputs]
    bodies[3] = {"data": poisoned}
    with serve(
        SCRIPTS / script, model_dir, "--workers", "2", "--max-queue-wait-ms", "20000"
    ) as proc:
        alone = post_json(proc.url, {"data": poisoned}, "poison")
        assert alone.status_code == 500
        assert alone.json()["error"] == "run() raised ValueError; see server log"
        answers = burst(proc.url, bodies)
        formed, ones, batched = batches(proc.url, BURST + 2)
    assert batched == BURST + 2  # the poisoned one alone, the slow one, the burst
    assert ones < formed, "no batch of more than one request formed"
    for i, resp in enumerate(answers):
        if i == 3:
            assert (resp.status_code, resp.json()["error"]) == (500, alone.json()["error"])
        else:
            assert resp.status_code == 200, resp.text
            assert resp.json() == expected(model_dir, inputs[i])


def test_script_without_batching_is_called_once_per_request(model_dir: Path) -> None:
    """The sample script (run() only) under the same burst: no batch, run() per request."""
    rows = data_rows()
    inputs = [rows[i : i + 2] for i in range(BURST)]
    with serve(
        SAMPLE / "score.py", model_dir, "--workers", "2", "--max-queue-wait-ms", "20000"
    ) as proc:
        answers = burst(proc.url, [{"data": r} for r in inputs])
        time.sleep(1.2)  # every worker has published its counters
        text = httpx.get(proc.url + "/metrics").text
    for resp, mine in zip(answers, inputs, strict=True):
        assert resp.status_code == 200, resp.text
        assert resp.json() == expected(model_dir, mine)
    assert "scoring_batch" not in text


@pytest.mark.parametrize(
    ("limits", "status"),
    [
        (("--request-timeout-ms", "1000", "--max-queue-wait-ms", "20000"), 504),
        (("--request-timeout-ms", "5000", "--max-queue-wait-ms", "300"), 429),
    ],
)
def test_a_queued_request_counts_its_wait(
    model_dir: Path, limits: tuple[str, ...], status: int
) -> None:
    """Queued behind a 2 s batch (1 worker, 1 slot): past its request timeout the request
    answers 504 though its model call never started; past max_queue_wait_ms, 429."""
    rows = data_rows()
    with serve(SCRIPTS / "batch_run.py", model_dir, "--workers", "1", *limits) as proc:
        slow = {"data": [[SLOW, *[0.0] * 9]]}
        answers: dict[str, httpx.Response] = {}
        first = threading.Thread(
            target=lambda: answers.update(slow=post_json(proc.url, slow, "slow"))
        )
        first.start()
        time.sleep(0.3)  # the slow one is running
        queued = post_json(proc.url, {"data": rows[:1]}, "queued")
        first.join()
        assert queued.status_code == status, queued.text
        assert queued.headers["x-request-id"] == "queued"
        assert "x-ms-run-fn-exec-ms" not in queued.headers  # its run never started
        if status == 504:
            assert answers["slow"].status_code == 504
            assert queued.json()["error"] == (
                "run() did not finish within request_timeout_ms=1000; "
                "it is still running in the background"
            )
        else:
            assert answers["slow"].status_code == 200
        time.sleep(2)  # the slow call has returned: the worker scores again
        after = post_json(proc.url, {"data": rows[:1]}, "after")
        assert after.status_code == 200
        assert after.json() == expected(model_dir, rows[:1])


@pytest.mark.parametrize(("limit", "thread"), [("0", "MainThread"), ("1", "batch_0")])
def test_one_connection_is_scored_where_unbatched_requests_are(limit: str, thread: str) -> None:
    """Batching on, one connection: with no concurrency limit the request is scored on the
    event loop's thread, as unbatched (no hand-off); with one, in the batch thread."""
    args = ("--max-concurrent-requests-per-instance", limit)
    with serve(SCRIPTS / "thread_name_run.py", None, *args) as proc, httpx.Client() as client:
        names = {client.post(proc.url + "/score", content="x").json() for _ in range(5)}
    assert names == {thread}


# -- inference-schema scripts, batched unasked -----------------------------------------------
SCHEMA_ARG = {"schema_rows.py": "data", "schema_frame_rows.py": "frame"}
CLIENTS = 32  # concurrent requests in an inference-schema burst


def schema_value(script: str, rows: list[list[float]]) -> Any:
    """``rows`` as the script's argument: an array's rows, or a frame's records."""
    if script == "schema_frame_rows.py":
        return [dict(zip(FEATURES, r, strict=True)) for r in rows]
    return rows


@pytest.fixture(scope="module")
def direct(model_dir: Path) -> Callable[[str, list[list[float]]], bytes]:
    """The bytes a schema script's ``run()`` gives ``rows`` called directly, one input alone,
    as the server calls and encodes it (the script imported here, its ``init()`` run)."""
    from scoring.server.app import encode_result

    loaded: dict[str, Any] = {}

    def answer(script: str, rows: list[list[float]]) -> bytes:
        if script not in loaded:
            path = SCRIPTS / script
            spec = importlib.util.spec_from_file_location(f"direct_{path.stem}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            before = os.environ.get("AZUREML_MODEL_DIR")
            os.environ["AZUREML_MODEL_DIR"] = str(model_dir)
            try:
                module.init()
            finally:
                if before is None:
                    del os.environ["AZUREML_MODEL_DIR"]
                else:
                    os.environ["AZUREML_MODEL_DIR"] = before
            loaded[script] = module
        name = SCHEMA_ARG.get(script, "data")
        return encode_result(loaded[script].run(**{name: schema_value(script, rows)}))[1]

    return answer


@pytest.mark.parametrize("script", ["schema_rows.py", "schema_frame_rows.py"])
def test_schema_script_is_batched_each_client_gets_its_bytes_and_a_poisoned_input_fails_alone(
    script: str,
    model_dir: Path,
    direct: Callable[[str, list[list[float]]], bytes],
    tmp_path: Path,
) -> None:
    """32 concurrent requests of 1-3 rows to a numpy / pandas inference-schema script that
    never asked for batching: each gets the very bytes run() gives its rows alone; batches of
    more than one formed and run() was called on more rows than any request sent (merged); a
    NaN request gets the error it gets alone, the others their answers."""
    rows_log = tmp_path / "rows.log"
    name = SCHEMA_ARG[script]
    rows = data_rows()
    inputs = [rows[3 * i : 3 * i + 1 + i % 3] for i in range(CLIENTS)]
    poisoned = [[float("nan"), *rows[0][1:]]]
    bodies: list[Any] = [
        {name: schema_value(script, r), "ignored": i} for i, r in enumerate(inputs)
    ]
    bodies[7] = {name: schema_value(script, poisoned)}
    slow = {name: schema_value(script, [[SLOW, *[0.0] * 9]])}
    with serve(
        SCRIPTS / script,
        model_dir,
        "--workers",
        "2",
        "--max-queue-wait-ms",
        "20000",
        env={"ROWS_LOG": str(rows_log)},
    ) as proc:
        alone = post_json(proc.url, {name: schema_value(script, poisoned)}, "poison")
        assert alone.status_code == 500
        assert alone.json()["error"] == "run() raised ValueError; see server log"
        answers = burst(proc.url, bodies, slow)
        formed, ones, batched = batches(proc.url, CLIENTS + 2)
    assert batched == CLIENTS + 2  # the poisoned one alone, the slow one, the burst
    assert ones < formed, "no batch of more than one request formed"
    rows_per_call = [int(n) for n in rows_log.read_text().split()]
    assert max(rows_per_call) > 3, f"no call merged requests: {rows_per_call}"
    for i, resp in enumerate(answers):
        if i == 7:
            assert (resp.status_code, resp.json()["error"]) == (500, alone.json()["error"])
            assert resp.headers["x-ms-run-function-failed"] == "True"
        else:
            assert resp.status_code == 200, resp.text
            assert resp.content == direct(script, inputs[i]), f"request {i}"
            assert resp.headers["x-request-id"] == f"r{i}"


def test_schema_script_whose_answer_is_not_per_row_is_scored_one_request_at_a_time(
    model_dir: Path, direct: Callable[[str, list[list[float]]], bytes]
) -> None:
    """It declares one output per row but answers one mean per call: the batch's answer does
    not split by rows, so each request is scored alone and gets its own mean; the worker logs
    that it stopped merging."""
    rows = data_rows()
    inputs = [rows[2 * i : 2 * i + 1 + i % 2] for i in range(BURST)]
    with serve(
        SCRIPTS / "schema_aggregate.py",
        model_dir,
        "--workers",
        "2",
        "--max-queue-wait-ms",
        "20000",
    ) as proc:
        answers = burst(proc.url, [{"data": r} for r in inputs])
        formed, ones, _ = batches(proc.url, BURST + 1)
        log = proc.log()
    assert ones < formed, "no batch of more than one request formed (nothing was tested)"
    assert '"schema_batching_stopped"' in log  # the worker that merged said it stopped
    for i, (resp, mine) in enumerate(zip(answers, inputs, strict=True)):
        assert resp.status_code == 200, resp.text
        assert resp.content == direct("schema_aggregate.py", mine), f"request {i}"
        assert len(resp.json()) == 1


@pytest.mark.parametrize(
    ("script", "env"),
    [("schema_run.py", {}), ("schema_rows.py", {"SCHEMA_BATCHABLE": "0"})],
    ids=["dict-answer", "run.batchable=False"],
)
def test_schema_script_not_provably_row_wise_or_opted_out_is_not_batched(
    script: str,
    env: dict[str, str],
    model_dir: Path,
    direct: Callable[[str, list[list[float]]], bytes],
) -> None:
    """A schema script answering a dict, and one that sets ``run.batchable = False``: called
    once per request as before (no batch metrics), each answer its own."""
    rows = data_rows()
    inputs = [rows[i : i + 2] for i in range(BURST)]
    with serve(
        SCRIPTS / script,
        model_dir,
        "--workers",
        "2",
        "--max-queue-wait-ms",
        "20000",
        env=env,
    ) as proc:
        answers = burst(proc.url, [{"data": r} for r in inputs])
        time.sleep(1.2)  # every worker has published its counters
        text = httpx.get(proc.url + "/metrics").text
    for resp, mine in zip(answers, inputs, strict=True):
        assert resp.status_code == 200, resp.text
        if script == "schema_run.py":
            assert resp.json()["predictions"] == expected(model_dir, mine)
        else:
            assert resp.content == direct(script, mine)
    assert "scoring_batch" not in text
