"""A small bounded background load for rollouts: every failure kept, latencies recorded.

Each request is whatever ``ask`` does (usually one POST over a fresh connection, as a new client
would); it returns ``(status, label)``. Anything but a 200, and any exception, is a failure
with its time and reason. Threads pause between requests so the load stays bounded on a small
machine while the cluster rolls pods.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Ask = Callable[[], tuple[int, str]]


@dataclass
class Answer:
    at: float  # seconds since the load started
    label: str  # what answered (a version or deployment), or the failure's reason
    seconds: float  # latency


@dataclass
class Load:
    """THREADS clients calling ``ask`` back to back until stopped, at most MAX_SECONDS and
    MAX_REQUESTS in all. Use as a context manager around the change under test."""

    ask: Ask
    threads: int = 3
    pause: float = 0.01
    max_seconds: float = 120
    max_requests: int = 20000
    answers: list[Answer] = field(default_factory=list)
    failures: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _start: float = 0.0

    @property
    def versions(self) -> list[str]:
        return [a.label for a in self.answers]

    def _run(self) -> None:
        deadline = self._start + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.answers) + len(self.failures) >= self.max_requests:
                    return
            t0 = time.monotonic()
            try:
                status, label = self.ask()
                outcome = label if status == 200 else f"HTTP {status}: {label}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                outcome, status = f"{type(exc).__name__}: {exc}", 0
            t1 = time.monotonic()
            answer = Answer(at=round(t0 - self._start, 2), label=str(outcome), seconds=t1 - t0)
            with self._lock:
                (self.answers if status == 200 else self.failures).append(answer)
            time.sleep(self.pause)

    def __enter__(self) -> Load:
        self._start = time.monotonic()
        self._workers = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)
        ]
        for w in self._workers:
            w.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(timeout=30)

    def since(self, t: float) -> list[Answer]:
        """Answers to requests started at or after T seconds into the load."""
        with self._lock:
            return [a for a in self.answers if a.at >= t]

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def report(self) -> str:
        """Count, failures and latency percentiles, one line (printed by the tests)."""
        with self._lock:
            lat = sorted(a.seconds for a in self.answers)
            failed = len(self.failures)
        if not lat:
            return f"0 answered, {failed} failed"

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

        return (
            f"{len(lat) + failed} requests, {failed} failed; latency p50 {pct(0.5):.1f} ms, "
            f"p90 {pct(0.9):.1f} ms, p99 {pct(0.99):.1f} ms, max {lat[-1] * 1000:.1f} ms"
        )
