"""Per-instance memory safety (issue #12, finding 6): admission by bytes in flight.

A script's ``json.loads`` makes ~25x its body, so in the prod shape (2 workers, 8 slots) eight
concurrent maximum-size bodies ran a worker out of memory. Each worker here gets 112 MiB of
address space above what it uses at rest (``prlimit`` on the running worker: a pod's memory
limit, felt as ``MemoryError``), and the attack is sent twice: with ``max_request_bytes_in_flight``
set for one body per worker every request gets 200 or 429 and none fails; without it (the
control: a budget that admits everything) the same attack makes ``run()`` fail with 500.
"""

from __future__ import annotations

import json
import resource
import threading
from pathlib import Path

import httpx
import pytest

from mlendpoints._procs import Proc
from tests.support.attacks import events, is_error, write_attacker
from tests.support.serving import serve

pytestmark = [pytest.mark.server, pytest.mark.hardening]

BODY = json.dumps({"attack": "hold", "seconds": 1.0, "data": [0.123456789] * 380_000}).encode()
HEADROOM = 112 * 1024 * 1024  # 80 MiB of data + 4 run() threads' 8 MiB stacks


def _limit_workers(proc: Proc) -> list[int]:
    """Cap each worker's address space at its size now + ``HEADROOM``; returns their pids."""
    pid = proc.popen.pid
    workers = [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for worker in workers:
        status = Path(f"/proc/{worker}/status").read_text()
        size = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmSize:"))
        limit = size * 1024 + HEADROOM
        resource.prlimit(worker, resource.RLIMIT_AS, (limit, limit))
    return workers


def _attack(proc: Proc, n: int = 8, body: bytes = BODY) -> list[httpx.Response]:
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(
            httpx.post(
                proc.url + "/score",
                content=body,
                headers={"content-type": "application/json"},
                timeout=60,
            )
        )

    threads = [threading.Thread(target=send) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def _prod_shape(budget: int) -> tuple[str, ...]:
    return (
        "--workers",
        "2",
        "--max-concurrent-requests-per-instance",
        "8",
        "--max-request-body-bytes",
        str(len(BODY)),
        "--max-request-bytes-in-flight",
        str(budget),
    )


ENV = {"MALLOC_ARENA_MAX": "2"}  # glibc's per-thread arenas would eat the address space


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_attacker(tmp_path_factory.mktemp("attacker"))


def test_eight_maximum_bodies_get_200_or_429_never_out_of_memory(attacker: Path) -> None:
    with serve(attacker, None, *_prod_shape(2 * len(BODY)), env=ENV) as proc:
        httpx.post(proc.url + "/score", json={})
        workers = _limit_workers(proc)
        answers = _attack(proc)
        assert len(answers) == 8
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) <= {200, 429}, [r.text for r in answers]
        assert 200 in statuses
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.json()["error"].startswith("too many bytes in flight: ")
        assert httpx.post(proc.url + "/score", json={}).status_code == 200
        assert events(proc, "worker_exit") == []
        assert events(proc, "run_failed") == []
        assert all(Path(f"/proc/{w}").exists() for w in workers)


def test_a_body_over_a_workers_share_is_413(attacker: Path) -> None:
    with serve(attacker, None, *_prod_shape(len(BODY)), env=ENV) as proc:  # share: half
        resp = httpx.post(
            proc.url + "/score", content=BODY, headers={"content-type": "application/json"}
        )
        assert is_error(
            resp,
            413,
            f"request body is {len(BODY)} bytes; a worker holds at most {len(BODY) // 2} bytes "
            "of request bodies at once (max_request_bytes_in_flight, split over the workers)",
        )


def test_control_without_the_budget_the_attack_runs_out_of_memory(attacker: Path) -> None:
    """The attack with a budget that admits everything (16 bodies held 2 s, so that all four
    slots of both workers overlap): the limit above is what holds the line, not luck."""
    longer = BODY.replace(b'"seconds": 1.0', b'"seconds": 2.0')
    shape = (*_prod_shape(100 * len(BODY)), "--max-queue-wait-ms", "30000")
    with serve(attacker, None, *shape, env=ENV) as proc:
        httpx.post(proc.url + "/score", json={})
        _limit_workers(proc)
        statuses = [r.status_code for r in _attack(proc, 16, longer)]
        assert 500 in statuses, statuses
    log = proc.log()
    assert "MemoryError" in log or "can't start new thread" in log
