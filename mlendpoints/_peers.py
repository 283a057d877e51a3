"""Peer servers (Microsoft's ``azmlinfsrv``, MLServer, ...) in cached venvs of their own.

A peer's dependencies clash with ours (Flask/gunicorn pins, opentelemetry pins), so each
gets a venv under ``$ML_ENDPOINTS_CACHE/peers/<name>-<hash of its pins>``, installed from
PyPI by pip on first use and reused after. Different pin lists get different venvs, so the
benchmarks and the compat tests never rebuild each other's. The one copy: ``bench/`` and
``tests/support`` both import it.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mlendpoints.paths import cache_root

AZMLINFSRV = "azureml-inference-server-http==1.5.1"
"""Microsoft's inference server, the version the compatibility claims are checked against."""

#: Starts ``azmlinfsrv`` bound to 127.0.0.1: its ``amlserver`` entry point reads the host from
#: ``DEFAULT_HOST`` (the ``azmlinfsrv`` command always binds 0.0.0.0). Flags follow as argv.
AZMLINFSRV_LOOPBACK = (
    "import sys, azureml_inference_server_http.amlserver as a; "
    "a.DEFAULT_HOST = '127.0.0.1'; sys.argv[0] = 'azmlinfsrv'; a.run()"
)


def peer_python(name: str, packages: Sequence[str]) -> Path:
    """The python of venv ``name`` holding exactly ``packages`` (pip specs), built if missing.

    A lock file serialises concurrent builders; a stamp written last marks a complete venv,
    so an interrupted install is redone rather than half used.
    """
    pins = " ".join(packages)
    digest = hashlib.sha256(pins.encode()).hexdigest()[:10]
    root = cache_root() / "peers"
    venv = root / f"{name}-{digest}"
    py, stamp = venv / "bin" / "python", venv / ".peer-stamp"
    if py.exists() and stamp.exists() and stamp.read_text() == pins:
        return py
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{name}-{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if py.exists() and stamp.exists() and stamp.read_text() == pins:
            return py
        print(f"installing {name} ({pins}) into {venv} ...", file=sys.stderr, flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
            check=True,
        )
        stamp.write_text(pins)
    return py
