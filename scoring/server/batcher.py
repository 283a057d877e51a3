"""Adaptive batching: concurrent requests' inputs merged into one model call.

Used instead of a runner when the scorer can score a list of inputs at once (``call_batch``:
an MLflow model, a script's ``run_batch`` or ``@batched`` run, a row-wise inference-schema
``run``: ``schema_batch``) and ``max_batch_size`` > 1.

When a batch is formed (a slot for a model call is free and requests are queued):

- at once if the queue holds ``max_batch_size`` requests, or if no other request is on its
  way, or when the oldest queued request has waited ``max_batch_wait_ms``;
- otherwise a timer for that bound, re-checked as requests arrive.

"On its way": a request this worker is reading, or one of the recent concurrency: while
fewer requests are held (queued or running) than the most held at once lately, the clients
just answered are expected back (at 8 connections, 4 per worker, the batch waits for the 4th
instead of alternating halves). A wait that ends by the bound forgets that peak. At 1
connection the peak is 1: a request never waits.

While a batch runs, newcomers queue and form the next one. Batches run in ``slots`` threads
(``max_concurrent_requests_per_instance``'s share of this worker, at least 1), whatever
``execution`` says: the loop must stay free to read the requests that will join (on the
loop, requests read after a blocking call arrive one loop turn apart: nothing to batch).

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
from collections.abc import Sized
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from scoring.server import collector
from scoring.server.errors import Overloaded, ScoringError, TimedOut
from scoring.server.metrics import Stats
from scoring.server.runners import InlineRunner, PooledSlots
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
        self.batch = 0  # id of the running batch it is in


def score_batch(call_batch: BatchScore, call: Score, items: list[_Item]) -> tuple[list[Any], float]:
    """Every item's outcome (a result or a ``Failed``) and the seconds the calls took.

    One call for the batch; if it raises or miscounts, one ``call`` per item, so each gets
    what it would have got alone.
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


class Batcher(PooledSlots):
    """Merges concurrent requests into batches (an ``AsyncRunner`` for the app); a batch
    still running past a member's timeout is a stuck slot."""

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
        """Batches run in ``slots`` threads; ``max_queue_wait_ms`` None: no queue limit.

        ``inline`` (``run()`` would run on the loop): while this worker has one connection
        open and nothing queued or running, a request is scored through it at once, as if
        unbatched (no thread hand-off; nobody can join). The app's server sets
        ``connections`` (its open connections) once it exists."""
        self.call_batch = call_batch
        self.stats = stats
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_batch_wait_ms / 1000.0
        self.timeout_ms = timeout_ms
        self.timeout_s = timeout_ms / 1000.0
        self.queue_wait_s = None if max_queue_wait_ms is None else max_queue_wait_ms / 1000.0
        self.slots = slots
        self.pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="batch")
        self.queue: deque[_Item] = deque()
        self.running = 0  # batches being scored now
        self.held = 0  # requests queued or in a running batch
        self.peak = 0  # most requests held at once lately (forgotten after a vain wait)
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._stuck: dict[int, float] = {}  # id(batch) -> when a member's timeout passed
        self._call: Score | None = None
        self.inline = inline
        self.connections: Sized | None = None

    # -- the request side ----------------------------------------------------------------
    async def __call__(
        self, call: Score, raw: str, headers: ScriptHeaders | None, request_id: str, sampled: bool
    ) -> tuple[Any, float]:
        """``(result, seconds of the call that scored it)``; raises that input's error."""
        inline, connections = self.inline, self.connections
        if (
            inline is not None
            and connections is not None
            and len(connections) <= 1
            and not self.held
            and not self.running
        ):
            self.stats.batch(1, (0.0,))
            return inline(call, raw, headers, request_id, sampled)
        self._call = call
        loop = asyncio.get_running_loop()
        now = loop.time()
        item = _Item(raw, headers, request_id, sampled, loop.create_future(), now)
        limit = self._first_limit(now)
        if limit is not None:
            item.timer = loop.call_at(limit, self._expire, item)
        self.queue.append(item)
        self.held += 1
        if self.held > self.peak:
            self.peak = self.held
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
            held = self.held
            # Requests on their way: being read here, or clients of the recent concurrency
            # whose answer just left and whose next request is coming back.
            coming = max(self.stats.in_flight - held, self.peak - held)
            waited = loop.time() - queue[0].arrived
            if len(queue) < self.max_batch_size and coming > 0 and waited < self.max_wait_s:
                if self._timer is None:
                    self._timer = loop.call_at(queue[0].arrived + self.max_wait_s, self._wake)
                return
            if coming > 0 and len(queue) < self.max_batch_size:  # waited in vain: those
                self.peak = held  # clients are gone
            batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch_size))]
            self.stats.batch(len(batch), [loop.time() - i.arrived for i in batch])
            self._start(batch)

    def _wake(self) -> None:
        self._timer = None
        self._drain()

    def _start(self, batch: list[_Item]) -> None:
        call = self._call
        assert call is not None
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

    def _deliver(self, batch: list[_Item], outcomes: list[Any], seconds: float) -> None:
        answered = 0
        for item, outcome in zip(batch, outcomes, strict=True):
            if not item.future.done():
                item.future.set_result((outcome, seconds))
                answered += not isinstance(outcome, Failed)
        # the app adds ``seconds`` for each request answered: count the call once
        self.stats.run_seconds += seconds * (1 - answered) if answered else 0.0
