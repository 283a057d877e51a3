"""Structured logs, the one format of both programs: a JSON object per line on stdout.

Request lines (the inference server's access log) and event lines (start, stop, reload,
errors with their tracebacks) carry ``time`` (``utc_timestamp``), ``level``, ``event`` and
the process id (``worker``).

Request lines are buffered and written every 0.2 s (or when 64 KiB pile up) with one
``os.write``: a write per request would cost a syscall each at 10k req/s. Event lines
(errors, tracebacks, start/stop) flush the buffer first and go out at once, so order holds.
Request ids are sanitised by ``request_id`` and routes come from a fixed set, so request
lines are formatted without escaping.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any

_FLUSH_BYTES = 64 * 1024
_second: tuple[int, str] = (-1, "")  # the last whole second and its text


def utc_timestamp() -> str:
    """Now as ``2026-12-07T19:21:42.123Z`` (UTC, milliseconds); the text up to the second is
    formatted once a second."""
    global _second
    now = time.time()
    sec = int(now)
    second = _second
    if second[0] != sec:
        second = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{second[1]}.{int((now - sec) * 1000):03d}Z"


class Log:
    """This process's log writer (stdout by default)."""

    def __init__(self, fd: int = 1, access: bool = True) -> None:
        self.fd = fd
        self.access_enabled = access
        self.pid = os.getpid()
        self._buf: list[str] = []
        self._size = 0
        self._events = threading.Lock()  # events may come from a helper thread (slow init)

    def access(
        self,
        request_id: str,
        method: str,
        path: str,
        status: int,
        latency_ms: float,
        run_ms: float | None,
    ) -> None:
        """Record one finished request (buffered)."""
        run = "null" if run_ms is None else f"{run_ms:.3f}"
        line = (
            f'{{"time":"{utc_timestamp()}","level":"info","event":"request",'
            f'"request_id":"{request_id}","method":"{method}","path":"{path}",'
            f'"status":{status},"latency_ms":{latency_ms:.3f},"run_ms":{run},'
            f'"worker":{self.pid}}}\n'
        )
        self._buf.append(line)
        self._size += len(line)
        if self._size > _FLUSH_BYTES:
            self.flush()

    def event(self, level: str, message: str, **fields: Any) -> None:
        """Write a server event now (flushing buffered request lines first)."""
        record = {
            "time": utc_timestamp(),
            "level": level,
            "event": fields.pop("event", "server"),
            "message": message,
            "worker": self.pid,
            **fields,
        }
        line = json.dumps(record, default=str) + "\n"
        with self._events:
            self._buf.append(line)
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        data = "".join(self._buf).encode("utf-8", "replace")
        self._buf.clear()
        self._size = 0
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except OSError:
            pass  # stdout gone (pipe closed): nothing sensible left to do with logs


_log: Log | None = None


def get_log() -> Log:
    """The process-wide log (created on first use, re-created after fork)."""
    global _log
    if _log is None or _log.pid != os.getpid():
        _log = Log(access=_log.access_enabled if _log else True)
    return _log


def configure(access: bool, level: str) -> Log:
    """Route ``logging`` (uvicorn, scripts) through JSON lines and set the access log."""
    log = get_log()
    log.access_enabled = access
    root = logging.getLogger()
    root.handlers[:] = [_JsonHandler()]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    return log


class _JsonHandler(logging.Handler):
    """Turns ``logging`` records into ``Log.event`` lines (tracebacks included)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                fields["traceback"] = logging.Formatter().formatException(record.exc_info)
            get_log().event(record.levelname.lower(), record.getMessage(), **fields)
        except Exception:  # a log line must never take the server down
            print(record.getMessage(), file=sys.stderr)
