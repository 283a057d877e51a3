"""Helpers of the HTTPS tests: a throwaway CA, certificate files, a TLS router process and
client contexts that verify against a CA (no test turns verification off)."""

from __future__ import annotations

import contextlib
import json
import ssl
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components._tls import make_ca, make_server_cert
from mlendpoints._procs import Proc, free_port, running
from tests.support.router import SECRET_ENV


@dataclass
class Ca:
    """A test CA: its PEM certificate and key."""

    cert: bytes
    key: bytes

    @classmethod
    def new(cls, name: str = "ml-endpoints test CA") -> Ca:
        return cls(*make_ca(name))

    def issue(self, folder: Path, names: tuple[str, ...] = ("localhost",)) -> tuple[Path, Path]:
        """Write a server certificate for ``names`` and 127.0.0.1 into ``folder``
        (``tls.crt``/``tls.key``, as a kubernetes.io/tls Secret mounts them)."""
        cert, key = make_server_cert(self.cert, self.key, names, ["127.0.0.1"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tls.crt").write_bytes(cert)
        (folder / "tls.key").write_bytes(key)
        return folder / "tls.crt", folder / "tls.key"

    def client(self) -> ssl.SSLContext:
        """A client context that trusts only this CA and checks host names."""
        return ssl.create_default_context(cadata=self.cert.decode())


@dataclass
class TlsRouter:
    """A router process serving HTTPS on ``port`` and /metrics on ``metrics_port``."""

    proc: Proc
    config_path: Path
    metrics_port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.proc.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@contextlib.contextmanager
def tls_router(tmp: Path, config: dict, env: dict[str, str] | None = None) -> Iterator[TlsRouter]:
    """A router on ``config`` plus ``metrics_port`` (ready when /metrics answers there, as
    the main port speaks only TLS)."""
    port, metrics_port = free_port(), free_port()
    path = tmp / f"router-{port}.json"
    path.write_text(json.dumps({**config, "metrics_port": metrics_port}))
    log = Path(tempfile.mkstemp(prefix="router-", suffix=".log")[1])
    argv = [sys.executable, "-m", "scoring", "router", "--config", str(path)]
    argv += ["--port", str(port), "--host", "127.0.0.1"]
    ready = f"http://127.0.0.1:{metrics_port}/metrics"
    with running(argv, ready, log, env={"PYTHONUNBUFFERED": "1", **SECRET_ENV, **(env or {})}) as p:
        yield TlsRouter(Proc(f"https://127.0.0.1:{port}", port, p, log), path, metrics_port)
