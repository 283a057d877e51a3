"""Which inference-schema scripts are batched unasked (``scoring/server/schema_batch.py``), and
what a batch call returns: each request's part, the very bytes ``run()`` gives it alone, or an
``Unmerged`` error that makes the batcher score the requests one at a time.

The batches themselves under concurrent HTTP load: ``tests/http/test_batching.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import (
    StandardPythonParameterType,
)
from inference_schema.schema_decorators import input_schema, output_schema

from scoring.server.app import encode_result
from scoring.server.collector import Collector
from scoring.server.schema_batch import SchemaBatch, Unmerged, schema_batch
from scoring.server.scorer import split_rows

ROW = np.array([[1.0, 2.0, 3.0]])
FRAME = pd.DataFrame({"a": [1], "b": [2.5]})
CALLS: list[int] = []  # rows per run() call of the functions below


@input_schema("data", NumpyParameterType(ROW))
@output_schema(NumpyParameterType(np.array([1.0])))
def row_sums(data: np.ndarray) -> np.ndarray:
    CALLS.append(len(data))
    return data.sum(axis=1)


@input_schema("data", NumpyParameterType(ROW))
@output_schema(StandardPythonParameterType({"predictions": [1.0]}))
def dict_out(data: np.ndarray) -> dict[str, Any]:
    return {"predictions": data.sum(axis=1).tolist()}


@input_schema("data", NumpyParameterType(ROW))
def no_output_schema(data: np.ndarray) -> list[float]:
    return data.sum(axis=1).tolist()


@input_schema("data", NumpyParameterType(ROW))
@input_schema("scale", StandardPythonParameterType(1.0), optional=True)
@output_schema(NumpyParameterType(np.array([1.0])))
def with_option(data: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return data.sum(axis=1) * scale


@input_schema("data", NumpyParameterType(ROW))
@output_schema(NumpyParameterType(np.array([1.0])))
def with_headers(data: np.ndarray, request_headers: Any = None) -> np.ndarray:
    return data.sum(axis=1)


@input_schema("data", NumpyParameterType(ROW))
@output_schema(NumpyParameterType(np.array([1.0, 2.0])))
def two_outputs_per_row(data: np.ndarray) -> np.ndarray:
    return data.sum(axis=1)


@input_schema("data", StandardPythonParameterType([[1.0, 2.0, 3.0]]))
@output_schema(StandardPythonParameterType([1.0]))
def plain_lists(data: list[list[float]]) -> list[float]:
    return [sum(r) for r in data]


def _logged(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


@input_schema("data", NumpyParameterType(ROW))
@output_schema(NumpyParameterType(np.array([1.0])))
@_logged
def other_decorator(data: np.ndarray) -> np.ndarray:
    return data.sum(axis=1)


@input_schema("data", NumpyParameterType(ROW, enforce_column_type=False))
@output_schema(NumpyParameterType(np.array([1.0])))
def any_dtype(data: np.ndarray) -> list[str]:
    return [str(data.dtype)] * len(data)


@input_schema("data", NumpyParameterType(ROW))
@output_schema(NumpyParameterType(np.array([1.0])))
def aggregate(data: np.ndarray) -> list[float]:
    CALLS.append(len(data))
    return [float(data.sum())]


@input_schema("frame", PandasParameterType(FRAME))
@output_schema(PandasParameterType(pd.DataFrame({"total": [2.5]})))
def frame_totals(frame: pd.DataFrame) -> pd.DataFrame:
    CALLS.append(len(frame))
    return pd.DataFrame({"total": frame["a"] * frame["b"], "name": frame["a"].astype(str)})


@input_schema("frame", PandasParameterType(FRAME))
@output_schema(PandasParameterType(pd.DataFrame({"total": [2.5]})))
def frame_own_index(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(list(frame["a"] * frame["b"]), index=[f"r{i}" for i in range(len(frame))])


@input_schema("frame", PandasParameterType(FRAME, orient="index"))
@output_schema(PandasParameterType(pd.DataFrame({"total": [2.5]})))
def frame_by_label(frame: pd.DataFrame) -> pd.Series:
    return frame["a"] * frame["b"]


def alone(run: Callable[..., Any], raw: str, name: str = "data") -> bytes:
    """The bytes a request gets when ``run()`` scores it alone, as the server calls it (other
    keys of the body ignored)."""
    return encode_result(run(**{name: json.loads(raw)[name]}))[1]


def batch_of(run: Callable[..., Any]) -> SchemaBatch:
    found = schema_batch(run, None)
    assert found is not None
    return found


def bodies(*rows_per_body: list[list[Any]], name: str = "data") -> list[str]:
    return [json.dumps({name: rows, "ignored": 1}) for rows in rows_per_body]


def test_a_row_wise_numpy_run_is_batched_and_each_part_is_its_answer_alone() -> None:
    raws = bodies([[1, 2, 3]], [[4, 5, 6], [7, 8, 9.5]], [[0, 0, 1]])
    CALLS.clear()
    parts = batch_of(row_sums)(raws, [None] * 3)
    assert CALLS == [4]  # one call for the four rows
    assert [encode_result(p)[1] for p in parts] == [alone(row_sums, r) for r in raws]
    assert [type(p) for p in parts] == [np.ndarray] * 3


def test_a_frame_run_is_batched_each_part_as_alone_with_its_own_index() -> None:
    raws = bodies(
        [{"a": 1, "b": 2.0}],
        [{"a": 2, "b": 0.5}, {"a": 3, "b": 1.5}],
        name="frame",
    )
    CALLS.clear()
    parts = batch_of(frame_totals)(raws, [None, None])
    assert CALLS == [3]
    assert [encode_result(p)[1] for p in parts] == [alone(frame_totals, r, "frame") for r in raws]
    assert [list(p.index) for p in parts] == [[0], [0, 1]]


@pytest.mark.parametrize(
    ("run", "why"),
    [
        (dict_out, "a dict answer"),
        (no_output_schema, "no declared output"),
        (with_option, "a second argument"),
        (with_headers, "request_headers"),
        (two_outputs_per_row, "two outputs for one sample row"),
        (plain_lists, "a standard-Python input"),
        (other_decorator, "a decorator of another library"),
        (frame_by_label, "a frame read by labels (orient index)"),
    ],
)
def test_runs_not_provably_row_wise_are_not_batched(run: Callable[..., Any], why: str) -> None:
    assert schema_batch(run, None) is None, why


def test_the_script_opts_out_or_batches_itself_or_keeps_a_collector() -> None:
    assert schema_batch(row_sums, types.ModuleType("plain")) is not None
    own = types.ModuleType("own")
    own.run_batch = lambda raws: raws  # type: ignore[attr-defined]
    assert schema_batch(row_sums, own) is None
    collecting = types.ModuleType("collecting")
    collecting.Collector = Collector  # type: ignore[attr-defined]
    assert schema_batch(row_sums, collecting) is None
    row_sums.batchable = False  # type: ignore[attr-defined]
    try:
        assert schema_batch(row_sums, None) is None
    finally:
        del row_sums.batchable  # type: ignore[attr-defined]


def test_inputs_that_would_change_dtype_merged_are_not_merged() -> None:
    """Ints alone are an int array: merged with floats they would become floats."""
    batch = batch_of(any_dtype)
    with pytest.raises(Unmerged):
        batch(bodies([[1, 2, 3]], [[1.5, 2, 3]]), [None, None])
    assert batch.merging  # the next batch may well merge
    raws = bodies([[1, 2, 3]], [[4, 5, 6]])
    parts = batch(raws, [None, None])
    assert [encode_result(p)[1] for p in parts] == [alone(any_dtype, r) for r in raws]


def test_an_unreadable_body_or_a_raising_run_leaves_the_batch_to_one_at_a_time() -> None:
    batch = batch_of(row_sums)
    for raws in (
        ['{"data": [[1, 2, 3]]}', "not json"],
        ['{"data": [[1, 2, 3]]}', '{"rows": [[1, 2, 3]]}'],
        ['{"data": [[1, 2, 3]]}', '{"data": [[1, 2]]}'],  # wrong row shape
        ['{"data": [[1, 2, 3]]}', '{"data": []}'],
    ):
        with pytest.raises(Exception):  # noqa: B017 - each is scored alone, with its own error
            batch(raws, [None, None])
    assert batch.merging


def test_an_answer_not_per_row_stops_merging_in_this_worker() -> None:
    batch = batch_of(aggregate)
    CALLS.clear()
    with pytest.raises(Unmerged, match="not one row per input row"):
        batch(bodies([[1, 2, 3]], [[4, 5, 6]]), [None, None])
    assert not batch.merging
    with pytest.raises(Unmerged):
        batch(bodies([[1, 2, 3]], [[4, 5, 6]]), [None, None])
    assert CALLS == [2]  # the second batch did not call run()


def test_a_frame_answer_with_its_own_index_is_not_split() -> None:
    batch = batch_of(frame_own_index)
    with pytest.raises(Unmerged):
        batch(bodies([{"a": 1, "b": 2.0}], [{"a": 2, "b": 0.5}], name="frame"), [None, None])


@pytest.mark.parametrize(
    ("out", "parts"),
    [
        ([1, 2, 3], [[1], [2, 3]]),
        ((1, 2, 3), [(1,), (2, 3)]),
        (np.array([[1], [2], [3]]), [[[1]], [[2], [3]]]),
        ({"a": [1, 2, 3]}, None),
        (3, None),
        (np.float64(3.0), None),
        ([1, 2], None),
    ],
)
def test_split_rows(out: Any, parts: list[Any] | None) -> None:
    got = split_rows(out, [1, 2])
    if parts is None:
        assert got is None
    else:
        assert got is not None
        assert [p.tolist() if isinstance(p, np.ndarray) else p for p in got] == parts


@pytest.mark.parametrize("script", ["schema_numpy.py", "schema_pandas.py"])
def test_the_azure_compat_schema_scripts_stay_unbatched(script: str) -> None:
    """Their answers are dicts (and schema_pandas.py takes a second argument): called once per
    request as on Microsoft's server, so the compat tier's byte comparisons hold unchanged."""
    path = Path(__file__).resolve().parents[1] / "compat" / "scripts" / script
    spec = importlib.util.spec_from_file_location(f"unit_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert schema_batch(module.run, module) is None
