"""Data collection: a script's ``Collector(name).collect(data, context)`` and the server's
automatic ``model_inputs``/``model_outputs``, written as rolling JSONL files.

Layout and records as Azure's data collector, so Azure monitoring code reads them unchanged:
``<dir>/<endpoint>/<deployment>/<collection>/yyyy/MM/dd/HH/<pid>-<time>-<n>.jsonl``, a new
file every ``rolling_rate`` (minute, hour, day) and past ``max_file_bytes``. One record per
line, CloudEvents-style::

    {"specversion":"1.0","id":"…","source":"/endpoints/<e>/deployments/<d>",
     "type":"azureml.inference.model_inputs","datacontenttype":"application/json",
     "time":"2026-…Z","correlationid":"…","xrequestid":"…","contentrange":"bytes 0-41/42",
     …, "data": …}

A payload over ``payload_max_bytes`` is stored in its own file beside the record, which then
carries ``"dataref": "<path relative to dir>"`` instead of ``data`` (Azure does this past 4 MB).

Records are buffered in memory and written by the server every 0.5 s, never on the request
path. Sampling is decided once per request, so a request's inputs and outputs are kept or
dropped together; they are also written together or not at all. Nothing here ever fails a
request: a full disk, an unwritable folder or unserialisable data drops whole records,
counted by reason (``scoring_collection_dropped_total{reason}``) and logged at most every
30 s; ``scoring_collected_records_total`` counts exactly the lines on disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from scoring.common.logs import get_log, utc_timestamp
from scoring.common.request_id import new_request_id
from scoring.server.config import COLLECTION_NAME
from scoring.server.jsonable import jsonable
from scoring.server.metrics import Stats

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
    """This process's writer of collected records: buffered, written in whole records.

    Each flush writes a batch per file with one ``os.write`` to an ``O_APPEND`` descriptor;
    a short or failed write is cut back (``ftruncate``) to the file's last good size, and the
    batch is retried record by record, so a full disk drops whole records (counted by reason)
    and never leaves a partial line. A request's ``model_inputs`` and ``model_outputs`` are a
    group: if the output line cannot be written, the input line is cut back too.
    """

    def __init__(
        self,
        root: Path,
        max_file_bytes: int = 10 * 1024 * 1024,
        stats: Stats | None = None,
        *,
        endpoint: str = "local",
        deployment: str = "default",
        rolling_rate: str = "hour",
        payload_max_bytes: int = 4 * 1024 * 1024,
        spool_max_bytes: int | None = None,
    ) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.stats = stats
        self.endpoint = endpoint
        self.deployment = deployment
        self.source = f"/endpoints/{endpoint}/deployments/{deployment}"
        self.period = PERIOD[rolling_rate]
        self.payload_max_bytes = payload_max_bytes
        self.spool_max_bytes = spool_max_bytes
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._pending: list[list[tuple[str, bytes]]] = []
        self._files: dict[str, _OpenFile] = {}
        self._seq = 0
        self._last_warning = 0.0
        self.dropped: dict[str, int] = {}

    # -- queueing (request path: string building and a list append) ---------------------
    def record(
        self, collection: str, data: Any, correlation_id: str | None, request_id: str | None
    ) -> None:
        """Queue one record of a script's ``Collector`` (``data`` is serialised here)."""
        try:
            body = json.dumps(data, default=_default)
        except Exception as exc:  # unserialisable data: count, never raise into run()
            self._drop(1, "unserialisable", f"collection {collection!r}: data is not JSON ({exc})")
            return
        kind = f"{type(data).__module__}.{type(data).__qualname__}"
        line = self._envelope(collection, body, correlation_id, request_id, kind)
        with self._lock:
            self._pending.append([(collection, line)])

    def record_pair(self, request_id: str, input_json: str | None, output_json: str | None) -> None:
        """Queue a request's ``model_inputs`` and ``model_outputs`` (already JSON, one line
        each; ``request_id`` is sanitised, so it needs no escaping): written together or not
        at all. None leaves that collection out (only the other one is enabled)."""
        group = [
            (name, self._envelope(name, data, request_id, request_id))
            for name, data in (("model_inputs", input_json), ("model_outputs", output_json))
            if data is not None
        ]
        with self._lock:
            self._pending.append(group)

    def _envelope(
        self,
        collection: str,
        data: str,
        correlation_id: str | None,
        request_id: str | None,
        kind: str = "json",
    ) -> bytes:
        """Azure's data collector record (CloudEvents 1.0 fields plus Azure's own)."""
        size = len(data.encode())
        head = (
            f'{{"specversion":"1.0","id":"{uuid.uuid4()}","source":{json.dumps(self.source)},'
            f'"type":"azureml.inference.{collection}","datacontenttype":"application/json",'
            f'"time":"{utc_timestamp()}","correlationid":{json.dumps(correlation_id)},'
            f'"xrequestid":{json.dumps(request_id)},"modelversion":"default",'
            f'"collectdatatype":{json.dumps(kind)},"agent":"ml-endpoints",'
            f'"contentrange":"bytes 0-{max(size - 1, 0)}/{size}"'
        )
        if size > self.payload_max_bytes:
            # Marked for flush(): the payload goes to its own file beside the record.
            return f'{head},"dataref":null}}\n'.encode() + _PAYLOAD + data.encode()
        return f'{head},"data":{data}}}\n'.encode()

    # -- writing (timer, off the request path) --------------------------------------------
    def flush(self) -> None:
        """Write queued records to their files; what cannot be written is dropped, counted."""
        with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, []
        full = False
        if self.spool_max_bytes is not None:
            kept = self._within_spool(pending)
            full, pending = len(kept) < len(pending), kept
        groups = [g for g in (self._externalise(group) for group in pending) if g is not None]
        if groups and not self._write_groups(groups):
            for group in groups:  # the batch failed: save what fits, one group at a time
                if not self._write_groups([group]):
                    self._drop_group(group)
                    continue
        if full:
            self._roll_written()

    def _within_spool(
        self, pending: list[list[tuple[str, bytes]]]
    ) -> list[list[tuple[str, bytes]]]:
        """The groups that fit in the spool's limit; the rest dropped (``spool_full``)."""
        from scoring.server.shipper import spool_usage

        assert self.spool_max_bytes is not None
        room = self.spool_max_bytes - spool_usage(self.root)
        keep = []
        for group in pending:
            size = sum(len(line) for _, line in group)
            if size > room:
                self._drop(
                    len(group),
                    "spool_full",
                    f"the spool {str(self.root)!r} holds its limit of {self.spool_max_bytes} "
                    "bytes (is the destination reachable?); records dropped",
                )
                continue
            room -= size
            keep.append(group)
        return keep

    def _roll_written(self) -> None:
        """Start a new file for every collection whose open file holds records: the shipper
        ships only files their writer has moved on from, so a spool filled by open files
        (a spool smaller than a file, or a destination that was down) would otherwise stay
        full, and keep dropping, until the rolling period ends."""
        for name in [n for n, f in self._files.items() if f.size > 0]:
            self.close_file(name)
            self._file_for(name, 0)

    def _write_groups(self, groups: list[list[tuple[str, bytes]]]) -> bool:
        """Append ``groups`` (one write per file); on any failure cut every file back."""
        by_name: dict[str, list[bytes]] = {}
        for group in groups:
            for name, line in group:
                by_name.setdefault(name, []).append(line)
        written: list[tuple[_OpenFile, int]] = []
        try:
            for name, lines in by_name.items():
                data = b"".join(lines)
                f = self._file_for(name, len(data))
                start = f.size
                written.append((f, start))
                if os.write(f.fd, data) != len(data):
                    raise OSError(errno.ENOSPC, "short write")
                f.size += len(data)
        except OSError as exc:
            for f, start in written:
                with contextlib.suppress(OSError):
                    os.ftruncate(f.fd, start)
                f.size = start
            self._last_error = exc
            return False
        if self.stats is not None:
            for name, lines in by_name.items():
                self.stats.collected[name] = self.stats.collected.get(name, 0) + len(lines)
        return True

    def _externalise(self, group: list[tuple[str, bytes]]) -> list[tuple[str, bytes]] | None:
        """Store large payloads beside their records (Azure's ``dataref``); None = dropped."""
        if not any(_PAYLOAD in line for _, line in group):
            return group
        out = []
        try:
            for name, line in group:
                record, sep, payload = line.partition(_PAYLOAD)
                if sep:
                    folder = self._folder(name)
                    folder.mkdir(parents=True, exist_ok=True)
                    path = folder / f"{uuid.uuid4()}.json"
                    _write_whole(path, payload)
                    ref = json.dumps(str(path.relative_to(self.root)))
                    record = record.replace(b'"dataref":null', b'"dataref":' + ref.encode())
                out.append((name, record))
        except OSError as exc:
            self._last_error = exc
            self._drop_group(group)
            return None
        return out

    def _folder(self, name: str) -> Path:
        hour = time.strftime("%Y/%m/%d/%H", time.gmtime())
        return self.root / self.endpoint / self.deployment / name / hour

    def _file_for(self, name: str, size: int) -> _OpenFile:
        period = int(time.time()) // self.period
        current = self._files.get(name)
        if current is None or current.period != period or current.size + size > self.max_file_bytes:
            if current is not None:
                self.close_file(name)
            folder = self._folder(name)
            folder.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            path = folder / f"{RUN}-{self.pid}-{int(time.time())}-{self._seq}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            current = self._files[name] = _OpenFile(path, fd, period)
        return current

    def close_file(self, name: str) -> None:
        """Close a collection's current file (it rolled, or the worker stops)."""
        f = self._files.pop(name, None)
        if f is not None:
            with contextlib.suppress(OSError):
                os.close(f.fd)

    def close(self) -> None:
        """Flush and close every file (the worker stops)."""
        self.flush()
        for name in list(self._files):
            self.close_file(name)

    def _drop_group(self, group: list[tuple[str, bytes]]) -> None:
        exc = getattr(self, "_last_error", None)
        full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        self._drop(
            len(group),
            "disk_full" if full else "write_error",
            f"cannot write under {str(self.root)!r} ({exc}); records dropped",
        )

    def _drop(self, count: int, reason: str, why: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        if self.stats is not None:
            self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + count
        now = time.monotonic()
        if now - self._last_warning > 30:
            self._last_warning = now
            get_log().event(
                "warning",
                f"data collection failed: {why}",
                event="collection_failure",
                reason=reason,
                dropped_total=sum(self.dropped.values()),
            )


class _OpenFile:
    """A collection's current file: descriptor, size written so far, rolling period."""

    __slots__ = ("fd", "path", "period", "size")

    def __init__(self, path: Path, fd: int, period: int) -> None:
        self.path = path
        self.fd = fd
        self.period = period
        self.size = os.fstat(fd).st_size


def _write_whole(path: Path, data: bytes) -> None:
    """Write a payload file completely or not at all (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


RUN = uuid.uuid4().hex[:8]
"""This container start's id, first in every file name (set at import, before the fork): the
shipper takes files of another run as closed."""
PERIOD = {"minute": 60, "hour": 3600, "day": 86400}
_PAYLOAD = b"\x00payload\x00"  # separates a large record from its payload until flush()


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
        if not COLLECTION_NAME.fullmatch(name or ""):
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
