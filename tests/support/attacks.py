"""Scoring scripts that attack the server (tests/hardening), written where a test wants them.

Each is a small Azure-style script: ``init()`` and ``run(raw_data)``. A body without an
attack key answers ``{"pid": <worker pid>}``, so a test can tell workers apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from mlendpoints._procs import Proc
from scoring.common.http_errors import error_body
from tests.support.router import metric as sample

ATTACKER = """
import ctypes, json, math, os, pathlib, signal, sys, time

import numpy as np


def init():
    pass


def run(raw_data):
    body = json.loads(raw_data)
    if body.get("mark"):
        pathlib.Path(body["mark"]).touch()
    how = body.get("attack")
    if how == "hang":  # never returns (interruptible: time.sleep)
        while True:
            time.sleep(0.05)
    if how == "swallow":  # catches even the server's RunInterrupted and goes on
        while True:
            try:
                time.sleep(0.05)
            except BaseException:
                pass
    if how == "os_exit":
        os._exit(1)
    if how == "os_exit_3":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "sys_exit":
        sys.exit(3)
    if how == "nan":
        return {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.array([np.nan, 2.0])}
    if how == "deep":
        out = []
        for _ in range(100_000):
            out = [out]
        return out
    if how == "hold":  # keep the decoded body alive a while (its memory is in use)
        time.sleep(body.get("seconds", 0.2))
        return {"pid": os.getpid(), "n": len(body.get("data", []))}
    return {"pid": os.getpid()}
"""


def write_attacker(folder: Path) -> Path:
    """The attacking script in ``folder``; returns its path."""
    path = folder / "attacker.py"
    path.write_text(ATTACKER)
    return path


def metric(proc: Proc, name: str, **labels: str) -> float:
    """One sample from the server's ``/metrics`` (0 when absent)."""
    return sample(httpx.get(proc.url + "/metrics", timeout=10).text, name, **labels)


def events(proc: Proc, event: str) -> list[dict]:
    """The server's JSON log lines with ``"event": event``."""
    out = []
    for line in proc.log().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


def is_error(resp: httpx.Response, status: int, message: str) -> bool:
    """``resp`` is the server's JSON error (whatever fields the shared body carries)."""
    body = resp.json()
    return resp.status_code == status and body == json.loads(
        error_body(message, body["request_id"])
    )
