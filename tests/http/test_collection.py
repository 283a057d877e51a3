"""Data collection over real HTTP: Azure's record envelope and folder layout, large payloads
stored beside their records, and a full disk (a real 64 KiB tmpfs) that drops whole pairs,
never leaves a truncated line, and is counted exactly by the metrics."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlendpoints._procs import free_port, serve_args
from mlendpoints.paths import REPO
from tests.support.s3 import S3_ENV, s3_client, s3_env
from tests.support.serving import SAMPLE, serve, train_sample

pytestmark = pytest.mark.server

_DAY_HOUR = r"\d{4}/\d{2}/\d{2}/\d{2}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sample(tmp_path_factory.mktemp("diabetes") / "model")


def _lines(root: Path, collection: str) -> list[tuple[Path, str]]:
    return [
        (path, line)
        for path in sorted(root.rglob("*.jsonl"))
        if f"/{collection}/" in str(path)
        for line in path.read_text().split("\n")[:-1]  # a file ends with a newline
    ]


def _metrics(url: str) -> dict[str, float]:
    """``name{labels}`` -> value of the collection samples."""
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(("scoring_collected_records_total", "scoring_collection_")):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def _wait_accounted(url: str, records: int) -> dict[str, float]:
    """Metrics once every queued record is either written or dropped (flushes are timed)."""
    deadline = time.monotonic() + 20
    found: dict[str, float] = {}
    while time.monotonic() < deadline:
        found = _metrics(url)
        if sum(v for k, v in found.items() if "shipped" not in k) >= records:
            break
        time.sleep(0.2)
    return found


def test_records_are_azure_envelopes_under_endpoint_and_deployment_folders(
    model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "spool"
    args = ["--collect", "true", "--collect-dir", str(root), "--endpoint-name", "ep"]
    args += ["--deployment-name", "blue", "--collect-payload-max-bytes", "2000"]
    small = {"data": [[0.01 * i for i in range(10)]]}
    large = {"data": [[0.01 * i for i in range(10)]] * 40}  # ~2.5 KB of JSON
    with serve(SAMPLE / "score.py", model_dir, *args) as proc:
        answers = {}
        for rid, body in (("small-1", small), ("large-1", large)):
            resp = httpx.post(
                proc.url + "/score",
                content=json.dumps(body),
                headers={"x-request-id": rid, "content-type": "application/json"},
            )
            assert resp.status_code == 200
            answers[rid] = resp.json()
        metrics = _wait_accounted(proc.url, 4)
    assert metrics == {
        'scoring_collected_records_total{collection="model_inputs"}': 2,
        'scoring_collected_records_total{collection="model_outputs"}': 2,
    }
    inputs = {
        json.loads(x)["xrequestid"]: (p, json.loads(x)) for p, x in _lines(root, "model_inputs")
    }
    outputs = {json.loads(x)["xrequestid"]: json.loads(x) for _, x in _lines(root, "model_outputs")}
    assert set(inputs) == set(outputs) == {"small-1", "large-1"}
    path, rec = inputs["small-1"]
    assert re.search(rf"/ep/blue/model_inputs/{_DAY_HOUR}/[0-9a-f]+-\d+-\d+-\d+\.jsonl$", str(path))
    assert rec["specversion"] == "1.0"
    assert rec["type"] == "azureml.inference.model_inputs"
    assert rec["source"] == "/endpoints/ep/deployments/blue"
    assert rec["datacontenttype"] == "application/json"
    assert rec["correlationid"] == "small-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", rec["time"])
    assert rec["data"] == small
    size = len(json.dumps(small).encode())  # the body as sent
    assert rec["contentrange"] == f"bytes 0-{size - 1}/{size}"
    assert outputs["small-1"]["data"] == answers["small-1"]
    assert outputs["small-1"]["type"] == "azureml.inference.model_outputs"
    big = inputs["large-1"][1]
    assert "data" not in big
    assert re.fullmatch(rf"ep/blue/model_inputs/{_DAY_HOUR}/[0-9a-f-]+\.json", big["dataref"])
    assert json.loads((root / big["dataref"]).read_text()) == large
    assert outputs["large-1"]["data"] == answers["large-1"]  # the output is small


@pytest.mark.parametrize("only", ["model_inputs", "model_outputs"])
def test_only_the_enabled_collection_is_written(model_dir: Path, tmp_path: Path, only: str) -> None:
    """`--collect-collections model_inputs` (Azure: only `model_inputs` enabled) writes the
    requests' bodies and no answers; `model_outputs` the reverse."""
    root = tmp_path / "spool"
    args = ["--collect", "true", "--collect-collections", only, "--collect-dir", str(root)]
    sent = {f"only-{i}": {"data": [[0.01 * (i + j) for j in range(10)]]} for i in range(3)}
    with serve(SAMPLE / "score.py", model_dir, *args) as proc:
        answers = {}
        for rid, body in sent.items():
            resp = httpx.post(
                proc.url + "/score",
                content=json.dumps(body),
                headers={"x-request-id": rid, "content-type": "application/json"},
            )
            assert resp.status_code == 200
            answers[rid] = resp.json()
        metrics = _wait_accounted(proc.url, len(sent))
        time.sleep(1)  # two more flushes: nothing else may turn up
        assert _metrics(proc.url) == metrics
    assert metrics == {f'scoring_collected_records_total{{collection="{only}"}}': len(sent)}
    other = "model_outputs" if only == "model_inputs" else "model_inputs"
    assert _lines(root, other) == [] and not list(root.rglob(other))
    found = {json.loads(x)["xrequestid"]: json.loads(x)["data"] for _, x in _lines(root, only)}
    assert found == (sent if only == "model_inputs" else answers)


@contextlib.contextmanager
def _tiny_disk(folder: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (tmpfs) at ``folder``; root only."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_drops_whole_pairs_never_half_lines_and_counts_them_exactly(
    model_dir: Path, tmp_path: Path
) -> None:
    sent = 300
    with _tiny_disk(tmp_path / "disk", "64k") as root:
        args = ["--collect", "true", "--collect-dir", str(root), "--workers", "2"]
        with serve(SAMPLE / "score.py", model_dir, *args) as proc, httpx.Client() as client:
            body = {"data": [[0.001 * i for i in range(10)]] * 3}
            for i in range(sent):
                resp = client.post(
                    proc.url + "/score", json=body, headers={"x-request-id": f"r-{i}"}
                )
                assert resp.status_code == 200
            metrics = _wait_accounted(proc.url, 2 * sent)
            inputs = _lines(root, "model_inputs")
            outputs = _lines(root, "model_outputs")
    in_ids = [json.loads(line)["xrequestid"] for _, line in inputs]  # every line parses
    out_ids = [json.loads(line)["xrequestid"] for _, line in outputs]
    assert sorted(in_ids) == sorted(out_ids)  # pairs: both records or neither
    assert len(set(in_ids)) == len(in_ids)
    kept = len(in_ids)
    assert 0 < kept < sent  # the disk did fill up
    assert metrics == {
        'scoring_collected_records_total{collection="model_inputs"}': kept,
        'scoring_collected_records_total{collection="model_outputs"}': kept,
        'scoring_collection_dropped_total{reason="disk_full"}': 2 * (sent - kept),
    }


# -- shipping from the spool to the destination ---------------------------------------------
_SMALL = {"data": [[0.001 * i for i in range(10)]]}


def _send(url: str, count: int, tag: str) -> set[str]:
    """``count`` scoring requests, each answered 200; returns their request ids."""
    ids = set()
    with httpx.Client() as client:
        for i in range(count):
            rid = f"{tag}-{i}"
            resp = client.post(url + "/score", json=_SMALL, headers={"x-request-id": rid})
            assert resp.status_code == 200
            ids.add(rid)
    return ids


def _pairs(root: Path) -> tuple[list[str], list[str]]:
    ins = [json.loads(line)["xrequestid"] for _, line in _lines(root, "model_inputs")]
    outs = [json.loads(line)["xrequestid"] for _, line in _lines(root, "model_outputs")]
    return sorted(ins), sorted(outs)


def _ship_args(spool: Path, dest: str, *more: str) -> list[str]:
    return ["--collect", "true", "--collect-dir", str(spool), "--collect-destination", dest, *more]


def test_files_ship_as_they_roll_and_sigterm_ships_the_rest(
    model_dir: Path, tmp_path: Path
) -> None:
    spool, dest = tmp_path / "spool", tmp_path / "dest"
    dest.mkdir()
    args = _ship_args(spool, str(dest), "--workers", "2", "--collect-max-file-bytes", "4000")
    with serve(SAMPLE / "score.py", model_dir, *args) as proc:
        sent: set[str] = set()
        for round in range(4):  # a file rolls at its first flush past 4000 bytes (0.5 s apart)
            sent |= _send(proc.url, 25, f"t{round}")
            time.sleep(0.7)
        deadline = time.monotonic() + 20
        shipped = 0.0
        while time.monotonic() < deadline and not shipped:
            found = _metrics(proc.url)
            shipped = found.get('scoring_collection_shipped_total{collection="model_inputs"}', 0)
            time.sleep(0.2)
        assert shipped > 0
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(30) == 0
    ins, outs = _pairs(dest)
    assert ins == outs == sorted(sent)  # every answered request, once, paired
    assert not list(spool.rglob("*.jsonl"))
    assert '"collection_shipped"' in proc.log() and "0 file(s) left" in proc.log()


def test_after_a_sigkill_the_next_start_ships_what_was_spooled(
    model_dir: Path, tmp_path: Path
) -> None:
    spool, dest = tmp_path / "spool", tmp_path / "dest"
    dest.mkdir()
    args = _ship_args(spool, str(dest), "--workers", "2")
    with serve(SAMPLE / "score.py", model_dir, *args) as proc:
        sent = _send(proc.url, 60, "k")
        _wait_accounted(proc.url, 120)  # on the spool's disk (hourly files: none shipped yet)
        workers = subprocess.run(
            ["pgrep", "-P", str(proc.popen.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in [proc.popen.pid, *map(int, workers)]:  # as the kernel does to a pod
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.popen.wait(10)
    assert _pairs(dest) == ([], [])
    with serve(SAMPLE / "score.py", model_dir, *args) as proc:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _pairs(dest)[0] != sorted(sent):
            time.sleep(0.2)
    ins, outs = _pairs(dest)
    assert ins == outs == sorted(sent)


def test_a_destination_that_cannot_be_written_stops_the_server_before_ready(
    model_dir: Path, tmp_path: Path
) -> None:
    popen = subprocess.run(
        [
            sys.executable,
            *serve_args(SAMPLE / "score.py", model_dir, port=free_port()),
            *_ship_args(tmp_path / "spool", str(tmp_path / "missing")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert popen.returncode == 1
    assert "data collection destination: " in popen.stdout + popen.stderr
    assert "is not a folder (is the volume mounted?)" in popen.stdout + popen.stderr


def test_an_unreachable_destination_fills_the_spool_then_drops_counted_requests_all_answered(
    model_dir: Path, tmp_path: Path
) -> None:
    spool, dest = tmp_path / "spool", tmp_path / "dest"
    dest.mkdir()
    args = _ship_args(spool, str(dest), "--collect-spool-max-bytes", "65536")
    args += ["--collect-max-file-bytes", "4000"]  # files roll, and fail to ship
    with serve(SAMPLE / "score.py", model_dir, *args) as proc:
        dest.rename(tmp_path / "gone")
        dest.write_text("the volume is gone")  # every put now fails
        for round in range(3):  # files roll (and fail to ship) before the spool is full
            _send(proc.url, 10, f"w{round}")
            time.sleep(0.7)
        _send(proc.url, 370, "u")  # raises unless every request is answered 200
        sent = 400
        metrics = _wait_accounted(proc.url, 2 * sent)
        ins, outs = _pairs(spool)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and '"collection_ship_failure"' not in proc.log():
            time.sleep(0.2)
        assert '"collection_ship_failure"' in proc.log()
    assert ins == outs
    kept = len(ins)
    assert 0 < kept < sent
    assert metrics == {
        'scoring_collected_records_total{collection="model_inputs"}': kept,
        'scoring_collected_records_total{collection="model_outputs"}': kept,
        'scoring_collection_dropped_total{reason="spool_full"}': 2 * (sent - kept),
    }


def test_a_spool_full_of_open_files_rolls_them_so_it_drains_and_collection_resumes(
    model_dir: Path, tmp_path: Path
) -> None:
    """A spool smaller than a file (files roll at 10 MiB, the spool holds 64 KiB): once it is
    full, the writer starts new files, so the shipper can ship the full ones and collection
    resumes, instead of dropping everything until the hour's file closes."""
    spool, dest = tmp_path / "spool", tmp_path / "dest"
    dest.mkdir()
    args = _ship_args(spool, str(dest), "--collect-spool-max-bytes", "65536")
    with serve(SAMPLE / "score.py", model_dir, *args) as proc:
        sent = 0
        while not _metrics(proc.url).get('scoring_collection_dropped_total{reason="spool_full"}'):
            sent += len(_send(proc.url, 100, f"f{sent}"))
            time.sleep(0.6)  # a flush (0.5 s)
            assert sent < 5000, "the spool never filled"
        dropped = _metrics(proc.url)['scoring_collection_dropped_total{reason="spool_full"}']
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list(dest.rglob("*.jsonl")):
            time.sleep(0.2)
        assert list(dest.rglob("*.jsonl")), "the full files never shipped"
        time.sleep(1.5)  # the shipper's next pass publishes the spool's new usage
        later = _send(proc.url, 20, "later")
        metrics = _wait_accounted(proc.url, 2 * (sent + len(later)))
        assert metrics['scoring_collection_dropped_total{reason="spool_full"}'] == dropped
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(30) == 0
    ins, outs = _pairs(dest)
    assert ins == outs
    assert later <= set(ins)  # collected again once the spool drained
    assert len(ins) == sent + len(later) - dropped / 2


def test_sigterm_ships_everything_to_a_real_s3_server(model_dir: Path, tmp_path: Path) -> None:
    """versitygw of the local cluster (its ``s3.env``); skipped where it is not set up."""
    if not S3_ENV.exists():
        pytest.skip(f"{S3_ENV} is missing: the local cluster's S3 server is not set up")
    env = s3_env()
    s3 = s3_client(env, env["AWS_ENDPOINT_URL"])
    bucket, prefix = env["ML_ENDPOINTS_S3_BUCKET"], f"test-{uuid.uuid4().hex[:8]}"
    aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
    args = _ship_args(tmp_path / "spool", f"s3://{bucket}/{prefix}", "--workers", "2")
    try:
        with serve(SAMPLE / "score.py", model_dir, *args, env=aws) as proc:
            sent = _send(proc.url, 80, "s3")
            proc.popen.send_signal(signal.SIGTERM)
            assert proc.popen.wait(30) == 0
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]
        ids: dict[str, list[str]] = {"model_inputs": [], "model_outputs": []}
        for key in keys:
            assert re.fullmatch(
                rf"{prefix}/local/default/model_(in|out)puts/{_DAY_HOUR}/[0-9a-f]+-\d+-\d+-\d+\.jsonl",
                key,
            )
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            ids[key.split("/")[3]] += [json.loads(x)["xrequestid"] for x in body.splitlines()]
        assert sorted(ids["model_inputs"]) == sorted(ids["model_outputs"]) == sorted(sent)
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=o["Key"])


def test_collected_reads_back_and_joins_what_was_sent(model_dir: Path, tmp_path: Path) -> None:
    """Records shipped to a folder destination, read back with mlendpoints.collected into a
    DataFrame: one row per request, its input and output the values sent and answered."""
    import datetime as dt

    from mlendpoints import collected

    spool, dest = tmp_path / "spool", tmp_path / "dest"
    dest.mkdir()
    args = _ship_args(spool, str(dest), "--endpoint-name", "ep", "--deployment-name", "blue")
    sent: dict[str, tuple[dict, object]] = {}
    with serve(SAMPLE / "score.py", model_dir, *args) as proc, httpx.Client() as client:
        for i in range(20):
            body = {"data": [[0.01 * i + 0.001 * j for j in range(10)]]}
            resp = client.post(proc.url + "/score", json=body, headers={"x-request-id": f"j-{i}"})
            assert resp.status_code == 200
            sent[f"j-{i}"] = (body, resp.json())
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(30) == 0
    ins = collected.read(str(dest), "ep", "blue", "model_inputs", since=dt.timedelta(hours=2))
    outs = collected.read(str(dest), "ep", "blue", "model_outputs", since=dt.timedelta(hours=2))
    frame = collected.dataframe(collected.joined(ins, outs))
    assert sorted(frame["correlationid"]) == sorted(sent)
    for row in frame.itertuples():
        assert (row.input, row.output) == sent[row.correlationid]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)
    assert (
        collected.read(str(dest), "ep", "blue", "model_inputs", dt.timedelta(hours=2), future) == []
    )
