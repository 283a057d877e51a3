"""Stuck work is visible and healed (issue #12, finding 3), on a real server over loopback.

A ``run()`` that never returns used to hold its slot forever behind green probes (every later
request 429). Now: the caller gets 504, the worker fails ``/ready`` and counts the run in
``scoring_runs_past_timeout`` while the slot is held, and one more timeout later it drains and
the supervisor replaces it; from then on nothing is refused. Inline, a script that swallows
the interruption wedges its worker: the second alarm replaces it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.attacks import events, is_error, metric, write_attacker
from tests.support.router import wait_for
from tests.support.serving import serve

pytestmark = [pytest.mark.server, pytest.mark.hardening]


def test_hung_run_fails_readiness_then_its_worker_is_replaced(tmp_path: Path) -> None:
    """Thread mode (the default: 1 slot), one worker, so every request meets the stuck slot."""
    script = write_attacker(tmp_path)
    args = ("--request-timeout-ms", "1500", "--max-queue-wait-ms", "100")
    with serve(script, None, *args) as proc:
        first = httpx.post(proc.url + "/score", json={}, timeout=10).json()["pid"]
        hung = httpx.post(proc.url + "/score", json={"attack": "hang"}, timeout=20)
        assert is_error(
            hung,
            504,
            "run() did not finish within request_timeout_ms=1500; it is still running in the "
            "background",
        )
        # In between (the slot is held, the worker not yet replaced): not ready, and counted.
        ready = httpx.get(proc.url + "/ready", timeout=10)
        assert is_error(
            ready,
            503,
            "a run() is still running past request_timeout_ms in this pod, holding its slot; "
            "its worker is replaced if it does not return",
        )
        assert metric(proc, "scoring_runs_past_timeout") == 1
        refused = httpx.post(proc.url + "/score", json={}, timeout=10)
        assert refused.status_code == 429  # what every request got forever before the fix

        def replaced() -> int | None:
            resp = httpx.post(proc.url + "/score", json={}, timeout=20)
            pid = resp.json().get("pid") if resp.status_code == 200 else None
            return pid if pid not in (None, first) else None

        second = wait_for(replaced, "a new worker to answer", timeout=30)
        statuses = [httpx.post(proc.url + "/score", json={}, timeout=10) for _ in range(50)]
        assert [r.status_code for r in statuses] == [200] * 50  # zero 429s once replaced
        assert {r.json()["pid"] for r in statuses} == {second}
        assert httpx.get(proc.url + "/ready", timeout=10).status_code == 200
        assert metric(proc, "scoring_runs_past_timeout") == 0
    assert len(events(proc, "worker_wedged")) == 1
    exits = events(proc, "worker_exit")
    assert [(e["pid"], e["exit_code"]) for e in exits] == [(first, 4)]
    assert (
        "was replaced (runs stuck past their timeout); restarting it in 0 s"
        in (exits[0]["message"])
    )


def test_a_stuck_slot_in_one_worker_makes_the_whole_pod_not_ready(tmp_path: Path) -> None:
    """Two workers: the kubelet's probe may reach either, and both must say not ready."""
    script = write_attacker(tmp_path)
    args = ("--workers", "2", "--request-timeout-ms", "3000", "--max-queue-wait-ms", "100")
    with serve(script, None, *args) as proc:
        hung = httpx.post(proc.url + "/score", json={"attack": "hang"}, timeout=20)
        assert hung.status_code == 504
        wait_for(lambda: metric(proc, "scoring_runs_past_timeout") == 1, "the gauge", 10)
        probes = [httpx.get(proc.url + "/ready", timeout=10) for _ in range(10)]  # new conns
        assert [p.status_code for p in probes] == [503] * 10
        wait_for(lambda: events(proc, "worker_exit"), "the stuck worker's replacement", 30)
        wait_for(lambda: metric(proc, "scoring_workers_ready") == 2, "two workers again", 30)
        assert httpx.get(proc.url + "/ready", timeout=10).status_code == 200
        statuses = [httpx.post(proc.url + "/score", json={}, timeout=10) for _ in range(50)]
        assert [r.status_code for r in statuses] == [200] * 50
    assert [e["exit_code"] for e in events(proc, "worker_exit")] == [4]


def test_inline_run_that_swallows_its_timeout_gets_its_worker_replaced(tmp_path: Path) -> None:
    script = write_attacker(tmp_path)
    inline = ("--max-concurrent-requests-per-instance", "0", "--request-timeout-ms", "300")
    with serve(script, None, *inline) as proc:
        first = httpx.post(proc.url + "/score", json={}, timeout=10).json()["pid"]
        with pytest.raises(httpx.TransportError):  # the wedged worker's connections reset
            httpx.post(proc.url + "/score", json={"attack": "swallow"}, timeout=20)

        def answered() -> int | None:
            resp = httpx.post(proc.url + "/score", json={}, timeout=20)
            return resp.json()["pid"] if resp.status_code == 200 else None

        second = wait_for(answered, "the replacement worker", timeout=30)
        assert second != first
        statuses = [httpx.post(proc.url + "/score", json={}, timeout=10) for _ in range(20)]
        assert [r.status_code for r in statuses] == [200] * 20
    wedged = events(proc, "worker_wedged")
    assert len(wedged) == 1
    assert "ignored its interruption at request_timeout_ms=300" in wedged[0]["message"]
    assert [(e["pid"], e["exit_code"]) for e in events(proc, "worker_exit")] == [(first, 4)]


@pytest.mark.parametrize("execution", ["thread", "inline"])
def test_sys_exit_in_run_is_a_500_and_leaks_nothing(tmp_path: Path, execution: str) -> None:
    script = write_attacker(tmp_path)
    mode = () if execution == "thread" else ("--max-concurrent-requests-per-instance", "0")
    with serve(script, None, *mode) as proc:
        pid = httpx.post(proc.url + "/score", json={}, timeout=10).json()["pid"]
        for _ in range(3):
            resp = httpx.post(proc.url + "/score", json={"attack": "sys_exit"}, timeout=10)
            assert is_error(resp, 500, "run() raised SystemExit; see server log")
        after = httpx.post(proc.url + "/score", json={}, timeout=10)
        assert (after.status_code, after.json()) == (200, {"pid": pid})  # the same worker
        assert metric(proc, "scoring_requests_in_flight") == 0
        assert metric(proc, "scoring_errors_total", kind="script_failed") == 3
    assert events(proc, "worker_exit") == []
    assert len(events(proc, "run_failed")) == 3
