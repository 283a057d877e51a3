"""Read collected inference data back (``ml-endpoints collected``): from a folder (a PVC's
contents, or a server's spool) or ``s3://bucket/prefix``, laid out as ``{endpoint}/{deployment}/
{collection}/yyyy/MM/dd/HH/*.jsonl`` in Azure's data collector envelope
(scoring/server/collector.py). A record whose payload was stored beside it (``dataref``) gets
its ``data`` back from that file.

Output: JSON lines (one record, or with ``join`` one input/output pair per correlation id), a
pandas DataFrame (``dataframe``), or a Parquet file when pyarrow is installed (it is not a
dependency of this project: ``pip install pyarrow``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

_SPAN = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class CollectedError(ValueError):
    """Collected data cannot be read as asked; the message says what and where."""


def parse_since(text: str) -> dt.timedelta:
    """``90s``, ``15m``, ``2h``, ``3d`` (or a sum: ``1h30m``) as a time span.

    Raises:
        CollectedError: naming the bad value.
    """
    spans = _SPAN.findall(text.strip())
    if not spans or "".join(f"{n}{u}" for n, u in spans) != re.sub(r"\s", "", text):
        raise CollectedError(f"--since: {text!r} is not a time span (e.g. 90s, 15m, 2h, 3d, 1h30m)")
    return sum((dt.timedelta(**{_UNITS[unit]: int(n)}) for n, unit in spans), start=dt.timedelta())


def _hour_of(parts: list[str]) -> dt.datetime | None:
    """The hour folder ``yyyy/MM/dd/HH`` that ends ``parts`` (a file's folders)."""
    try:
        y, mo, d, h = (int(x) for x in parts[-4:])
        return dt.datetime(y, mo, d, h, tzinfo=dt.UTC)
    except ValueError:
        return None


class _Store:
    """A destination's files by path relative to its root (folder or bucket + prefix)."""

    def __init__(self, where: str, endpoint_url: str | None = None) -> None:
        self.where = where
        self.s3: Any = None
        if where.startswith("s3://"):
            try:
                import boto3  # the `s3` extra
                from botocore.config import Config
            except ImportError as exc:
                raise CollectedError(
                    f"{where}: reading S3 needs boto3 (pip install 'ml-endpoints[s3]')"
                ) from exc
            self.bucket, _, prefix = where.removeprefix("s3://").partition("/")
            self.prefix = prefix.strip("/")
            self.s3 = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
            )
        else:
            self.root = Path(where)
            if not self.root.is_dir():
                raise CollectedError(f"{where!r} is not a folder")

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def files(self, under: str) -> Iterator[tuple[str, bytes]]:
        """``(path relative to under, content)`` of every ``.jsonl`` under ``under``."""
        if self.s3 is None:
            root = self.root / under
            for path in sorted(root.rglob("*.jsonl")):
                yield path.relative_to(root).as_posix(), path.read_bytes()
            return
        prefix = self._key(under) + "/"
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(".jsonl"):
                        yield obj["Key"][len(prefix) :], self._get(obj["Key"])
        except CollectedError:
            raise
        except Exception as exc:  # botocore's errors: no bucket, refused keys, no answer
            raise CollectedError(f"{self.where}: cannot list {prefix!r}: {exc}") from exc

    def read(self, relative: str) -> bytes:
        """One file (a ``dataref`` payload), relative to the destination's root."""
        if self.s3 is None:
            return (self.root / relative).read_bytes()
        return self._get(self._key(relative))

    def _get(self, key: str) -> bytes:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise CollectedError(f"{self.where}: cannot read {key!r}: {exc}") from exc
        return body


def read(
    where: str,
    endpoint: str,
    deployment: str,
    name: str,
    since: dt.timedelta | None = None,
    now: dt.datetime | None = None,
    endpoint_url: str | None = None,
) -> list[dict[str, Any]]:
    """The records of collection ``name``, oldest first; ``since``: only that recent.

    Raises:
        CollectedError: the destination cannot be read, or a line is not a record.
    """
    store = _Store(where, endpoint_url)
    cutoff = (now or dt.datetime.now(dt.UTC)) - since if since is not None else None
    out = []
    for relative, body in store.files(f"{endpoint}/{deployment}/{name}"):
        hour = _hour_of(relative.split("/")[:-1])
        if cutoff is not None and hour is not None and hour + dt.timedelta(hours=1) < cutoff:
            continue  # the whole hour is older
        for number, line in enumerate(body.decode().splitlines(), 1):
            try:
                record = json.loads(line)
                when = dt.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CollectedError(
                    f"{where}: {endpoint}/{deployment}/{name}/{relative} line {number} is not a "
                    f"collected record ({exc})"
                ) from exc
            if cutoff is not None and when < cutoff:
                continue
            if "dataref" in record and "data" not in record:
                record["data"] = json.loads(store.read(record["dataref"]))
            out.append(record)
    out.sort(key=lambda r: r["time"])
    return out


def joined(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per correlation id found in both: ``correlationid``, ``time``, ``input``,
    ``output`` (the records' ``data``)."""
    by_id = {r["correlationid"]: r for r in outputs}
    return [
        {
            "correlationid": r["correlationid"],
            "time": r["time"],
            "input": r.get("data"),
            "output": by_id[r["correlationid"]].get("data"),
        }
        for r in inputs
        if r["correlationid"] in by_id
    ]


def dataframe(rows: list[dict[str, Any]]) -> Any:
    """The rows as a pandas DataFrame (pandas imported only here).

    Raises:
        CollectedError: pandas is not installed.
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise CollectedError("a DataFrame needs pandas (pip install pandas)") from exc
    return pd.DataFrame(rows)


def write(rows: list[dict[str, Any]], out: TextIO | Path) -> None:
    """JSON lines to a stream or a ``.jsonl`` file; a ``.parquet`` path through pandas.

    Raises:
        CollectedError: an output type this machine cannot write (names what to install).
    """
    if isinstance(out, Path) and out.suffix == ".parquet":
        frame = dataframe(rows)
        try:
            frame.to_parquet(out)
        except ImportError as exc:
            raise CollectedError(
                f"--out {str(out)!r}: Parquet needs pyarrow (pip install pyarrow); or write "
                "JSON lines (--out FILE.jsonl)"
            ) from exc
        return
    if isinstance(out, Path):
        if out.suffix not in (".jsonl", ".json"):
            raise CollectedError(f"--out {str(out)!r}: write FILE.jsonl or FILE.parquet")
        with out.open("w") as fh:
            write(rows, fh)
        return
    for row in rows:
        out.write(json.dumps(row, separators=(",", ":")) + "\n")
