"""How ``run()`` is called: its timeout and the per-worker queue.

Two ways to execute ``run()`` (``Settings.execution``), picked once at start-up:

- inline (default): ``run()`` is called on the event-loop thread, the fastest path (no
  thread hand-off; ``run()`` holds the GIL anyway). ``request_timeout_ms`` is enforced with
  ``SIGALRM``: the handler raises ``RunInterrupted`` inside ``run()``, so the script is really
  stopped and the worker answers 504 and goes on serving. ``RunInterrupted`` derives from
  ``BaseException`` so a script's ``except Exception`` cannot swallow it (and the handler
  records that it fired, so even a bare ``except:`` still yields 504). A script that swallows
  the interruption and keeps going (``except BaseException:`` in a loop) is still running when
  the alarm fires a second time, one more timeout later: the worker is wedged, so it asks to be
  replaced (``on_wedged``: log, exit ``REPLACE_ME``; the supervisor forks a new one at once).
  C code that holds the GIL and never returns to Python cannot be interrupted at all.
- thread: ``run()`` runs in a pool of ``slots`` threads; requests wait for a free slot at
  most ``max_queue_wait_ms`` (then 429) and past ``request_timeout_ms`` the caller gets 504
  while the thread finishes in the background, keeping its slot until then. Such a slot is
  *stuck*: counted (``stuck()``, the ``scoring_runs_past_timeout`` gauge) and the worker is not
  ready while it has one. A slot still stuck one more timeout later (``wedged()``) will likely
  never come back: the app then drains the worker and it exits to be replaced. Needed for
  ``max_concurrent_requests_per_instance``: inline, waiting requests sit in the kernel's
  accept queue where their wait cannot be measured.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, Protocol

from scoring.server import collector
from scoring.server.errors import Overloaded, TimedOut
from scoring.server.scorer import Score, ScriptHeaders


class Runner(Protocol):
    """Calls ``run()`` for one request on the event-loop thread: ``(result, seconds in run())``.

    Raises what ``run()`` raised, or a ``ScoringError`` (``TimedOut``).
    """

    def __call__(
        self, call: Score, raw: str, headers: ScriptHeaders | None, request_id: str, sampled: bool
    ) -> tuple[Any, float]: ...

    def close(self) -> None: ...

    def stuck(self) -> int: ...

    def wedged(self) -> bool: ...


class AsyncRunner(Protocol):
    """``Runner``, awaited: ``run()`` happens off the event-loop thread."""

    async def __call__(
        self, call: Score, raw: str, headers: ScriptHeaders | None, request_id: str, sampled: bool
    ) -> tuple[Any, float]: ...

    def close(self) -> None: ...

    def stuck(self) -> int:
        """How many ``run()`` calls are still going past their timeout (slots held)."""
        ...

    def wedged(self) -> bool:
        """Whether a slot has been stuck for one more timeout: replace this worker."""
        ...


def _timed(
    call: Score, raw: str, headers: ScriptHeaders | None, request_id: str, sampled: bool
) -> tuple[Any, float]:
    """``run()`` with no timeout, on this thread: ``(result, seconds in run())``."""
    collector.set_request(request_id, sampled)
    start = time.perf_counter()
    result = call(raw, headers)
    return result, time.perf_counter() - start


class RunInterrupted(BaseException):
    """Raised inside ``run()`` by SIGALRM when ``request_timeout_ms`` has passed."""


class InlineRunner:
    """Calls ``run()`` on the loop thread; SIGALRM enforces the timeout (a ``Runner``).

    ``on_wedged`` is called (and must not return) when ``run()`` ignored its interruption and
    was still running one more timeout later.
    """

    def __init__(self, timeout_ms: int, on_wedged: Callable[[], None] | None = None) -> None:
        self.timeout_ms = timeout_ms
        self.timeout_s = timeout_ms / 1000.0
        self.on_wedged = on_wedged
        self._armed = False
        self._fired = False
        if timeout_ms > 0:
            signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if not self._armed:
            return
        if self._fired:  # RunInterrupted was swallowed and run() went on: wedged
            if self.on_wedged is not None:
                self.on_wedged()
            return
        self._fired = True
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)  # the wedge check
        raise RunInterrupted

    def __call__(
        self, call: Score, raw: str, headers: ScriptHeaders | None, request_id: str, sampled: bool
    ) -> tuple[Any, float]:
        """``(result, seconds in run())``; raises what ``run()`` raised or ``TimedOut``."""
        if self.timeout_s <= 0:
            return _timed(call, raw, headers, request_id, sampled)
        collector.set_request(request_id, sampled)
        start = time.perf_counter()
        try:
            result = self.within(lambda: call(raw, headers), self.timeout_s)
        except RunInterrupted as exc:
            raise TimedOut(self.timeout_ms, interrupted=True) from exc
        return result, time.perf_counter() - start

    def within(self, fn: Callable[[], Any], seconds: float) -> Any:
        """``fn()`` under the alarm, after ``seconds`` (0: no alarm).

        Raises:
            RunInterrupted: the time passed (also when ``fn`` swallowed the interruption).
        """
        if seconds <= 0:
            return fn()
        self._fired = False
        self._armed = True
        setitimer = signal.setitimer
        setitimer(signal.ITIMER_REAL, seconds)
        try:
            result = fn()
        finally:
            setitimer(signal.ITIMER_REAL, 0)
            self._armed = False
        if self._fired:  # the script caught RunInterrupted with a bare except
            raise RunInterrupted
        return result

    def close(self) -> None:
        """Nothing to release (the alarm is disarmed after every call)."""

    def stuck(self) -> int:
        """Always 0: a stuck inline ``run()`` blocks the loop, so nobody could ask."""
        return 0

    def wedged(self) -> bool:
        """Never seen from the loop: the second alarm calls ``on_wedged`` instead."""
        return False


class PooledSlots:
    """A pool of ``run()`` threads whose calls may outlive their timeout (holding a slot):
    ``close``/``stuck``/``wedged`` of an ``AsyncRunner``, for ``ThreadRunner`` and the
    batcher. Subclasses set ``pool``, ``timeout_ms`` and record stuck calls in ``_stuck``."""

    pool: ThreadPoolExecutor
    timeout_ms: int
    _stuck: dict[int, float]  # a stuck call's key -> when its timeout passed (monotonic)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def stuck(self) -> int:
        """How many calls are still going past their timeout (slots held)."""
        return len(self._stuck)

    def wedged(self) -> bool:
        """Whether a call has been stuck for one more timeout: replace this worker."""
        if not self._stuck:
            return False
        return time.monotonic() - min(self._stuck.values()) >= self.timeout_ms / 1000.0


class ThreadRunner(PooledSlots):
    """Calls ``run()`` in a thread pool behind a bounded wait for one of ``slots`` (an
    ``AsyncRunner``)."""

    def __init__(
        self, timeout_ms: int, slots: int, max_concurrent: int, max_queue_wait_ms: int
    ) -> None:
        self.timeout_ms = timeout_ms
        self.slots = slots
        self.max_concurrent = max_concurrent
        self.max_queue_wait_ms = max_queue_wait_ms
        self.pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="run")
        self._sem: asyncio.Semaphore | None = None
        self._stuck: dict[int, float] = {}  # id(future) -> when its timeout passed

    async def __call__(
        self, call: Score, raw: str, headers: ScriptHeaders | None, request_id: str, sampled: bool
    ) -> tuple[Any, float]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        sem = self._sem
        if sem.locked():
            try:
                await asyncio.wait_for(sem.acquire(), self.max_queue_wait_ms / 1000.0)
            except TimeoutError:
                raise Overloaded(self.slots, self.max_queue_wait_ms) from None
        else:
            await sem.acquire()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pool, _timed, call, raw, headers, request_id, sampled)
        if self.timeout_ms <= 0:
            try:
                return await future
            finally:
                sem.release()
        try:
            result = await asyncio.wait_for(asyncio.shield(future), self.timeout_ms / 1000.0)
        except TimeoutError:
            if future.done():  # run() itself raised TimeoutError
                sem.release()
                raise
            # the thread keeps its slot until run() returns: capacity really is in use
            key = id(future)
            self._stuck[key] = time.monotonic()

            def freed(_: object) -> None:
                self._stuck.pop(key, None)
                sem.release()

            future.add_done_callback(freed)
            raise TimedOut(self.timeout_ms, interrupted=False) from None
        except BaseException:
            sem.release()
            raise
        sem.release()
        return result


def make_runner(
    run_in_thread: bool,
    timeout_ms: int,
    slots: int,
    max_concurrent: int,
    max_queue_wait_ms: int,
    on_wedged: Callable[[], None] | None = None,
) -> Runner | AsyncRunner:
    """The runner ``Settings.execution`` asks for (``on_wedged``: inline only, see there)."""
    if run_in_thread:
        return ThreadRunner(timeout_ms, slots, max_concurrent, max_queue_wait_ms)
    return InlineRunner(timeout_ms, on_wedged)
