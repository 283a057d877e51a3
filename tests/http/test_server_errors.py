"""Failure paths of the inference server over real HTTP: script errors, timeouts, queue
limits, init() failure, bad settings, unwritable collection folder, graceful drain."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlendpoints._procs import free_port, wait_http
from mlendpoints.paths import REPO
from tests.support.serving import SAMPLE, SCRIPTS, error_json, serve, train_sample

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sample(tmp_path_factory.mktemp("diabetes") / "model")


def test_run_raising_is_500_with_traceback_only_in_the_log() -> None:
    with serve(SCRIPTS / "raising_run.py", None) as proc:
        resp = httpx.post(proc.url + "/score", json={"data": 1}, headers={"x-request-id": "boom-1"})
        assert resp.status_code == 500
        assert resp.json() == error_json(
            "run() raised ValueError; see server log",
            "boom-1",
        )
        assert "secret-internal-detail" not in resp.text
        again = httpx.post(proc.url + "/score", json={"data": 1})
        assert again.status_code == 500  # still serving
    logged = [
        json.loads(x)
        for x in proc.log().splitlines()
        if x.startswith("{") and '"run_failed"' in x and '"boom-1"' in x
    ]
    assert len(logged) == 1
    assert "Traceback" in logged[0]["traceback"]
    assert "secret-internal-detail: the model exploded" in logged[0]["traceback"]
    assert logged[0]["script"].endswith("raising_run.py")


def test_inline_timeout_interrupts_run_and_keeps_serving() -> None:
    no_limit = ("--max-concurrent-requests-per-instance", "0")  # inline needs no queue limit
    with serve(SCRIPTS / "slow_run.py", None, "--request-timeout-ms", "300", *no_limit) as proc:
        resp = httpx.post(
            proc.url + "/score", json={"sleep": 30}, headers={"x-request-id": "slow-1"}, timeout=20
        )
        assert resp.status_code == 504
        assert resp.json() == error_json(
            "run() did not finish within request_timeout_ms=300; it was interrupted",
            "slow-1",
        )
        fast = httpx.post(proc.url + "/score", json={"sleep": 0})
        assert (fast.status_code, fast.json()) == (200, {"slept": 0})


def test_thread_mode_timeout_and_queue_limit_429(tmp_path: Path) -> None:
    """1 slot; a 2 s run holds it, the next request waits 200 ms then gets 429."""
    mark = tmp_path / "holder-in-run"
    with serve(
        SCRIPTS / "slow_run.py",
        None,
        "--request-timeout-ms",
        "1000",
        "--max-concurrent-requests-per-instance",
        "1",
        "--max-queue-wait-ms",
        "200",
    ) as proc:
        results: dict[str, httpx.Response] = {}

        def slow() -> None:
            results["slow"] = httpx.post(
                proc.url + "/score",
                json={"sleep": 2, "mark": str(mark)},
                headers={"x-request-id": "holder"},
                timeout=20,
            )

        holder = threading.Thread(target=slow)
        holder.start()
        deadline = time.monotonic() + 10
        while not mark.exists() and time.monotonic() < deadline:  # the slow run holds the slot
            time.sleep(0.02)
        queued = httpx.post(
            proc.url + "/score", json={"sleep": 0}, headers={"x-request-id": "queued"}, timeout=20
        )
        holder.join(20)
        assert queued.status_code == 429
        assert queued.json() == error_json(
            "too many requests: 1 already running in this worker and this one waited "
            "longer than max_queue_wait_ms=200; retry later",
            "queued",
        )
        assert results["slow"].status_code == 504
        assert results["slow"].json() == error_json(
            "run() did not finish within request_timeout_ms=1000; it is still running "
            "in the background",
            "holder",
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the slot frees when the 2 s run really ends
            resp = httpx.post(proc.url + "/score", json={"sleep": 0})
            if resp.status_code == 200:
                break
            time.sleep(0.1)
        assert (resp.status_code, resp.json()) == (200, {"slept": 0})


def test_init_failure_exits_non_zero_naming_the_script(model_dir: Path) -> None:
    script = SCRIPTS / "failing_init.py"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scoring",
            "serve",
            "--entry-script",
            str(script),
            "--model-dir",
            str(model_dir),
            "--workers",
            "2",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    failures = [
        json.loads(x)
        for x in proc.stdout.splitlines()
        if x.startswith("{") and '"init_failed"' in x
    ]
    assert failures, proc.stdout + proc.stderr
    message = failures[0]["message"]
    assert str(script) in message
    assert "FileNotFoundError" in message
    assert "no-such-model.pkl" in message
    assert "holds: model.pkl (" in message  # the model folder is listed
    assert "Traceback" in failures[0]["traceback"]


def test_bad_setting_is_named_with_its_value() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scoring",
            "serve",
            "--entry-script",
            str(SAMPLE / "score.py"),
            "--workers",
            "two",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "python -m scoring serve: --workers: 'two' is not valid "
        "(invalid literal for int() with base 10: 'two')"
    )


def test_unwritable_collection_folder_never_fails_a_request(
    model_dir: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with serve(
        SAMPLE / "score.py", model_dir, "--collect", "true", "--collect-dir", str(blocker / "sub")
    ) as proc:
        data = {"data": [[0.01] * 10]}
        for _ in range(5):
            assert httpx.post(proc.url + "/score", json=data).status_code == 200
        deadline = time.monotonic() + 10
        failures = 0.0
        while time.monotonic() < deadline and failures < 10:
            for line in httpx.get(proc.url + "/metrics").text.splitlines():
                if line.startswith("scoring_collection_failures_total "):
                    failures = float(line.split()[1])
            time.sleep(0.1)
        assert failures == 10  # 5 inputs + 5 outputs counted
        assert httpx.post(proc.url + "/score", json=data).status_code == 200
    warnings = [x for x in proc.log().splitlines() if '"collection_failure"' in x]
    assert len(warnings) == 1  # logged once, not per record
    assert "Not a directory" in warnings[0]


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    port = free_port()
    mark = tmp_path / "in-run"
    popen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scoring",
            "serve",
            "--entry-script",
            str(SCRIPTS / "slow_run.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", 60, popen)
        result: dict[str, httpx.Response] = {}
        thread = threading.Thread(
            target=lambda: result.setdefault(
                "r",
                httpx.post(
                    f"http://127.0.0.1:{port}/score",
                    json={"sleep": 1.5, "mark": str(mark)},
                    timeout=20,
                ),
            )
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not mark.exists() and time.monotonic() < deadline:  # run() has started
            time.sleep(0.02)
        popen.send_signal(signal.SIGTERM)
        thread.join(20)
        assert popen.wait(20) == 0
        assert (result["r"].status_code, result["r"].json()) == (200, {"slept": 1.5})
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
