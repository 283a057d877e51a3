"""`ml-endpoints collected` over what a real server shipped: a folder destination and the
local S3 server (versitygw on loopback), read back by the CLI in-process (`main(argv,
outputs=...)`) into JSON lines, then loaded into a DataFrame whose values equal the requests
sent and the answers received. Bad input is a usage error naming the option and the value.
"""

from __future__ import annotations

import io
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlendpoints.cli import main
from tests.support.s3 import S3_ENV, s3_client, s3_env
from tests.support.serving import SAMPLE, serve, train_sample

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sample(tmp_path_factory.mktemp("diabetes") / "model")


def send(model_dir: Path, spool: Path, dest: str, count: int, env: dict[str, str] | None = None):
    """COUNT requests to a server shipping to DEST as endpoint `ep`, deployment `blue`, then a
    SIGTERM (ships the rest); request id -> (body sent, answer)."""
    args = [
        "--collect",
        "true",
        "--collect-dir",
        str(spool),
        "--collect-destination",
        dest,
        "--endpoint-name",
        "ep",
        "--deployment-name",
        "blue",
    ]
    sent: dict[str, tuple[Any, Any]] = {}
    tag = uuid.uuid4().hex[:6]
    with serve(SAMPLE / "score.py", model_dir, *args, env=env) as proc, httpx.Client() as client:
        for i in range(count):
            body = {"data": [[0.01 * i + 0.001 * j for j in range(10)]]}
            rid = f"{tag}-{i}"
            resp = client.post(proc.url + "/score", json=body, headers={"x-request-id": rid})
            assert resp.status_code == 200, resp.text
            sent[rid] = (body, resp.json())
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(30) == 0
    return sent


def local(source: str) -> list[str]:
    """Read SOURCE as endpoint `ep` without the stack."""
    return ["--endpoint", "ep", "--from", source]


def cli(*argv: str, outputs: dict[str, Any] | None = None) -> tuple[int, str, str]:
    """`ml-endpoints collected --deployment blue ARGV` in-process: (exit code, out, err)."""
    out, err = io.StringIO(), io.StringIO()

    def no_stack(stack: str) -> dict[str, Any]:
        raise AssertionError("the stack must not be read")

    code = main(
        ["collected", "--deployment", "blue", *argv],
        outputs=(lambda _stack: outputs) if outputs is not None else no_stack,
        cluster=no_stack,
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def check_pairs(frame: pd.DataFrame, sent: dict[str, tuple[Any, Any]]) -> None:
    assert sorted(frame["correlationid"]) == sorted(sent)
    for row in frame.itertuples():
        assert (row.input, row.output) == sent[row.correlationid]


def test_collected_reads_a_folder_destination_into_jsonl_and_a_dataframe(
    model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    sent = send(model_dir, tmp_path / "spool", str(dest), 12)
    out = tmp_path / "pairs.jsonl"
    code, _, err = cli(
        *local(str(dest)),
        "--join",
        "--since",
        "2h",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert err == f"12 input/output pairs of ep/blue from the last 2h in {dest}, written to {out}\n"
    check_pairs(pd.read_json(out, lines=True, dtype=False, precise_float=True), sent)
    # One collection to stdout: Azure's envelope, as shipped.
    code, text, err = cli(*local(str(dest)))
    assert code == 0, err
    records = [json.loads(line) for line in text.splitlines()]
    assert sorted(r["correlationid"] for r in records) == sorted(sent)
    assert {r["type"] for r in records} == {"azureml.inference.model_inputs"}
    assert {r["source"] for r in records} == {"/endpoints/ep/deployments/blue"}
    # The stack's outputs name the destination when --from is not given.
    outputs = {"endpoint_name": "ep", "collection": {"blue": {"destination": str(dest)}}}
    code, text, _ = cli("--join", outputs=outputs)
    assert code == 0 and len(text.splitlines()) == 12


def test_collected_reads_s3(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    if not S3_ENV.exists():
        pytest.skip(f"{S3_ENV} is missing: the local cluster's S3 server is not set up")
    env = s3_env()
    bucket, prefix = env["ML_ENDPOINTS_S3_BUCKET"], f"tests/cli-{uuid.uuid4().hex[:8]}"
    dest = f"s3://{bucket}/{prefix}"
    keys = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    try:
        sent = send(
            model_dir,
            tmp_path / "spool",
            dest,
            8,
            env={**keys, "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"]},
        )
        for name, value in keys.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        # The stack's endpoint (as the pods see it) is overridden by the flag (the host's).
        outputs = {
            "endpoint_name": "ep",
            "collection": {"blue": {"destination": dest, "endpoint_url": "http://192.0.2.9:1"}},
        }
        code, text, err = cli(
            "--join",
            "--s3-endpoint-url",
            env["AWS_ENDPOINT_URL"],
            outputs=outputs,
        )
        assert code == 0, err
        check_pairs(
            pd.read_json(io.StringIO(text), lines=True, dtype=False, precise_float=True), sent
        )
        # A bucket that does not exist: exit 1, the destination and S3's reason named.
        code, _, err = cli(
            *local("s3://no-such-bucket-h14/x"),
            "--s3-endpoint-url",
            env["AWS_ENDPOINT_URL"],
        )
        assert code == 1
        assert err.startswith("ml-endpoints collected: s3://no-such-bucket-h14/x: cannot list")
        assert "NoSuchBucket" in err
    finally:
        s3 = s3_client(env, env["AWS_ENDPOINT_URL"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=o["Key"])


@pytest.mark.parametrize(
    ("argv", "outputs", "code", "message"),
    [
        (
            ["--since", "2 hours"],
            None,
            2,
            "--since: '2 hours' is not a time span (e.g. 90s, 15m, 2h, 3d, 1h30m)",
        ),
        (["--name", "../etc"], None, 2, "--name: '../etc' is not a collection name"),
        (["--from", "/no/such/folder"], None, 1, "'/no/such/folder' is not a folder"),
        (["--out", "x.csv"], None, 1, "--out 'x.csv': write FILE.jsonl or FILE.parquet"),
        (
            [],
            {"endpoint_name": "ep", "collection": {"green": {"destination": "pvc"}}},
            2,
            "--deployment: no deployment 'blue' in stack 'dev' (deployments: green)",
        ),
        (
            [],
            {"endpoint_name": "ep", "collection": {"blue": {"destination": ""}}},
            2,
            "deployment 'blue' ships its collected data nowhere",
        ),
    ],
)
def test_collected_bad_input_is_named(
    tmp_path: Path, argv: list[str], outputs: dict[str, Any] | None, code: int, message: str
) -> None:
    base: list[str] = []
    if outputs is None:
        base = ["--endpoint", "ep"] if "--from" in argv else local(str(tmp_path))
    got, out, err = cli(*base, *argv, outputs=outputs)
    assert (got, out) == (code, "")
    assert err.startswith(f"ml-endpoints collected: {message}"), err


def test_parquet_needs_pyarrow_and_says_so(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    try:
        import pyarrow  # noqa: F401

        pytest.skip("pyarrow is installed: Parquet works")
    except ImportError:
        pass
    code, _, err = cli(
        *local(str(tmp_path)),
        "--out",
        str(tmp_path / "x.parquet"),
    )
    assert code == 1
    assert "Parquet needs pyarrow (pip install pyarrow)" in err, err
