"""Helpers for benchmarks: starting/stopping servers, wrk runs, CPU time, load average.

The one wrk runner every benchmark uses. Traffic only goes to 127.0.0.1; every wait is
bounded in time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlendpoints._procs import stop

__all__ = [
    "Result",
    "Started",
    "group_cpu_seconds",
    "loadavg",
    "post_ok",
    "start",
    "wrk",
]

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""


_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``.

    On a machine shared with other work, req/s and latency mostly measure the contention;
    CPU time per request measures the server itself.
    """
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])  # utime stime
    return total / _TICK


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def post_ok(url: str, body: bytes, timeout: float = 2.0) -> bool:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@dataclass
class Started:
    popen: subprocess.Popen
    cold_start_s: float
    log: Path


def start(
    argv: list[str],
    url: str,
    body: bytes,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> Started:
    """Start a server; cold start = process start until the first 200 to ``POST url``."""
    fh = log.open("wb")
    t0 = time.perf_counter()
    popen = subprocess.Popen(
        argv,
        stdout=fh,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(
                f"{argv[0]} exited with {popen.returncode}; see {log}:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        if post_ok(url, body, timeout=1.0):
            return Started(popen, time.perf_counter() - t0, log)
        time.sleep(0.01)
    stop(popen, 20.0, group=True)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s; see {log}")


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us_per_request: float = 0.0


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    url: str,
    body_file: Path,
    conns: int,
    seconds: float,
    workdir: Path,
    pgid: int | None = None,
    headers: dict[str, str] | None = None,
) -> Result:
    """One wrk run: POST ``body_file`` to ``url`` over ``conns`` keep-alive connections, with
    extra ``headers`` (e.g. a bench key); with ``pgid``, also the CPU time per request of that
    process group (a server started in its own session: the server and its workers).

    Errors are non-2xx answers plus socket errors (wrk's timeout is 10 s: a slow answer is
    not an error)."""
    cpu_before = group_cpu_seconds(pgid) if pgid else 0.0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    lua = workdir / "post.lua"
    lua.write_text(LUA)
    threads = min(2, conns)
    extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(conns),
            "-d",
            f"{seconds:g}s",
            "--latency",
            "--timeout",
            "10s",
            *extra,
            "-s",
            str(lua),
            url,
        ],
        env={**os.environ, "BENCH_BODY": str(body_file)},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock_err = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock_err:
        errors += sum(int(g) for g in sock_err.groups())
    cpu = (group_cpu_seconds(pgid) - cpu_before) / max(total, 1) * 1e6 if pgid else 0.0
    return Result(rps, p50, p99, errors, total, round(cpu, 1))
