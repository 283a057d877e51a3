"""Script styles over real HTTP: request_headers, inference-schema, Azure packages' names
(Model.get_model_path, Collector, AMLResponse), and an MLflow model with no script."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest

from mlendpoints._procs import Proc
from mlendpoints.paths import REPO
from tests.support.serving import SCRIPTS, error_json, serve, train_sample

pytestmark = pytest.mark.server

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sample(tmp_path_factory.mktemp("diabetes") / "model")


def rows(n: int) -> list[list[float]]:
    from sklearn.datasets import load_diabetes

    return load_diabetes().data[:n].tolist()


def expected(model_dir: Path, data: list[list[float]]) -> list[int]:
    return joblib.load(model_dir / "model.pkl").predict(np.array(data)).tolist()


# -- request_headers ------------------------------------------------------------------------
def test_request_headers_parameter_and_get_with_query() -> None:
    with serve(SCRIPTS / "headers_run.py", None) as proc:
        resp = httpx.post(proc.url + "/score", json={"a": 1}, headers={"X-Custom-Header": "hello"})
        assert resp.status_code == 200
        assert resp.json() == {
            "raw": {"a": 1},
            "custom": "hello",
            "content_type": "application/json",
        }
        got = httpx.get(proc.url + "/score", params={"name": "x", "n": ["1", "2"]})
        assert got.status_code == 200
        assert got.json()["raw"] == {"name": "x", "n": [1, 2]}  # JSON values, as Azure
        unserialisable = httpx.post(
            proc.url + "/score", json="a set", headers={"x-request-id": "set"}
        )
        assert unserialisable.status_code == 500
        assert unserialisable.json() == error_json(
            "run() returned a set, which is not JSON serialisable; return lists, "
            "dicts, numbers or strings",
            "set",
        )


# -- inference-schema -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema_server(model_dir: Path) -> Iterator[Proc]:
    with serve(SCRIPTS / "schema_run.py", model_dir) as proc:
        yield proc


def test_schema_script_gets_a_parsed_numpy_array(schema_server: Proc, model_dir: Path) -> None:
    data = rows(20)
    resp = httpx.post(schema_server.url + "/score", json={"data": data})
    assert resp.status_code == 200
    assert resp.json() == {"predictions": expected(model_dir, data), "type": "ndarray"}


def test_schema_script_rejects_other_media_types(schema_server: Proc) -> None:
    resp = httpx.post(
        schema_server.url + "/score",
        content=b"{}",
        headers={"content-type": "application/octet-stream", "x-request-id": "media"},
    )
    assert resp.status_code == 415
    assert resp.json() == error_json(
        "Content-Type 'application/octet-stream' is not supported; send "
        "application/json (or text/plain for scripts that read the raw string)",
        "media",
    )


def test_schema_swagger_describes_inputs_and_outputs(schema_server: Proc) -> None:
    doc = httpx.get(schema_server.url + "/swagger.json").json()
    service_input = doc["definitions"]["ServiceInput"]
    assert service_input["required"] == ["data"]
    assert service_input["properties"]["data"]["type"] == "array"
    assert len(service_input["example"]["data"][0]) == 10
    assert doc["definitions"]["ServiceOutput"]["properties"]["predictions"]["type"] == "array"


def test_schema_rejections_are_400(schema_server: Proc) -> None:
    missing = httpx.post(
        schema_server.url + "/score", json={"rows": [[1] * 10]}, headers={"x-request-id": "s1"}
    )
    assert missing.status_code == 400
    assert missing.json() == error_json(
        "request body is missing 'data'; run() takes ['data']",
        "s1",
    )
    not_object = httpx.post(
        schema_server.url + "/score", json=[1, 2], headers={"x-request-id": "s2"}
    )
    assert not_object.status_code == 400
    assert not_object.json() == error_json(
        "request body must be a JSON object with keys ['data'] (run()'s inputs); got list",
        "s2",
    )
    wrong_type = httpx.post(
        schema_server.url + "/score", json={"data": {"a": 1}}, headers={"x-request-id": "s3"}
    )
    assert wrong_type.status_code == 400
    assert wrong_type.json()["error"].startswith(
        "request body does not match run()'s input schema: "
    )
    assert httpx.post(schema_server.url + "/score", json={"data": rows(1)}).status_code == 200


# -- Azure package names without the Azure packages -----------------------------------------
def test_azure_compat_script_runs_unchanged(model_dir: Path, tmp_path: Path) -> None:
    collected = tmp_path / "collected"
    with serve(SCRIPTS / "azure_compat.py", model_dir, "--collect-dir", str(collected)) as proc:
        data = rows(5)
        resp = httpx.post(
            proc.url + "/score", json={"data": data}, headers={"x-request-id": "compat-1"}
        )
        assert resp.status_code == 200
        assert resp.json() == expected(model_dir, data)
        custom = httpx.post(proc.url + "/score", json={"nodata": 1})
        assert custom.status_code == 422
        assert custom.json() == {"message": "send {'data': [[...10 features...]]}"}
        assert custom.headers["x-script"] == "azure-compat"
        deadline = time.monotonic() + 10
        records: dict[str, list[dict]] = {}
        while time.monotonic() < deadline:
            records = {
                name: [
                    json.loads(line)
                    for f in (collected / name).rglob("*.jsonl")
                    for line in f.read_text().splitlines()
                ]
                for name in ("script_inputs", "script_outputs")
            }
            if all(records.values()):
                break
            time.sleep(0.1)
    (inp,), (out,) = records["script_inputs"], records["script_outputs"]
    assert inp["request_id"] == out["request_id"] == "compat-1"
    assert inp["correlation_id"] == out["correlation_id"] == "compat-1"
    assert inp["data"] == [dict(zip(map(str, range(10)), row, strict=True)) for row in data]
    assert out["data"] == [{"prediction": p} for p in expected(model_dir, data)]


# -- MLflow model, no script ----------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Save the sample model as an MLflow model (offline: no requirement inference)."""
    out = tmp_path_factory.mktemp("mlflow") / "model"
    code = f"""
import joblib, numpy as np, pandas as pd, mlflow.sklearn
from mlflow.models import infer_signature
model = joblib.load({str(model_dir / "model.pkl")!r})
x = pd.DataFrame(np.zeros((2, 10)), columns={FEATURES!r})
mlflow.sklearn.save_model(model, {str(out)!r}, serialization_format="cloudpickle",
    signature=infer_signature(x, model.predict(x.values)), pip_requirements=["scikit-learn"])
"""
    subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO, timeout=180
    )
    return out


@pytest.fixture(scope="module")
def mlflow_server(mlflow_dir: Path) -> Iterator[Proc]:
    with serve(None, mlflow_dir, timeout=120) as proc:
        yield proc


def test_mlflow_input_data_split(mlflow_server: Proc, model_dir: Path) -> None:
    data = rows(10)
    body = {"input_data": {"columns": FEATURES, "index": list(range(10)), "data": data}}
    resp = httpx.post(mlflow_server.url + "/score", json=body)
    assert resp.status_code == 200
    assert resp.json() == expected(model_dir, data)


@pytest.mark.parametrize(
    "shape", ["rows", "records", "columns", "dataframe_split", "dataframe_records"]
)
def test_mlflow_other_shapes(mlflow_server: Proc, model_dir: Path, shape: str) -> None:
    data = rows(4)
    records = [dict(zip(FEATURES, r, strict=True)) for r in data]
    body = {
        "rows": {"input_data": data},
        "records": {"input_data": records},
        "columns": {"input_data": {f: [r[i] for r in data] for i, f in enumerate(FEATURES)}},
        "dataframe_split": {"dataframe_split": {"columns": FEATURES, "data": data}},
        "dataframe_records": {"dataframe_records": records},
    }[shape]
    resp = httpx.post(mlflow_server.url + "/score", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == expected(model_dir, data)


def test_mlflow_bad_bodies_are_400(mlflow_server: Proc) -> None:
    resp = httpx.post(
        mlflow_server.url + "/score", json={"data": [[1] * 10]}, headers={"x-request-id": "m1"}
    )
    assert resp.status_code == 400
    assert resp.json() == error_json(
        "request body must be a JSON object with one of ['input_data', "
        "'dataframe_split', 'dataframe_records', 'instances', 'inputs'], e.g. "
        '{"input_data": {"columns": [...], "data": [[...]]}}',
        "m1",
    )
    wrong = httpx.post(
        mlflow_server.url + "/score",
        json={"input_data": {"columns": ["age"], "data": [[1.0]]}},
        headers={"x-request-id": "m2"},
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"].startswith("input does not match the model's signature: ")
    assert httpx.get(mlflow_server.url + "/ready").status_code == 200


def test_mlflow_swagger_names_the_columns(mlflow_server: Proc) -> None:
    doc = httpx.get(mlflow_server.url + "/swagger.json").json()
    columns = doc["definitions"]["ServiceInput"]["properties"]["input_data"]["properties"]
    assert columns["columns"]["example"] == FEATURES
