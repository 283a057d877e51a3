"""Microsoft's inference server (``azmlinfsrv``) beside ours, for the compat tier.

The peer runs from a cached venv of its own (``mlendpoints._peers``), installed from PyPI on
first use, with the same versions of the model libraries as ours (read from constraints.txt)
and the ``azureml-*`` packages Azure's scripts import. It is started through its ``amlserver``
entry point bound to 127.0.0.1, from the script's folder (its app root).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlendpoints._peers import AZMLINFSRV, AZMLINFSRV_LOOPBACK, peer_python
from mlendpoints._procs import Proc, free_port, running
from mlendpoints.paths import REPO

SHARED = ("inference-schema", "joblib", "mlflow-skinny", "numpy", "pandas", "scikit-learn")
AZURE_PACKAGES = ("azureml-ai-monitoring==1.0.0", "azureml-contrib-services==1.62.0")


def peer_packages() -> list[str]:
    """Microsoft's server, Azure's script packages and our pins of the shared libraries."""
    pins = [
        line.strip()
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.split("==")[0].strip() in SHARED
    ]
    return [AZMLINFSRV, *AZURE_PACKAGES, *pins]


def azmlinfsrv_python() -> Path:
    """The peer venv's python (built on first use: a few minutes, then cached)."""
    return peer_python("azmlinfsrv-compat", peer_packages())


@contextlib.contextmanager
def serve_azmlinfsrv(
    script: Path, model_dir: Path | None, env: dict[str, str] | None = None
) -> Iterator[Proc]:
    """``azmlinfsrv --entry_script SCRIPT`` on 127.0.0.1, ready when ``GET /`` answers."""
    port = free_port()
    argv = [str(azmlinfsrv_python()), "-c", AZMLINFSRV_LOOPBACK, "--entry_script", script.name]
    argv += ["--port", str(port)]
    if model_dir is not None:
        argv += ["--model_dir", str(model_dir)]
    log = Path(tempfile.mkstemp(prefix="azmlinfsrv-", suffix=".log")[1])
    url = f"http://127.0.0.1:{port}"
    with running(
        argv, url + "/", log, env={"PYTHONUNBUFFERED": "1", **(env or {})}, cwd=script.parent
    ) as popen:
        yield Proc(url, port, popen, log)
