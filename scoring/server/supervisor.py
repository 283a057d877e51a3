"""``python -m scoring serve``: start N worker processes that each load the model and serve.

Process model. The supervisor (this process) parses the settings, binds the listening
socket and forks the workers; it never imports the script. Each worker calls ``init()``
before it accepts a connection (so a worker that takes traffic is ready), then runs uvicorn
(uvloop + httptools) on the shared socket. Forking, rather than uvicorn's spawn-based
multiprocess supervisor, keeps cold start short (workers inherit the imported server) and
lets us treat a failed ``init()`` as fatal: uvicorn's supervisor would respawn such a worker
forever. Here the worker logs the script, the exception and the model folder's contents and
exits 3, and the supervisor stops the others and exits 3. A worker that crashes later is
respawned (at most 5 times a minute, then the supervisor gives up with exit 1).

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

import uvicorn

from scoring.common import logs
from scoring.server import collector
from scoring.server.config import Settings, SettingsError, load
from scoring.server.metrics import Stats
from scoring.server.uvicorn_http import DrainingServer, OneWriteProtocol

INIT_FAILED = 3
_MAX_CRASHES_PER_MINUTE = 5


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


class Supervisor:
    """Forks, watches and stops the worker processes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = logs.get_log()
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        self.exit_code = 0
        self.crashes: list[float] = []

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
        for index in range(s.workers):
            self._spawn(index, sock)
        deadline: float | None = None
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if self.stopping:
                    deadline = deadline or time.monotonic() + s.graceful_timeout_s + 5
                    if time.monotonic() > deadline:
                        self._signal_all(signal.SIGKILL)
                time.sleep(0.05)
                continue
            if pid not in self.children:
                continue
            index = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if code == INIT_FAILED:
                self.log.event(
                    "error",
                    f"worker {index} (pid {pid}): init failed (see the "
                    "worker's log line above); stopping",
                    event="stop",
                )
                self.exit_code = INIT_FAILED
                self._stop()
            else:
                self._respawn(index, pid, code, sock)
        sock.close()
        self.log.event("info", f"stopped (exit {self.exit_code})", event="stop")
        return self.exit_code

    def _respawn(self, index: int, pid: int, code: int, sock: socket.socket) -> None:
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < 60] + [now]
        if len(self.crashes) > _MAX_CRASHES_PER_MINUTE:
            self.log.event(
                "error",
                f"worker {index} (pid {pid}) exited with {code}; "
                f"{len(self.crashes)} crashes in a minute, giving up",
            )
            self.exit_code = 1
            self._stop()
            return
        self.log.event("error", f"worker {index} (pid {pid}) exited with {code}; restarting it")
        self._spawn(index, sock)

    def _spawn(self, index: int, sock: socket.socket) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                code = worker(self.settings, sock)
            except BaseException as exc:  # never return into the supervisor's loop
                logs.get_log().event("error", f"worker crashed: {type(exc).__name__}: {exc}")
            finally:
                logs.get_log().flush()
                os._exit(code)
        self.children[pid] = index

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
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


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


def worker(settings: Settings, sock: socket.socket | None) -> int:
    """One worker: ``init()``, then serve until SIGTERM. Returns the exit code."""
    from scoring.server.app import ScoringApp
    from scoring.server.config import read_credential
    from scoring.server.runners import make_runner
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
    stats = Stats(settings.metrics_dir)
    sink = collector.Sink(settings.collect_dir, settings.collect_max_file_bytes, stats)
    collector.configure(sink)
    app = ScoringApp(
        scorer,
        stats=stats,
        log=log,
        runner=make_runner(
            settings.run_in_thread,
            settings.request_timeout_ms,
            settings.slots_per_worker or 1,
            settings.max_concurrent_requests_per_instance,
            settings.max_queue_wait_ms,
        ),
        max_body=settings.max_request_body_bytes,
        collect=settings.collect,
        sampling_rate=settings.collect_sampling_rate,
        sink=sink,
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
        http=OneWriteProtocol,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        backlog=2048,
    )
    server = DrainingServer(config)
    server.run(sockets=[sock] if sock is not None else None)
    app.flush()
    return 0
