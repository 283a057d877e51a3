"""Start real processes (scoring server, router) on loopback for tests and benchmarks.

Processes bind 127.0.0.1 on a free port; readiness is polled, never slept on. On exit the
process gets SIGTERM (graceful drain) and, if it lingers, SIGKILL. Its output goes to a
log file so a failing test can show the tail.
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

REPO = Path(__file__).resolve().parents[1]


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


def stop(popen: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    return popen.returncode


@contextlib.contextmanager
def run_python(
    args: list[str],
    *,
    ready_path: str = "/",
    env: dict[str, str] | None = None,
    port: int | None = None,
    timeout: float = 60.0,
) -> Iterator[Proc]:
    """Run ``python -m scoring ARGS --port P`` (``{port}`` in args is replaced) until ready."""
    port = port or free_port()
    argv = [sys.executable, *[a.replace("{port}", str(port)) for a in args]]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log = tempfile.NamedTemporaryFile(prefix="proc-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log.name)
    popen = subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + ready_path, timeout, popen, log_path)
        yield Proc(url, port, popen, log_path)
    finally:
        stop(popen)
        log.close()
