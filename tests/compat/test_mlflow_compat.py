"""MLflow no-code models the way Azure's MLflow scoring takes them: ours only.

Microsoft's MLflow scoring script ships in Azure's MLflow images, not on PyPI, so there is
no peer to run; the answers are checked against what the model computes. The model has
integer, double, string and datetime columns and a ``scale`` param (trained here).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from mlendpoints._procs import Proc
from mlendpoints.paths import REPO
from tests.support.serving import error_json, serve

pytestmark = pytest.mark.server

COLUMNS = ["n", "x", "s", "t"]
MODEL = """
import sys
import mlflow.pyfunc, pandas as pd
from mlflow.models import infer_signature

class Score(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        scale = (params or {}).get("scale", 1.0)
        f = model_input
        return ((f["n"] * f["x"] + f["s"].str.len() + f["t"].dt.day) * scale).tolist()

x = pd.DataFrame({"n": pd.Series([1], dtype="int64"), "x": [1.5], "s": ["a"],
                  "t": pd.to_datetime(["2024-01-01"])})
sig = infer_signature(x, [1.0], params={"scale": 1.0})
mlflow.pyfunc.save_model(sys.argv[1], python_model=Score(), signature=sig,
                         pip_requirements=["pandas"])
"""


def expected(n: int, x: float, s: str, day: int, scale: float = 1.0) -> float:
    return (n * x + len(s) + day) * scale


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    out = tmp_path_factory.mktemp("mlflow-compat") / "model"
    subprocess.run(
        [sys.executable, "-c", MODEL, str(out)],
        check=True,
        capture_output=True,
        cwd=REPO,
        timeout=180,
    )
    with serve(None, out, timeout=120) as proc:
        yield proc


def score(proc: Proc, body: object) -> httpx.Response:
    return httpx.post(proc.url + "/score", json=body, headers={"x-request-id": "m"}, timeout=30)


def test_integers_widen_to_double_columns(mlflow_server: Proc) -> None:
    split = {
        "columns": COLUMNS,
        "index": [0, 1],
        "data": [[2, 3, "ab", "2024-01-05"], [1, 50, "", "2024-02-01"]],
    }
    resp = score(mlflow_server, {"input_data": split})
    assert resp.status_code == 200, resp.text
    assert resp.json() == [expected(2, 3, "ab", 5), expected(1, 50, "", 1)]


@pytest.mark.parametrize("shape", ["split", "rows", "records", "columns"])
def test_azure_input_shapes_with_params(mlflow_server: Proc, shape: str) -> None:
    row = [2, 3.5, "abc", "2024-01-05"]
    value = {
        "split": {"columns": COLUMNS, "index": [0], "data": [row]},
        "rows": [row],
        "records": [dict(zip(COLUMNS, row, strict=True))],
        "columns": {c: [v] for c, v in zip(COLUMNS, row, strict=True)},
    }[shape]
    resp = score(mlflow_server, {"input_data": value, "params": {"scale": 2.0}})
    assert resp.status_code == 200, resp.text
    assert resp.json() == [expected(2, 3.5, "abc", 5, 2.0)]


def test_unsafe_conversions_are_400(mlflow_server: Proc) -> None:
    split = {"columns": COLUMNS, "index": [0], "data": [[2, 3, "ab", "not a date"]]}
    resp = score(mlflow_server, {"input_data": split})
    assert resp.status_code == 400
    assert resp.json()["message"].startswith("column 't': cannot be read as datetime: ")
    bad_params = score(
        mlflow_server, {"input_data": {"columns": COLUMNS, "data": []}, "params": [1]}
    )
    assert bad_params.json() == error_json("params: expected an object, got list", "m")


def test_swagger_has_example_params_and_output(mlflow_server: Proc) -> None:
    doc = httpx.get(mlflow_server.url + "/swagger.json").json()
    props = doc["definitions"]["ServiceInput"]["properties"]
    assert props["input_data"]["example"]["columns"] == COLUMNS
    assert props["params"]["example"] == {"scale": 1.0}
    assert props["params"]["properties"] == {"scale": {"type": "number"}}
    assert doc["definitions"]["ServiceOutput"]["type"] == "array"
    v3 = httpx.get(mlflow_server.url + "/swagger.json?version=3").json()
    assert v3["openapi"].startswith("3.")
    assert v3["components"]["schemas"]["ServiceInput"] == doc["definitions"]["ServiceInput"]
    missing = httpx.get(mlflow_server.url + "/swagger.json?version=9")
    assert missing.status_code == 404
    assert missing.json()["message"] == (
        "Swagger version [9] is not valid. Supported versions: [2, 3, 3.1]."
    )
