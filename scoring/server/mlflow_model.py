"""Serve an MLflow model folder with no scoring script (Azure's "no-code" deployment).

Accepted bodies (what Azure ML and ``mlflow models serve`` accept):

- ``{"input_data": {"columns": [...], "index": [...], "data": [[...]]}}`` (pandas split)
- ``{"input_data": [[...], ...]}`` (rows; named by the signature's columns when it has them)
- ``{"input_data": {"col": [...], ...}}`` (columns) and ``{"input_data": [{"col": v}, ...]}``
- MLflow's ``dataframe_split``, ``dataframe_records``, ``instances`` and ``inputs``.

As Azure's MLflow scoring, values follow the signature's column types where that is safe
(an integer sent for a ``double`` column becomes a float; an ISO string for a ``datetime``
column a timestamp), and ``{"params": {...}}`` beside the input reaches ``predict(params=)``.
The swagger document carries the signature's columns with an example row, the ``params``
and the output schema.

mlflow is an optional extra: without it, start-up fails with a message naming
``pip install 'ml-endpoints[mlflow]'``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scoring.server.errors import BadInput, ScoringError, ScriptFailed
from scoring.server.jsonable import jsonable
from scoring.server.scorer import BatchScore, Failed, Score, ScriptHeaders, split_rows
from scoring.server.script import describe_folder

KEYS = ("input_data", "dataframe_split", "dataframe_records", "instances", "inputs")


def find_mlmodel(model_dir: Path) -> Path | None:
    """The folder holding ``MLmodel``: ``model_dir`` itself or one or two levels below it."""
    for pattern in ("MLmodel", "*/MLmodel", "*/*/MLmodel"):
        hits = sorted(model_dir.glob(pattern))
        if hits:
            return hits[0].parent
    return None


class MlflowScorer:
    """An MLflow pyfunc model behind the same ``init()``/``call()`` interface as a script
    (a ``Scorer``)."""

    wants_headers = False
    raw_http = False
    any_content_type = False

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.model: Any = None
        self.columns: list[str] | None = None
        self.types: dict[str, str] = {}  # column -> the signature's type name ("double", ...)
        self.widen: dict[str, str] = {}  # column -> "float" | "datetime", from the signature
        self.signature: Any = None
        self.call: Score = self._call
        self.call_batch: BatchScore | None = self._call_batch

    @property
    def source(self) -> str:
        return str(self.model_dir / "MLmodel")

    def init(self) -> None:
        from scoring.server.script import InitFailed

        folder = find_mlmodel(self.model_dir)
        if folder is None:
            raise InitFailed(
                f"no entry script given and {str(self.model_dir)!r} has no MLmodel "
                f"file; it holds: {describe_folder(self.model_dir)}"
            )
        try:
            import mlflow.pyfunc
        except ImportError as exc:
            raise InitFailed(
                f"{folder / 'MLmodel'} is an MLflow model but mlflow is not installed "
                f"({exc}); install it with: pip install 'ml-endpoints[mlflow]'"
            ) from exc
        try:
            self.model = mlflow.pyfunc.load_model(str(folder))
        except Exception as exc:
            raise InitFailed(
                f"loading the MLflow model in {str(folder)!r} failed: {type(exc).__name__}: "
                f"{exc}; it holds: {describe_folder(folder)}"
            ) from exc
        schema = self.model.metadata.get_input_schema()
        self.signature = self.model.metadata.signature
        if schema is not None and schema.has_input_names():
            self.columns = list(schema.input_names())
            if not schema.is_tensor_spec():
                for spec in schema.inputs:
                    kind = _type_name(spec.type)
                    self.types[str(spec.name)] = kind
                    if kind in ("double", "float"):
                        self.widen[str(spec.name)] = "float"
                    elif kind == "datetime":
                        self.widen[str(spec.name)] = "datetime"

    def call_request(self, request: Any) -> Any:
        raise AssertionError("an MLflow model takes no raw request")

    def _call(self, raw: str, headers: ScriptHeaders | None) -> Any:
        return self._predict(*self._read(_load(raw)))

    def _read(self, payload: Any) -> tuple[Any, dict[str, Any] | None]:
        """A parsed body as ``predict``'s input and params."""
        data = self.decode(payload)
        params = payload.get("params")
        if params is not None and not isinstance(params, dict):
            raise BadInput(f"params: expected an object, got {type(params).__name__}")
        return data, params

    def _predict(self, data: Any, params: dict[str, Any] | None) -> Any:
        if params is not None:
            return jsonable(self.model.predict(data, params=params))
        return jsonable(self.model.predict(data))

    def _call_batch(
        self, raws: Sequence[str], headers: Sequence[ScriptHeaders | None]
    ) -> list[Any]:
        """Several bodies: one ``predict`` per group of inputs that concatenate without
        changing a column's type, split back by rows. Rows sent as JSON lists under the same
        columns, with the same JSON type per column, make one table at once (a table per
        request then ``concat`` costs more than the model); other tables and arrays group by
        columns and dtypes, or row shape and dtype; always by params. An input that cannot be
        read fails alone; a group whose call fails, or whose answer has not one row per input
        row, is scored one input at a time, each getting what it gets alone."""
        outcomes: list[Any] = [None] * len(raws)
        groups: dict[Any, list[tuple[int, Any, Any]]] = {}  # key -> (i, payload, data)
        for i, raw in enumerate(raws):
            try:
                payload = _load(raw)
                plain = self._plain_rows(payload)
                if plain is not None:
                    key, rows = plain
                    groups.setdefault(key, []).append((i, payload, rows))
                    continue
                data, params = self._read(payload)
            except Exception as exc:
                outcomes[i] = Failed(exc)
                continue
            found = _batch_key(data, params)
            groups.setdefault(found or ("alone", i), []).append((i, payload, data))
        for key, members in groups.items():
            parts = (
                self._predict_group(key, [d for _, _, d in members]) if len(members) > 1 else None
            )
            for n, (i, payload, _) in enumerate(members):
                if parts is not None:
                    outcomes[i] = parts[n]
                    continue
                try:
                    outcomes[i] = self._predict(*self._read(payload))
                except Exception as exc:
                    outcomes[i] = Failed(exc)
        return outcomes

    def _plain_rows(self, payload: Any) -> tuple[tuple[Any, ...], tuple[list[Any], Any]] | None:
        """``(group key, (rows, index))`` for a body of JSON rows under named columns whose
        every row has the same JSON types (so a table of many such bodies gets the dtypes each
        gets alone), else None."""
        if not isinstance(payload, dict):
            return None
        name = next((k for k in KEYS if k in payload), None)
        if name is None or name == "dataframe_records":
            return None
        value, params, index = payload[name], payload.get("params"), None
        if isinstance(value, dict) and "data" in value and len(value) <= 3:
            if not set(value) <= {"columns", "index", "data"}:
                return None
            rows, columns, index = (
                value["data"],
                value.get("columns") or self.columns,
                value.get("index"),
            )
        elif isinstance(value, list):
            rows, columns = value, self.columns
        else:
            return None
        if not isinstance(rows, list) or not rows or not isinstance(columns, list):
            return None
        if not all(isinstance(c, str) for c in columns) or (
            params is not None and not isinstance(params, dict)
        ):
            return None
        if index is not None and (not isinstance(index, list) or len(index) != len(rows)):
            return None
        if not all(isinstance(r, list) for r in rows) or len(rows[0]) != len(columns):
            return None
        types = tuple(map(type, rows[0]))
        if not set(types) <= _PLAIN or any(tuple(map(type, r)) != types for r in rows):
            return None
        if int in types and any(abs(v) >= 2**53 for r in rows for v in r if type(v) is int):
            return None  # pandas may pick another integer dtype for a mix of sizes
        given = None if params is None else json.dumps(params, sort_keys=True)
        return ("rows", tuple(columns), types, given), (rows, index)

    def _predict_group(self, key: tuple[Any, ...], inputs: list[Any]) -> list[Any] | None:
        """One ``predict`` over ``inputs`` merged, split back per input; None if the call
        fails or its answer has not one row per input row."""
        import numpy as np
        import pandas as pd

        params = None if key[-1] is None else json.loads(key[-1])
        try:
            if key[0] == "rows":  # (rows, index) per input: one table, each keeps its index
                sizes = [len(rows) for rows, _ in inputs]
                index = None
                if any(i is not None for _, i in inputs):
                    index = [
                        label
                        for (rows, i) in inputs
                        for label in (i if i is not None else range(len(rows)))
                    ]
                merged = pd.DataFrame(
                    [row for rows, _ in inputs for row in rows], columns=list(key[1]), index=index
                )
                if self.widen:
                    merged = self._follow_signature(merged)
            else:
                sizes = [len(d) for d in inputs]
                merged = pd.concat(inputs) if key[0] == "frame" else np.concatenate(inputs)
            if params is not None:
                out = self.model.predict(merged, params=params)
            else:
                out = self.model.predict(merged)
            parts = split_rows(out, sizes)
        except Exception:
            return None
        return None if parts is None else [jsonable(part) for part in parts]

    def decode(self, payload: Any) -> Any:
        """Turn one of the accepted body shapes into what ``predict`` takes."""
        import pandas as pd

        if not isinstance(payload, dict) or not any(k in payload for k in KEYS):
            raise BadInput(
                f"request body must be a JSON object with one of {list(KEYS)}, "
                'e.g. {"input_data": {"columns": [...], "data": [[...]]}}'
            )
        key = next(k for k in KEYS if k in payload)
        value = payload[key]
        frame = self._frame(key, value)
        if self.widen and isinstance(frame, pd.DataFrame):
            frame = self._follow_signature(frame)
        return frame

    def _follow_signature(self, frame: Any) -> Any:
        """Safe conversions to the signature's column types (int -> double, str -> datetime)."""
        import pandas as pd

        for column, kind in self.widen.items():
            if column not in frame.columns:
                continue
            values = frame[column]
            try:
                if kind == "float" and pd.api.types.is_integer_dtype(values):
                    frame[column] = values.astype("float64")
                elif kind == "datetime" and not pd.api.types.is_datetime64_any_dtype(values):
                    frame[column] = pd.to_datetime(values)
            except (ValueError, TypeError) as exc:
                raise BadInput(f"column {column!r}: cannot be read as {kind}: {exc}") from exc
        return frame

    def _frame(self, key: str, value: Any) -> Any:
        import pandas as pd

        try:
            if key == "dataframe_records":
                return pd.DataFrame.from_records(value, columns=self.columns)
            if isinstance(value, dict) and "data" in value:
                return pd.DataFrame(
                    value["data"],
                    columns=value.get("columns") or self.columns,
                    index=value.get("index"),
                )
            if isinstance(value, dict):
                return pd.DataFrame(value)
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return pd.DataFrame.from_records(value)
            if isinstance(value, list):
                if self.columns is not None:
                    return pd.DataFrame(value, columns=self.columns)
                import numpy as np

                return np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise BadInput(f"{key}: cannot be read as a table: {exc}") from exc
        raise BadInput(f"{key}: expected a list of rows or an object, got {type(value).__name__}")

    def classify(self, exc: BaseException) -> ScoringError:
        if isinstance(exc, ScoringError):
            return exc
        if type(exc).__name__ == "MlflowException":  # schema enforcement rejected the input
            return BadInput(f"input does not match the model's signature: {exc}")
        return ScriptFailed(exc, where="model.predict()")

    def swagger(self, version: str = "2") -> dict[str, Any]:
        from scoring.server.swagger import document

        schema = output = None
        if self.columns:
            example_row = [_EXAMPLE.get(self.types.get(c, ""), 0) for c in self.columns]
            properties: dict[str, Any] = {
                "input_data": {
                    "type": "object",
                    "properties": {
                        "columns": {
                            "type": "array",
                            "items": {"type": "string"},
                            "example": self.columns,
                        },
                        "index": {"type": "array", "items": {"type": "integer"}},
                        "data": {"type": "array", "items": {"type": "array", "items": {}}},
                    },
                    "example": {"columns": self.columns, "index": [0], "data": [example_row]},
                }
            }
            params = getattr(self.signature, "params", None)
            if params is not None:
                properties["params"] = {
                    "type": "object",
                    "properties": {
                        p.name: {"type": _JSON_TYPES.get(_type_name(p.dtype), "string")}
                        for p in params.params
                    },
                    "example": {p.name: p.default for p in params.params},
                }
            schema = {"type": "object", "properties": properties, "required": ["input_data"]}
            outputs = getattr(self.signature, "outputs", None)
            if outputs is not None:
                output = {"type": "array", "items": {}, "description": str(outputs)}
        return document(
            title=self.model_dir.name, input_schema=schema, output_schema=output, version=version
        )


_EXAMPLE: dict[str, Any] = {
    "boolean": True,
    "double": 0.15,
    "float": 0.15,
    "string": "sample string",
    "datetime": "2024-01-01T00:00:00",
}


#: JSON value types whose columns pandas types the same whatever the number of rows.
_PLAIN = frozenset({int, float, str, bool})


def _load(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadInput(f"request body is not valid JSON: {exc}") from exc


def _batch_key(data: Any, params: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What inputs must share to be predicted together unchanged (None: never batched):
    a table's columns and dtypes, or an array's row shape and dtype, and the params."""
    import numpy as np
    import pandas as pd

    given = None if params is None else json.dumps(params, sort_keys=True)
    if isinstance(data, pd.DataFrame):
        dtypes = tuple(str(t) for t in data.dtypes)
        return ("frame", tuple(str(c) for c in data.columns), dtypes, given)
    if isinstance(data, np.ndarray) and data.ndim >= 1:
        return ("array", data.shape[1:], data.dtype.str, given)
    return None


def _type_name(kind: Any) -> str:
    """An MLflow ``DataType`` as its name (``double``), whatever MLflow version."""
    return str(getattr(kind, "name", kind))


_JSON_TYPES = {
    "boolean": "boolean",
    "integer": "integer",
    "long": "integer",
    "float": "number",
    "double": "number",
    "string": "string",
}
