"""Read collected inference data back from a destination (issue 14's ``ml-endpoints
collected``; the command line is not wired yet): a folder (a PVC's contents, or a server's
spool) or ``s3://bucket/prefix``, laid out as ``{endpoint}/{deployment}/{collection}/
yyyy/MM/dd/HH/*.jsonl`` in Azure's data collector envelope (scoring/server/collector.py).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _hour_of(parts: list[str]) -> dt.datetime | None:
    """The hour folder ``yyyy/MM/dd/HH`` that ends ``parts`` (a file's folders)."""
    try:
        y, mo, d, h = (int(x) for x in parts[-4:])
        return dt.datetime(y, mo, d, h, tzinfo=dt.UTC)
    except ValueError:
        return None


def _files(where: str, under: str) -> Iterator[tuple[str, bytes]]:
    """``(relative path, content)`` of every ``.jsonl`` under ``where``/``under``."""
    if where.startswith("s3://"):
        import boto3  # only for an S3 destination

        bucket, _, prefix = where.removeprefix("s3://").partition("/")
        prefix = f"{prefix.strip('/')}/{under}/" if prefix.strip("/") else f"{under}/"
        s3: Any = boto3.client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(".jsonl"):
                    body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                    yield obj["Key"][len(prefix) :], body
        return
    root = Path(where) / under
    for path in sorted(root.rglob("*.jsonl")):
        yield path.relative_to(root).as_posix(), path.read_bytes()


def read(
    where: str,
    endpoint: str,
    deployment: str,
    name: str,
    since: dt.timedelta | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """The records of collection ``name``, oldest first; ``since``: only that recent."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - since if since is not None else None
    out = []
    for relative, body in _files(where, f"{endpoint}/{deployment}/{name}"):
        hour = _hour_of(relative.split("/")[:-1])
        if cutoff is not None and hour is not None and hour + dt.timedelta(hours=1) < cutoff:
            continue  # the whole hour is older
        for line in body.decode().splitlines():
            record = json.loads(line)
            when = dt.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
            if cutoff is None or when >= cutoff:
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
    """The rows as a pandas DataFrame (pandas imported only here)."""
    import pandas as pd

    return pd.DataFrame(rows)
