"""``python -m scoring serve``: start N worker processes that each load the model and serve.

Process model. The supervisor (this process) parses the settings, binds the listening
socket and forks the workers; it never imports the script. Each worker calls ``init()``
before it accepts a connection (so a worker that takes traffic is ready), then runs uvicorn
(uvloop + httptools) on the shared socket. Forking, rather than uvicorn's spawn-based
multiprocess supervisor, keeps cold start short (workers inherit the imported server) and
lets us treat a failed ``init()`` as fatal: uvicorn's supervisor would respawn such a worker
forever. Here the worker logs the script, the exception and the model folder's contents and
exits 3, and the supervisor stops the others and exits 3 (any death before the worker
reported ready counts as that: exit 3 for a failed ``init()``, 1 for a crash). Ready is
reported through a pipe, so a worker that exits with 3 *after* it was ready (a script's
``sys.exit(3)`` in ``run()``) is a crash like any other, not an ``init()`` failure.

A worker that dies after it was ready (a poison request: ``os._exit``, a native crash, the OOM
killer) is respawned, always: one bad request costs one worker, never the server. Respawns of
the same worker slot back off exponentially (0.1 s, doubling, capped at 5 s; reset once a
worker has lived 30 s), so a crash loop does not burn the CPU the other workers need. A worker
that asks to be replaced (exit ``REPLACE_ME``: its slots are stuck in ``run()`` past the
timeout, or its inline ``run()`` ignored the timeout) is respawned at once, with no back-off.

Shutdown. SIGTERM or SIGINT to the supervisor is forwarded to the workers; each stops
accepting, finishes in-flight requests (up to ``graceful_timeout_s``), flushes logs, metrics
and collected data, and exits 0. Workers still alive 5 s after that are killed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import uvicorn

from scoring.common import logs
from scoring.server import collector
from scoring.server.config import Settings, SettingsError, load
from scoring.server.metrics import Stats
from scoring.server.shipper import DestinationError, Shipper, destination
from scoring.server.uvicorn_http import DrainingServer, protocol

INIT_FAILED = 3
REPLACE_ME = 4
"""A worker's exit code when it is wedged (runs stuck past their timeout) and must be replaced."""
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
BACKOFF_RESET_AFTER_S = 30.0
"""A worker that lived this long starts its slot's back-off from the beginning again."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m scoring serve``; returns the exit code."""
    try:
        settings = load(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(f"python -m scoring serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.access_log, settings.log_level)
    created_dir = None
    if settings.metrics_dir is None:
        created_dir = Path(tempfile.mkdtemp(prefix="ml-endpoints-metrics-", dir=_memory_dir()))
        settings = settings.model_copy(update={"metrics_dir": created_dir})
    try:
        return Supervisor(settings).run()
    finally:
        if created_dir is not None:
            shutil.rmtree(created_dir, ignore_errors=True)


def _memory_dir() -> str | None:
    """``/dev/shm`` (a tmpfs in Linux hosts and pods) if writable, else the default temp dir.

    Each worker replaces its metrics snapshot there every second, on the event loop. On a
    disk filesystem (ext4, a pod's overlay /tmp) that write-and-rename waits for the disk now
    and then: measured up to 160 ms, 8 of 59 snapshots over 20 ms under load, which is every
    request in that worker stalled and the p99 latency. In memory it never waits on a disk.
    """
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker shares."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Child:
    """One forked worker as the supervisor sees it."""

    __slots__ = ("index", "ready_fd", "started")

    def __init__(self, index: int, ready_fd: int) -> None:
        self.index = index
        self.ready_fd = ready_fd  # the read end: a byte arrives once init() is done
        self.started = time.monotonic()

    def was_ready(self) -> bool:
        """Whether the worker reported ready before it exited (reads and closes the pipe)."""
        try:
            return bool(os.read(self.ready_fd, 1))
        except BlockingIOError:
            return False
        finally:
            os.close(self.ready_fd)


class Supervisor:
    """Forks, watches and stops the worker processes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = logs.get_log()
        self.children: dict[int, _Child] = {}  # pid -> worker
        self.pending: dict[int, float] = {}  # worker index -> when to respawn it
        self.backoff: dict[int, float] = {}  # worker index -> its next respawn delay
        self.stopping = False
        self.exit_code = 0

    def run(self) -> int:
        s = self.settings
        try:
            sock = bind(s.host, s.port)
        except OSError as exc:
            self.log.event("error", f"cannot listen on {s.host}:{s.port}: {exc}")
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        what = s.entry_script or f"MLflow model in {s.model_dir}"
        self.log.event(
            "info",
            f"serving {what} on http://{s.host}:{s.port} with {s.workers} worker(s)",
            event="start",
            execution=("thread" if s.run_in_thread else "inline"),
        )
        shipper = self._shipper()
        if shipper is False:
            sock.close()
            return 1
        for index in range(s.workers):
            self._spawn(index, sock)
        if shipper is not None:
            shipper.start()  # after the first forks: a forked child inherits no running thread
        deadline: float | None = None
        while self.children or (self.pending and not self.stopping):
            pid, status = os.waitpid(-1, os.WNOHANG) if self.children else (0, 0)
            if pid == 0:
                if self.stopping:
                    deadline = deadline or time.monotonic() + s.graceful_timeout_s + 5
                    if time.monotonic() > deadline:
                        self._signal_all(signal.SIGKILL)
                else:
                    self._respawn_due(sock)
                time.sleep(0.05)
                continue
            child = self.children.pop(pid, None)
            if child is None:
                continue
            ready = child.was_ready()
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if not ready:
                self._init_failed(child.index, pid, code)
            else:
                self._schedule_respawn(child, pid, code)
        sock.close()
        if shipper is not None:
            left = shipper.stop(max(s.graceful_timeout_s, 5.0))
            self.log.event(
                "info" if left == 0 else "error",
                f"collected data shipped to {shipper.dest.where}; {left} file(s) left in the spool",
                event="collection_shipped",
                shipped=shipper.shipped,
            )
        self.log.event("info", f"stopped (exit {self.exit_code})", event="stop")
        return self.exit_code

    def _shipper(self) -> Shipper | Literal[False] | None:
        """The collection shipper if a destination is set (False: it cannot be written, said
        in the log; the server must not become Ready and silently lose data)."""
        s = self.settings
        if not s.collect_destination:
            return None
        try:
            dest = destination(s.collect_destination)
            dest.check(f".ml-endpoints-probe-{collector.RUN}")
        except (DestinationError, ImportError) as exc:
            self.log.event(
                "error",
                f"data collection destination: {exc}; not starting",
                event="collection_destination_failed",
            )
            return False
        return Shipper(
            s.collect_dir,
            dest,
            collector.RUN,
            lambda: set(self.children.copy()),
            Stats(s.metrics_dir),
            period_s=collector.PERIOD[s.collect_rolling_rate],
        )

    def _init_failed(self, index: int, pid: int, code: int) -> None:
        """A worker died before it was ready: init() failed, so stop (Kubernetes shows it)."""
        why = "init failed (see the worker's log line above)"
        if code != INIT_FAILED:
            why = f"died during init() with {_exit_text(code)}"
        self.log.event("error", f"worker {index} (pid {pid}): {why}; stopping", event="stop")
        self.exit_code = INIT_FAILED if code == INIT_FAILED else 1
        self._stop()

    def _schedule_respawn(self, child: _Child, pid: int, code: int) -> None:
        """Respawn a worker that died after it was ready: at once if it asked to be replaced,
        else after its slot's back-off."""
        index, now = child.index, time.monotonic()
        if code == REPLACE_ME:
            delay = 0.0
            what = "was replaced (runs stuck past their timeout)"
        else:
            if now - child.started >= BACKOFF_RESET_AFTER_S:
                self.backoff.pop(index, None)
            delay = self.backoff.get(index, BACKOFF_FIRST_S)
            self.backoff[index] = min(delay * 2, BACKOFF_MAX_S)
            what = f"exited with {_exit_text(code)}"
        self.log.event(
            "error" if code != REPLACE_ME else "warning",
            f"worker {index} (pid {pid}) {what}; restarting it in {delay:g} s",
            event="worker_exit",
            worker_index=index,
            pid=pid,
            exit_code=code,
        )
        self.pending[index] = now + delay

    def _respawn_due(self, sock: socket.socket) -> None:
        now = time.monotonic()
        for index, when in list(self.pending.items()):
            if when <= now:
                del self.pending[index]
                self._spawn(index, sock)

    def _spawn(self, index: int, sock: socket.socket) -> None:
        ready_r, ready_w = os.pipe()
        os.set_blocking(ready_r, False)
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            for sibling in self.children.values():  # their pipes are the supervisor's
                os.close(sibling.ready_fd)
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                code = worker(self.settings, sock, ready_w)
            except BaseException as exc:  # never return into the supervisor's loop
                logs.get_log().event("error", f"worker crashed: {type(exc).__name__}: {exc}")
            finally:
                logs.get_log().flush()
                os._exit(code)
        os.close(ready_w)
        self.children[pid] = _Child(index, ready_r)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:  # second signal: stop now
            self._signal_all(signal.SIGKILL)
            return
        self.log.event(
            "info", f"{signal.Signals(signum).name}: draining in-flight requests", event="stop"
        )
        self._stop()

    def _stop(self) -> None:
        self.stopping = True
        self.pending.clear()
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _exit_text(code: int) -> str:
    """``code 3`` or ``signal SIGKILL`` (``waitstatus_to_exitcode`` gives -signal)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


INIT_REPORT_AFTER_S = (10, 30, 60)
"""When a long init() is reported in the log (then every 60 s)."""


def report_slow_init(log: logs.Log, source: str) -> Callable[[], None]:
    """Log while init() runs long; returns the function that stops it.

    A pod whose init() is slow (a big model) or hangs is running but not Ready, and `pulumi up`
    says only that it timed out; these lines make `ml-endpoints logs` show what it is doing.
    """
    done = threading.Event()

    def watch() -> None:
        waited = 0
        for mark in itertools.chain(INIT_REPORT_AFTER_S, itertools.count(120, 60)):
            if done.wait(mark - waited):
                return
            waited = mark
            log.event(
                "warning",
                f"init() of {source} still running after {mark} s; this "
                "worker is not Ready until it returns",
                event="init_slow",
                script=source,
            )

    thread = threading.Thread(target=watch, name="init-watch", daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(timeout=1)

    return stop


def worker(settings: Settings, sock: socket.socket | None, ready_fd: int | None = None) -> int:
    """One worker: ``init()``, then serve until SIGTERM. Returns the exit code.

    ``ready_fd``: the pipe on which to tell the supervisor that ``init()`` succeeded.
    """
    from scoring.server.app import ScoringApp
    from scoring.server.batcher import Batcher
    from scoring.server.config import read_credential
    from scoring.server.runners import AsyncRunner, InlineRunner, Runner, make_runner
    from scoring.server.scorer import make_scorer
    from scoring.server.script import InitFailed

    log = logs.configure(settings.access_log, settings.log_level)
    scorer = make_scorer(settings)
    started = time.perf_counter()
    init_done = report_slow_init(log, scorer.source)
    try:
        scorer.init()
    except InitFailed as exc:
        cause = exc.__cause__
        import traceback

        log.event(
            "error",
            str(exc),
            event="init_failed",
            script=scorer.source,
            traceback="".join(traceback.format_exception(cause)) if cause else None,
        )
        return INIT_FAILED
    finally:
        init_done()
    log.event(
        "info",
        f"init() done in {time.perf_counter() - started:.3f} s",
        event="ready",
        script=scorer.source,
    )
    if ready_fd is not None:
        os.write(ready_fd, b"r")
        os.close(ready_fd)
    stats = Stats(settings.metrics_dir)
    sink = collector.Sink(
        settings.collect_dir,
        settings.collect_max_file_bytes,
        stats,
        endpoint=settings.endpoint_name,
        deployment=settings.deployment_name,
        rolling_rate=settings.collect_rolling_rate,
        payload_max_bytes=settings.collect_payload_max_bytes,
        spool_max_bytes=settings.collect_spool_max_bytes if settings.collect_destination else None,
    )
    collector.configure(sink)

    def wedged_inline() -> None:
        """The inline run() ignored its timeout: this worker is lost; the supervisor forks a
        new one (the requests queued on its connections are reset)."""
        log.event(
            "error",
            f"run() in {scorer.source} ignored its interruption at request_timeout_ms="
            f"{settings.request_timeout_ms} and is still running; replacing this worker",
            event="worker_wedged",
        )
        log.flush()
        os._exit(REPLACE_ME)

    runner: Runner | AsyncRunner
    if settings.max_batch_size > 1 and scorer.call_batch is not None:
        limited = settings.max_concurrent_requests_per_instance > 0
        runner = Batcher(
            scorer.call_batch,
            stats=stats,
            max_batch_size=settings.max_batch_size,
            max_batch_wait_ms=settings.max_batch_wait_ms,
            timeout_ms=settings.request_timeout_ms,
            slots=settings.slots_per_worker or 1,
            max_queue_wait_ms=settings.max_queue_wait_ms if limited else None,
            inline=(
                None
                if settings.run_in_thread
                else InlineRunner(settings.request_timeout_ms, wedged_inline)
            ),
        )
    else:
        runner = make_runner(
            settings.run_in_thread,
            settings.request_timeout_ms,
            settings.slots_per_worker or 1,
            settings.max_concurrent_requests_per_instance,
            settings.max_queue_wait_ms,
            wedged_inline,
        )
    app = ScoringApp(
        scorer,
        stats=stats,
        log=log,
        runner=runner,
        max_body=settings.max_request_body_bytes,
        bytes_in_flight=settings.bytes_in_flight_per_worker,
        collect=settings.collect,
        sampling_rate=settings.collect_sampling_rate,
        sink=sink,
        collections=settings.collect_collections,
        cors_origins=settings.cors_origins,
        credential=(
            read_credential(settings.internal_credential_file)
            if settings.internal_credential_file
            else None
        ),
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol(
            settings.max_request_header_bytes,
            settings.request_read_timeout_ms,
            settings.connections_per_worker,
        ),
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        backlog=2048,
    )
    server = DrainingServer(config)
    if isinstance(runner, Batcher):
        runner.connections = server.server_state.connections

    def replace_me() -> None:  # slots stuck past their timeout: drain, then exit REPLACE_ME
        server.should_exit = True

    app.on_wedged = replace_me
    server.run(sockets=[sock] if sock is not None else None)
    app.flush()
    sink.close()
    return REPLACE_ME if app.replacing else 0
