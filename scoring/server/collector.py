"""Data collection: a script's ``Collector(name).collect(data, context)`` and the server's
automatic ``model_inputs``/``model_outputs``, written as rolling JSONL files.

Layout (as Azure's data collector): ``<dir>/<collection>/YYYY/MM/DD/HH/<pid>-<n>.jsonl``;
a file rolls over every hour and past ``max_file_bytes``. One record per line::

    {"collection": "model_inputs", "request_id": "…", "correlation_id": "…",
     "time": "2026-…Z", "data": …}

Records are buffered in memory and written by the server every 0.5 s, never on the request
path. Sampling is decided once per request, so a request's inputs and outputs are kept or
dropped together. Nothing here ever fails a request: a full disk, an unwritable folder or
unserialisable data is counted (``scoring_collection_failures_total``) and logged at most
every 30 s.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from scoring.common.logs import get_log, utc_timestamp
from scoring.common.request_id import new_request_id
from scoring.server.jsonable import jsonable
from scoring.server.metrics import Stats

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_local = threading.local()


def set_request(request_id: str | None, sampled: bool) -> None:
    """Bind the request being scored on this thread (correlation id and sampling choice)."""
    _local.request_id = request_id
    _local.sampled = sampled


def current_request_id() -> str | None:
    return getattr(_local, "request_id", None)


class BasicCorrelationContext:
    """Correlates records of one request across collections (Azure's class of that name)."""

    def __init__(self, id: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.id = id or current_request_id() or new_request_id()
        self.headers = headers or {}

    def get_id(self) -> str:
        return self.id

    def get_headers(self) -> dict[str, str]:
        return self.headers

    def __repr__(self) -> str:
        return f"BasicCorrelationContext(id={self.id!r})"


def _default(value: Any) -> Any:
    """JSON for what scripts collect: DataFrames as records, arrays as lists, else ``str``."""
    plain = jsonable(value)
    return str(value) if plain is value else plain


class Sink:
    """This process's writer of collected records (buffered, rolling files)."""

    def __init__(
        self, root: Path, max_file_bytes: int = 10 * 1024 * 1024, stats: Stats | None = None
    ) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.stats = stats
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str]] = []
        self._files: dict[str, tuple[str, Path, int]] = {}  # collection -> (hour, path, size)
        self._seq = 0
        self._last_warning = 0.0
        self.failed = 0

    def add(self, collection: str, line: str) -> None:
        with self._lock:
            self._pending.append((collection, line))

    def record(
        self, collection: str, data: Any, correlation_id: str | None, request_id: str | None
    ) -> None:
        """Queue one record of a script's ``Collector`` (``data`` is serialised here)."""
        try:
            body = json.dumps(data, default=_default)
        except Exception as exc:  # unserialisable data: count, never raise into run()
            self._fail(1, f"collection {collection!r}: data is not serialisable ({exc})")
            return
        line = (
            f'{{"collection":{json.dumps(collection)},"request_id":{json.dumps(request_id)},'
            f'"correlation_id":{json.dumps(correlation_id)},"time":"{utc_timestamp()}",'
            f'"data":{body}}}\n'
        )
        self.add(collection, line)

    def record_pair(self, request_id: str, input_json: str, output_json: str) -> None:
        """Queue a request's ``model_inputs`` and ``model_outputs`` (already JSON, one line
        each; ``request_id`` is sanitised, so it needs no escaping)."""
        head = (
            f'"request_id":"{request_id}","correlation_id":"{request_id}",'
            f'"time":"{utc_timestamp()}","data":'
        )
        with self._lock:
            self._pending.append(
                ("model_inputs", f'{{"collection":"model_inputs",{head}{input_json}}}\n')
            )
            self._pending.append(
                ("model_outputs", f'{{"collection":"model_outputs",{head}{output_json}}}\n')
            )

    def flush(self) -> None:
        """Write queued records to their files; failures are counted and logged."""
        with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, []
        by_name: dict[str, list[str]] = {}
        for name, line in pending:
            by_name.setdefault(name, []).append(line)
        for name, lines in by_name.items():
            data = "".join(lines).encode()
            try:
                path = self._file_for(name, len(data))
                with open(path, "ab") as fh:
                    fh.write(data)
            except OSError as exc:
                self._fail(
                    len(lines),
                    f"collection {name!r}: cannot write under "
                    f"{str(self.root)!r} ({exc}); records dropped",
                )
                continue
            if self.stats is not None:
                self.stats.collected[name] = self.stats.collected.get(name, 0) + len(lines)

    def _file_for(self, name: str, size: int) -> Path:
        hour = time.strftime("%Y/%m/%d/%H", time.gmtime())
        current = self._files.get(name)
        if current is None or current[0] != hour or current[2] + size > self.max_file_bytes:
            folder = self.root / name / hour
            folder.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            path = folder / f"{self.pid}-{int(time.time())}-{self._seq}.jsonl"
            current = (hour, path, 0)
        self._files[name] = (hour, current[1], current[2] + size)
        return current[1]

    def _fail(self, count: int, why: str) -> None:
        self.failed += count
        if self.stats is not None:
            self.stats.collection_failures += count
        now = time.monotonic()
        if now - self._last_warning > 30:
            self._last_warning = now
            get_log().event(
                "warning",
                f"data collection failed: {why}",
                event="collection_failure",
                failures_total=self.failed,
            )


_sink: Sink | None = None


def configure(sink: Sink | None) -> None:
    """Set (or clear) this process's sink; called by the server in each worker."""
    global _sink
    _sink = sink


class Collector:
    """``Collector(name=...).collect(data, context)`` as in ``azureml.ai.monitoring``.

    ``data`` may be a pandas DataFrame (stored as records), a numpy array, or anything
    JSON-serialisable. Returns the correlation context so a script can pass it on to its
    outputs collector. Never raises.
    """

    def __init__(self, name: str, on_error: Any = None, **_: Any) -> None:
        if not _NAME.fullmatch(name or ""):
            raise ValueError(f"Collector name {name!r} must be 1-128 of [A-Za-z0-9_.-]")
        self.name = name
        self.on_error = on_error

    def collect(
        self, data: Any, correlation_context: BasicCorrelationContext | None = None
    ) -> BasicCorrelationContext:
        context = correlation_context or BasicCorrelationContext()
        out = _sink
        if out is not None and getattr(_local, "sampled", True):
            try:
                out.record(self.name, data, context.id, current_request_id())
            except Exception as exc:  # belt and braces: collection never fails run()
                if self.on_error is not None:
                    self.on_error(exc)
        return context
