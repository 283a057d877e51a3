"""Helpers the scoring-server tests share: train the sample model, start the server."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from mlendpoints._procs import Proc, run_python, serve_args
from mlendpoints.paths import REPO, SAMPLE

SCRIPTS = Path(__file__).parents[1] / "assets" / "scripts"


def train_sample(out: Path, version: int = 1) -> Path:
    """Train the sample diabetes model with its real CLI; returns the model folder."""
    subprocess.run(
        [sys.executable, str(SAMPLE / "train.py"), "--out", str(out), "--version", str(version)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    return out


@contextlib.contextmanager
def serve(
    script: Path | None,
    model_dir: Path | None,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[Proc]:
    """``python -m scoring serve`` on 127.0.0.1, ready when a worker's init() is done."""
    argv = serve_args(script, model_dir, *args)
    with run_python(argv, ready_path="/ready", env=env, timeout=timeout) as proc:
        yield proc


def error_json(message: str, request_id: str) -> dict[str, str]:
    """The JSON error body both programs answer with: ``message`` is the field Azure ML's
    clients read, ``error`` ours; both carry the same text."""
    return {"error": message, "message": message, "request_id": request_id}
