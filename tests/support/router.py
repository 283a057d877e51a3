"""Helpers of the router's real-socket tests (tests/http, tests/hardening): test keys, an echo
upstream process, a router process on a config file, the config shape, Prometheus samples,
bounded polling, raw HTTP/1.1 responses, and a transport stub to drive one ``HttpProtocol``
in-process."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from mlendpoints._procs import Proc, free_port, run_python

KEY1, KEY2 = "primary-key-for-tests-0123456789", "secondary-key-for-tests-9876543210"
SIGNING = "token-signing-key-for-tests-0123456789abcdef"
SECRET_ENV = {
    "ML_ENDPOINTS_PRIMARY_KEY": KEY1,
    "ML_ENDPOINTS_SECONDARY_KEY": KEY2,
    "ML_ENDPOINTS_TOKEN_SIGNING_KEY": SIGNING,
}
AUTH1 = {"Authorization": f"Bearer {KEY1}"}


@contextlib.contextmanager
def upstream(name: str, *options: str) -> Iterator[Proc]:
    """An echo upstream; ``options`` are its flags (``--fail-every N``, ``--delay-ms MS``)."""
    args = ["tests/assets/echo_upstream.py", "--name", name, "--port", "{port}", *options]
    with run_python(args) as p:
        yield p


@contextlib.contextmanager
def router(
    tmp: Path, config: dict, env: dict[str, str] | None = None, extra: list[str] | None = None
) -> Iterator[tuple[Proc, Path]]:
    """A router process on ``config`` (written to a file the test may rewrite)."""
    path = tmp / f"router-{free_port()}.json"
    path.write_text(json.dumps(config))
    args = [
        "-m",
        "scoring",
        "router",
        "--config",
        str(path),
        "--port",
        "{port}",
        "--host",
        "127.0.0.1",
        *(extra or []),
    ]
    with run_python(args, ready_path="/ready", env={**SECRET_ENV, **(env or {})}) as p:
        yield p, path


def cfg(deployments: dict[str, str], traffic: dict[str, int], **kw: object) -> dict:
    return {
        "endpoint_name": "diabetes",
        "auth_mode": kw.pop("auth_mode", "key"),
        "deployments": {n: {"url": u} for n, u in deployments.items()},
        "traffic": traffic,
        **kw,
    }


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(check, what: str, timeout: float = 15.0, every: float = 0.05):
    """Poll ``check()`` every EVERY seconds until it returns a truthy value (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response off a raw socket (content-length framed, as the router always sends)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(rest) < size:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    del buf[:]
    buf += rest[size:]
    return int(lines[0].split()[1]), headers, rest[:size]


class StubTransport:
    """What an in-process ``HttpProtocol`` writes, and whether it closed (no socket)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...
