"""Prometheus metrics shared by all worker processes.

Per request a worker only bumps plain Python counters (a dict increment and a bisect):
measured here, 0.4 us per request against 7.9 us for the same counter + histogram + gauge in
prometheus_client's multiprocess mode, where every ``inc``/``observe`` writes an mmap under
a lock. Each worker writes a snapshot of its
counters to ``<metrics_dir>/<pid>.json`` every second (and at exit); ``GET /metrics`` in any
worker refreshes its own snapshot, sums all of them and renders the text format. Counters of
workers that have exited still count (like prometheus_client's multiprocess mode); the
in-flight gauge only sums live workers.
"""

from __future__ import annotations

import contextlib
import json
import os
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scoring.common.prometheus import BUCKETS, Exposition

_N = len(BUCKETS) + 1  # last slot: +Inf
#: Batch size histogram bounds (requests per model call); a last slot counts +Inf.
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_NB = len(BATCH_SIZES) + 1


class Stats:
    """One worker's counters; cheap to update, snapshotted to a file for /metrics."""

    def __init__(self, metrics_dir: Path | None) -> None:
        self.dir = metrics_dir
        self.pid = os.getpid()
        self.requests: dict[tuple[str, int], int] = {}
        self.errors: dict[str, int] = {}
        self.latency: dict[str, list[float]] = {}
        self.run_seconds = 0.0
        self.in_flight = 0
        self.runs_past_timeout = 0
        self.collected: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.shipped: dict[str, int] = {}
        self.ready = 0
        self.batch_sizes = [0.0] * (_NB + 1)  # buckets..., sum
        self.batch_wait = [0.0] * (_N + 1)  # buckets..., sum (seconds, per request)

    def batch(self, size: int, waits: Sequence[float]) -> None:
        """Count a model call over ``size`` requests, and each one's wait for it."""
        sizes = self.batch_sizes
        sizes[bisect_left(BATCH_SIZES, size)] += 1
        sizes[_NB] += size
        wait = self.batch_wait
        for seconds in waits:
            wait[bisect_left(BUCKETS, seconds)] += 1
            wait[_N] += seconds

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count a finished request and its latency."""
        key = (route, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = [0.0] * (_N + 1)  # buckets..., sum
        hist[bisect_left(BUCKETS, seconds)] += 1
        hist[_N] += seconds

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "requests": [[r, s, n] for (r, s), n in self.requests.items()],
            "errors": self.errors,
            "latency": self.latency,
            "run_seconds": self.run_seconds,
            "in_flight": self.in_flight,
            "runs_past_timeout": self.runs_past_timeout,
            "collected": self.collected,
            "collection_dropped": self.dropped,
            "collection_shipped": self.shipped,
            "ready": self.ready,
            "batch_sizes": self.batch_sizes,
            "batch_wait": self.batch_wait,
        }

    def write(self) -> None:
        """Publish this worker's snapshot for the other workers' /metrics (atomic rename)."""
        if self.dir is None:
            return
        path = self.dir / f"{self.pid}.json"
        tmp = self.dir / f".{self.pid}.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, path)

    def render(self) -> bytes:
        """Prometheus text format summed over every worker's latest snapshot."""
        self.write()
        snaps = _read_all(self.dir) if self.dir is not None else []
        if not any(s.get("pid") == self.pid for s in snaps):
            snaps.append(self.snapshot())
        return render(snaps)

    def stuck_in_pod(self) -> int:
        """Runs past their timeout in every live worker of the pod (this one's count is fresh,
        the others' as of their last snapshot; a worker writes one as soon as its count
        changes). Read by ``/ready``: a stuck slot anywhere makes the pod not ready."""
        total = self.runs_past_timeout
        if self.dir is not None:
            for snap in _read_all(self.dir):
                if snap.get("pid") != self.pid and _alive(snap["pid"]):
                    total += snap.get("runs_past_timeout", 0)
        return total


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_all(folder: Path) -> list[dict[str, Any]]:
    snaps = []
    for path in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            snaps.append(json.loads(path.read_text()))
    return snaps


def render(snaps: list[dict[str, Any]]) -> bytes:
    """Sum snapshots and render them in the Prometheus text exposition format."""
    requests: dict[tuple[str, int], int] = {}
    errors: dict[str, int] = {}
    latency: dict[str, list[float]] = {}
    collected: dict[str, int] = {}
    dropped: dict[str, int] = {}
    shipped: dict[str, int] = {}
    run_seconds = 0.0
    in_flight = ready = past_timeout = 0
    batch_sizes = [0.0] * (_NB + 1)
    batch_wait = [0.0] * (_N + 1)
    for snap in snaps:
        for acc, key in ((batch_sizes, "batch_sizes"), (batch_wait, "batch_wait")):
            for i, v in enumerate(snap.get(key, ())):
                acc[i] += v
        for route, status, n in snap["requests"]:
            requests[(route, status)] = requests.get((route, status), 0) + n
        for kind, n in snap["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
        for route, hist in snap["latency"].items():
            acc = latency.setdefault(route, [0.0] * (_N + 1))
            for i, v in enumerate(hist):
                acc[i] += v
        for name, n in snap["collected"].items():
            collected[name] = collected.get(name, 0) + n
        run_seconds += snap["run_seconds"]
        for name, n in snap.get("collection_shipped", {}).items():
            shipped[name] = shipped.get(name, 0) + n
        for reason, n in snap.get("collection_dropped", {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
        if _alive(snap["pid"]):
            in_flight += snap["in_flight"]
            ready += snap["ready"]
            past_timeout += snap.get("runs_past_timeout", 0)
    out = Exposition()
    out.family("scoring_requests_total", "counter", "Requests answered, by route and HTTP status.")
    for (route, status), n in sorted(requests.items()):
        out.sample("scoring_requests_total", n, f'route="{route}",status="{status}"')
    out.family("scoring_request_duration_seconds", "histogram", "Time from request to response.")
    for route, hist in sorted(latency.items()):
        out.histogram("scoring_request_duration_seconds", f'route="{route}"', hist[:_N], hist[_N])
    out.by_label(
        "scoring_errors_total", "counter", "Failed scoring requests, by kind.", "kind", errors
    )
    out.family("scoring_run_seconds_total", "counter", "Time spent inside run().")
    out.sample("scoring_run_seconds_total", run_seconds)
    if batch_sizes[_NB]:  # only once batching has formed a batch
        out.family(
            "scoring_batch_size", "histogram", "Requests per model call when batching is on."
        )
        out.histogram("scoring_batch_size", "", batch_sizes[:_NB], batch_sizes[_NB], BATCH_SIZES)
        out.family(
            "scoring_batch_wait_seconds",
            "histogram",
            "Time a request waited for its batch to start (batching on).",
        )
        out.histogram("scoring_batch_wait_seconds", "", batch_wait[:_N], batch_wait[_N])
    out.family("scoring_requests_in_flight", "gauge", "Requests being handled now (live workers).")
    out.sample("scoring_requests_in_flight", in_flight)
    out.family(
        "scoring_runs_past_timeout",
        "gauge",
        "run() calls still going past request_timeout_ms, each holding a slot (live workers).",
    )
    out.sample("scoring_runs_past_timeout", past_timeout)
    out.family(
        "scoring_workers_ready", "gauge", "Workers whose init() succeeded and that are serving."
    )
    out.sample("scoring_workers_ready", ready)
    out.by_label(
        "scoring_collected_records_total",
        "counter",
        "Records data collection wrote (lines on disk).",
        "collection",
        collected,
    )
    out.by_label(
        "scoring_collection_dropped_total",
        "counter",
        "Records data collection did not write, by reason (disk_full, write_error, ...).",
        "reason",
        dropped,
    )
    out.by_label(
        "scoring_collection_shipped_total",
        "counter",
        "Records shipped from the spool to the collection destination.",
        "collection",
        shipped,
    )
    return out.render()
