"""Start real processes (scoring server, router, peers) on loopback, for tests and benchmarks.

Processes bind 127.0.0.1 on a free port; readiness is polled, never slept on. On exit the
process gets SIGTERM (graceful drain) and, if it lingers, SIGKILL. Its output goes to a
log file so a failing test can show the tail. The one copy of these helpers: the tests
(tests/support) and the benchmarks (bench/) both import them from here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlendpoints.paths import REPO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    """A running process: its base URL, Popen handle and log file."""

    url: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_http(
    url: str,
    timeout: float = 30.0,
    popen: subprocess.Popen | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``popen`` exits."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(
                f"process exited with {popen.returncode} before {url} was ready:\n{tail}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
    raise TimeoutError(f"{url} not ready after {timeout}s ({last}):\n{tail}")


def stop(popen: subprocess.Popen, timeout: float = 15.0, *, group: bool = False) -> int:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code.

    ``group``: signal the process group (a process started with ``start_new_session=True``
    and its workers), not only the process.
    """

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(popen.pid, sig)
            else:
                popen.send_signal(sig)

    if popen.poll() is None:
        send(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            popen.wait()
    return popen.returncode


def serve_args(
    script: Path | str | None, model_dir: Path | str | None, *args: str, port: int | str = "{port}"
) -> list[str]:
    """Python arguments of `python -m scoring serve` on 127.0.0.1:PORT, then ARGS (the default
    PORT `{port}` is what `run_python` fills in)."""
    argv = ["-m", "scoring", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if script is not None:
        argv += ["--entry-script", str(script)]
    if model_dir is not None:
        argv += ["--model-dir", str(model_dir)]
    return [*argv, *args]


@contextlib.contextmanager
def running(
    argv: list[str],
    ready_url: str,
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = 60.0,
    new_session: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """ARGV running (output to LOG_PATH) from the moment READY_URL answers 200 until the
    block ends; then stopped (its process group too with NEW_SESSION)."""
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    try:
        wait_http(ready_url, timeout, popen, log_path)
        yield popen
    finally:
        stop(popen)


@contextlib.contextmanager
def run_python(
    args: list[str],
    *,
    ready_path: str = "/",
    env: dict[str, str] | None = None,
    port: int | None = None,
    timeout: float = 60.0,
) -> Iterator[Proc]:
    """Run ``python ARGS`` (``{port}`` in args is replaced) from the checkout until ready."""
    port = port or free_port()
    argv = [sys.executable, *[a.replace("{port}", str(port)) for a in args]]
    log = tempfile.NamedTemporaryFile(prefix="proc-", suffix=".log", delete=False)  # noqa: SIM115
    log.close()
    url = f"http://127.0.0.1:{port}"
    with running(
        argv,
        url + ready_path,
        Path(log.name),
        env={"PYTHONUNBUFFERED": "1", **(env or {})},
        timeout=timeout,
    ) as popen:
        yield Proc(url, port, popen, Path(log.name))
