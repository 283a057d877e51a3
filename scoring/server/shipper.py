"""Ships collected files from the local spool to their destination: an S3 bucket
(``s3://bucket/prefix``, any S3 API; boto3 is imported only then) or a folder (a mounted
PersistentVolumeClaim).

Runs as a thread of the supervisor, not of the workers, so a worker that crashes loses
nothing it had written to the spool. A file is shipped once it is closed: it rolled (its
writer has opened a newer one for the same collection), its rolling period is over (a writer
never appends to a file of an earlier period, so an idle deployment's last records ship within
one ``collect_rolling_rate`` plus ``PERIOD_MARGIN_S`` instead of waiting for the next request),
its writer is gone (a crashed worker, or any file of an earlier container start: the spool is
an ``emptyDir`` that survives the container), or the server is stopping. Shipping is copy,
then delete from the spool; a destination that is slow or down only lets the spool grow:
workers drop new records (``spool_full``) once the spool holds ``collect_spool_max_bytes``
(read from ``.usage``, which this thread rewrites on every pass, so the bound can be overshot
by one pass of writes).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from scoring.common.logs import get_log
from scoring.server.metrics import Stats

USAGE = ".usage"
_FILE = re.compile(r"(?P<run>[0-9a-f]+)-(?P<pid>\d+)-(?P<opened>\d+)-(?P<seq>\d+)\.jsonl")
PERIOD_MARGIN_S = 5
"""A file of an ended period ships this long after the period's end: room for a flush that
chose the file just before the boundary (its name's time is never before its period's)."""


class DestinationError(RuntimeError):
    """The destination does not exist or cannot be written (the message says which)."""


class Folder:
    """A folder destination (a mounted PersistentVolumeClaim)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def check(self, probe: str) -> None:
        if not self.root.is_dir():
            raise DestinationError(f"{self.where!r} is not a folder (is the volume mounted?)")
        try:
            self.put(Path(probe), b"")
            (self.root / probe).unlink()
        except OSError as exc:
            raise DestinationError(f"{self.where!r} cannot be written: {exc}") from exc

    def put(self, relative: Path, data: bytes) -> None:
        """Write whole (temporary name, then rename): a reader never sees half a file."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


class Bucket:
    """An S3 destination: ``s3://bucket/prefix``; endpoint and keys from the usual ``AWS_*``
    environment variables (a Kubernetes Secret in the pod)."""

    def __init__(self, url: str) -> None:
        import boto3  # optional: only a pod that ships to S3 needs it
        from botocore.config import Config

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.where = url
        self.client: Any = boto3.client(
            "s3",
            config=Config(
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 2},
                s3={"addressing_style": "path"},
            ),
        )

    def key(self, relative: Path) -> str:
        return f"{self.prefix}/{relative.as_posix()}" if self.prefix else relative.as_posix()

    def check(self, probe: str) -> None:
        try:
            self.put(Path(probe), b"")
            self.client.delete_object(Bucket=self.bucket, Key=self.key(Path(probe)))
        except Exception as exc:
            raise DestinationError(f"{self.where!r} cannot be written: {exc}") from exc

    def put(self, relative: Path, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(relative), Body=data)


def destination(url: str) -> Folder | Bucket:
    """The destination a ``collect_destination`` names (``s3://...`` or a folder)."""
    return Bucket(url) if url.startswith("s3://") else Folder(Path(url))


class Shipper:
    """The supervisor's shipping thread (see the module docstring)."""

    def __init__(
        self,
        spool: Path,
        dest: Folder | Bucket,
        run: str,
        live: Any,
        stats: Stats | None = None,
        interval_s: float = 1.0,
        period_s: int | None = None,
    ) -> None:
        self.spool = spool
        self.dest = dest
        self.run = run
        self.live = live  # () -> set of the workers' pids now
        self.stats = stats
        self.interval_s = interval_s
        self.period_s = period_s  # the writers' rolling period (None: ship on roll only)
        self.shipped: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="collection-shipper", daemon=True)
        self._last_warning = 0.0

    def start(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self, deadline_s: float) -> int:
        """Stop the thread and ship everything left (workers have exited); returns the
        number of files still in the spool (0 unless the destination failed or time ran out)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.ship(final=True, deadline=time.monotonic() + deadline_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.ship(final=False)

    def ship(self, final: bool, deadline: float | None = None) -> int:
        """One pass: ship closed files; returns how many files are left in the spool."""
        files = [p for p in self.spool.rglob("*") if p.is_file() and not p.name.startswith(".")]
        closed = self._closed(files, final)
        left = 0
        failed: Exception | None = None
        for path in files:
            if path not in closed or failed is not None:
                left += 1
                continue
            if deadline is not None and time.monotonic() > deadline:
                failed = TimeoutError("the termination grace period ran out")
                left += 1
                continue
            try:
                data = path.read_bytes()
                self.dest.put(path.relative_to(self.spool), data)
            except Exception as exc:  # destination down: keep the file, try again later
                failed = exc
                left += 1
                continue
            path.unlink()
            if path.suffix == ".jsonl":
                name = path.relative_to(self.spool).parts[2]
                self.shipped[name] = self.shipped.get(name, 0) + data.count(b"\n")
        if failed is not None:
            self._warn(failed)
        self._publish()
        return left

    def _closed(self, files: list[Path], final: bool) -> set[Path]:
        """Which files no writer will append to again."""
        if final:
            return set(files)
        live = self.live()
        ended = None
        if self.period_s:
            ended = int(time.time() - PERIOD_MARGIN_S) // self.period_s  # periods before: over
        newest: dict[tuple[Path, str], int] = {}
        parsed: dict[Path, tuple[Path, str, int] | None] = {}
        for path in files:
            m = _FILE.fullmatch(path.name)
            if m is None:  # a large payload, complete once it has its name
                parsed[path] = None
                continue
            if m["run"] != self.run or int(m["pid"]) not in live:
                parsed[path] = None  # an earlier container's, or a dead worker's
                continue
            if self.period_s and ended is not None and int(m["opened"]) // self.period_s < ended:
                parsed[path] = None  # its period is over: its writer moved on
                continue
            key = (path.relative_to(self.spool).parents[-4], m["pid"])
            parsed[path] = (key[0], key[1], int(m["seq"]))
            newest[key] = max(newest.get(key, 0), int(m["seq"]))
        return {p for p, k in parsed.items() if k is None or k[2] < newest[(k[0], k[1])]}

    def _publish(self) -> None:
        """Spool usage for the workers' limit, and ``shipped`` for ``/metrics``."""
        used = 0
        for path in self.spool.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file():
                    used += path.stat().st_size
        with contextlib.suppress(OSError):
            tmp = self.spool / ".usage.tmp"
            tmp.write_text(str(used))
            os.replace(tmp, self.spool / USAGE)
        if self.stats is not None:
            self.stats.shipped = dict(self.shipped)
            self.stats.write()

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > 30:
            self._last_warning = now
            log = get_log()
            log.event(
                "warning",
                f"collected data not shipped to {self.dest.where}: {exc}; kept in the spool",
                event="collection_ship_failure",
            )
            log.flush()  # the supervisor has no flush timer


def spool_usage(spool: Path) -> int:
    """Bytes in the spool as of the shipper's last pass (0 before its first)."""
    try:
        return int((spool / USAGE).read_text())
    except (OSError, ValueError):
        return 0


__all__ = ["Bucket", "DestinationError", "Folder", "Shipper", "destination"]
