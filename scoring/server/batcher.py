"""Adaptive batching: concurrent requests' inputs merged into one model call.

Used instead of a runner when the scorer can score a list of inputs at once (``call_batch``:
an MLflow model, a script's ``run_batch`` or ``@batched`` run) and ``max_batch_size`` > 1.

When a batch is formed (a slot for a model call is free and requests are queued):

- at once if the queue holds ``max_batch_size`` requests, or if no other request is on its
  way (every request this worker is handling is already queued or running: at 1 connection
  a request never waits), or when the oldest queued request has waited
  ``max_batch_wait_ms``;
- otherwise a timer for that bound, re-checked as requests arrive.

While a batch runs, newcomers queue and form the next one. Off the loop thread (``thread``
execution) a batch runs in one of ``slots`` threads and the loop keeps reading requests;
inline, the batch runs on the loop under ``SIGALRM`` and the loop turns once before a batch
forms, so requests read meanwhile join it.

A request's ``request_timeout_ms`` counts from its arrival here, wait included (504); with a
queue limit, a request not dispatched within ``max_queue_wait_ms`` gets 429. A batch whose
call fails is retried one input at a time, so only the input that fails gets an error, the
one it would have got alone. ``x-ms-run-fn-exec-ms`` is the time of the call that computed
the request's answer; ``scoring_run_seconds_total`` counts each call once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from scoring.server import collector
from scoring.server.errors import Overloaded, ScoringError, TimedOut
from scoring.server.metrics import Stats
from scoring.server.runners import InlineRunner, RunInterrupted
from scoring.server.scorer import BatchScore, Failed, Score, ScriptHeaders


class _Item:
    __slots__ = ("arrived", "batch", "future", "headers", "raw", "request_id", "sampled", "timer")

    def __init__(
        self,
        raw: str,
        headers: ScriptHeaders | None,
        request_id: str,
        sampled: bool,
        future: asyncio.Future[tuple[Any, float]],
        arrived: float,
    ) -> None:
        self.raw = raw
        self.headers = headers
        self.request_id = request_id
        self.sampled = sampled
        self.future = future
        self.arrived = arrived
        self.timer: asyncio.TimerHandle | None = None
        self.batch = 0  # id of the running batch it is in (thread execution)


def score_batch(call_batch: BatchScore, call: Score, items: list[_Item]) -> tuple[list[Any], float]:
    """Every item's outcome (a result or a ``Failed``) and the seconds the calls took.

    One call for the batch; if it raises or miscounts, one ``call`` per item, so each gets
    what it would have got alone. ``RunInterrupted`` (inline timeout) is not caught.
    """
    collector.set_request(items[0].request_id, items[0].sampled)
    start = time.perf_counter()
    if len(items) > 1:
        try:
            outcomes = call_batch([i.raw for i in items], [i.headers for i in items])
            if len(outcomes) == len(items):
                return outcomes, time.perf_counter() - start
        except Exception:  # retried one by one below: each gets its own error
            pass
    outcomes = []
    for item in items:
        collector.set_request(item.request_id, item.sampled)
        try:
            outcomes.append(call(item.raw, item.headers))
        except (Exception, SystemExit) as exc:
            outcomes.append(Failed(exc))
    return outcomes, time.perf_counter() - start


class Batcher:
    """Merges concurrent requests into batches (an ``AsyncRunner`` for the app)."""

    def __init__(
        self,
        call_batch: BatchScore,
        *,
        stats: Stats,
        max_batch_size: int,
        max_batch_wait_ms: float,
        timeout_ms: int,
        slots: int,
        max_queue_wait_ms: int | None,
        inline: InlineRunner | None = None,
    ) -> None:
        """``inline``: run batches on the loop with its ``SIGALRM`` timeout; else in
        ``slots`` threads. ``max_queue_wait_ms`` None: no queue limit (no 429)."""
        self.call_batch = call_batch
        self.stats = stats
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_batch_wait_ms / 1000.0
        self.timeout_ms = timeout_ms
        self.timeout_s = timeout_ms / 1000.0
        self.queue_wait_s = None if max_queue_wait_ms is None else max_queue_wait_ms / 1000.0
        self.inline = inline
        self.slots = 1 if inline is not None else slots
        self.pool = (
            None
            if inline is not None
            else ThreadPoolExecutor(max_workers=slots, thread_name_prefix="batch")
        )
        self.queue: deque[_Item] = deque()
        self.running = 0  # batches being scored now
        self.held = 0  # requests queued or in a running batch
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._stuck: dict[int, float] = {}  # id(batch) -> when a member's timeout passed
        self._call: Score | None = None

    # -- the request side ----------------------------------------------------------------
    async def __call__(
        self, call: Score, raw: str, headers: ScriptHeaders | None, request_id: str, sampled: bool
    ) -> tuple[Any, float]:
        """``(result, seconds of the call that scored it)``; raises that input's error."""
        self._call = call
        loop = asyncio.get_running_loop()
        now = loop.time()
        item = _Item(raw, headers, request_id, sampled, loop.create_future(), now)
        limit = self._first_limit(now)
        if limit is not None:
            item.timer = loop.call_at(limit, self._expire, item)
        self.queue.append(item)
        self.held += 1
        self._schedule(loop)
        try:
            result, seconds = await item.future
        finally:
            self.held -= 1
            if item.timer is not None:
                item.timer.cancel()
        if isinstance(result, Failed):
            raise result.exc
        return result, seconds

    def _first_limit(self, now: float) -> float | None:
        limits = [now + s for s in (self.queue_wait_s, self.timeout_s) if s]
        return min(limits) if limits else None

    def _expire(self, item: _Item) -> None:
        """A queued request past ``max_queue_wait_ms`` (429) or its timeout (504); a running
        one past its timeout (504, its batch goes on holding its slot: stuck)."""
        if item.future.done():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = item.arrived + self.timeout_s if self.timeout_s else None
        queued = item in self.queue
        if deadline is not None and now >= deadline - 1e-6:
            if queued:
                self.queue.remove(item)
            else:  # its batch goes on in its thread, holding the slot
                self._stuck.setdefault(item.batch, time.monotonic())
            item.future.set_exception(TimedOut(self.timeout_ms, interrupted=False))
            return
        if queued:
            self.queue.remove(item)
            item.future.set_exception(Overloaded(self.slots, int((self.queue_wait_s or 0) * 1000)))
            return
        if deadline is not None:  # dispatched in time: now only its timeout counts
            item.timer = loop.call_at(deadline, self._expire, item)

    # -- forming batches -----------------------------------------------------------------
    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Form a batch on the loop's next turn (requests read meanwhile can join)."""
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        queue = self.queue
        while queue and self.running < self.slots:
            loop = asyncio.get_running_loop()
            coming = self.stats.in_flight - self.held  # requests not here yet
            waited = loop.time() - queue[0].arrived
            if len(queue) < self.max_batch_size and coming > 0 and waited < self.max_wait_s:
                if self._timer is None:
                    self._timer = loop.call_at(queue[0].arrived + self.max_wait_s, self._wake)
                return
            batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch_size))]
            self.stats.batch(len(batch), [loop.time() - i.arrived for i in batch])
            self._start(batch)
            if self.inline is not None:  # the loop turns before the next one: newcomers join
                if queue:
                    self._schedule(loop)
                return

    def _wake(self) -> None:
        self._timer = None
        self._drain()

    def _start(self, batch: list[_Item]) -> None:
        call = self._call
        assert call is not None
        if self.inline is not None:
            self.running += 1
            try:
                self._run_inline(call, batch)
            finally:
                self.running -= 1
            return
        assert self.pool is not None
        self.running += 1
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self.pool, score_batch, self.call_batch, call, batch)

        def done(job: asyncio.Future[tuple[list[Any], float]]) -> None:
            self.running -= 1
            self._stuck.pop(id(batch), None)
            if job.cancelled():
                stopping = Failed(ScoringError("the server is stopping", 503))
                self._deliver(batch, [stopping] * len(batch), 0.0)
            elif job.exception() is not None:
                self._deliver(batch, [Failed(job.exception())] * len(batch), 0.0)  # type: ignore[arg-type]
            else:
                outcomes, seconds = job.result()
                self._deliver(batch, outcomes, seconds)
            if self.queue:
                self._schedule(loop)

        for item in batch:  # dispatched: only its timeout counts now
            item.batch = id(batch)
            if item.timer is not None:
                item.timer.cancel()
                item.timer = None
            if self.timeout_s:
                item.timer = loop.call_at(item.arrived + self.timeout_s, self._expire, item)
        job.add_done_callback(done)

    def _run_inline(self, call: Score, batch: list[_Item]) -> None:
        """Score ``batch`` on the loop; the alarm is the earliest member's time left. If it
        fires, members past their timeout get 504 and the others are queued again, first."""
        inline = self.inline
        assert inline is not None
        now = asyncio.get_running_loop().time()
        left = min(i.arrived + self.timeout_s for i in batch) - now if self.timeout_s else 0.0
        try:
            outcomes, seconds = inline.within(
                lambda: score_batch(self.call_batch, call, batch), max(left, 1e-3)
            )
        except RunInterrupted:
            now = asyncio.get_running_loop().time()
            for item in reversed(batch):
                if now >= item.arrived + self.timeout_s - 1e-3:
                    item.future.set_exception(TimedOut(self.timeout_ms, interrupted=True))
                elif not item.future.done():
                    self.queue.appendleft(item)
            return
        self._deliver(batch, outcomes, seconds)

    def _deliver(self, batch: list[_Item], outcomes: list[Any], seconds: float) -> None:
        self.stats.run_seconds -= seconds * (len(batch) - 1)  # the app adds it per request
        for item, outcome in zip(batch, outcomes, strict=True):
            if not item.future.done():
                item.future.set_result((outcome, seconds))

    # -- the runner interface ------------------------------------------------------------
    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def stuck(self) -> int:
        """Batches still running past a member's timeout (each holds a slot)."""
        return len(self._stuck)

    def wedged(self) -> bool:
        if not self._stuck:
            return False
        return time.monotonic() - min(self._stuck.values()) >= self.timeout_s
