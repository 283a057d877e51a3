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
from scoring.server.scorer import BatchScore, Failed, Score, ScriptHeaders
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
        data, params = self._parse(raw)
        return self._predict(data, params)

    def _parse(self, raw: str) -> tuple[Any, dict[str, Any] | None]:
        """A body as ``predict``'s input and params."""
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise BadInput(f"request body is not valid JSON: {exc}") from exc
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
        changing a column's type (same columns, dtypes and params), split back by rows. An
        input that cannot be read fails alone; a group whose call fails, or whose answer has
        not one row per input row, is scored one input at a time."""
        outcomes: list[Any] = [None] * len(raws)
        groups: dict[Any, list[tuple[int, Any, dict[str, Any] | None]]] = {}
        for i, raw in enumerate(raws):
            try:
                data, params = self._parse(raw)
            except Exception as exc:
                outcomes[i] = Failed(exc)
                continue
            key = _batch_key(data, params)
            groups.setdefault(("alone", i) if key is None else key, []).append((i, data, params))
        for members in groups.values():
            parts = None
            if len(members) > 1:
                parts = self._predict_group([d for _, d, _ in members], members[0][2])
            for n, (i, data, params) in enumerate(members):
                if parts is not None:
                    outcomes[i] = parts[n]
                    continue
                try:
                    outcomes[i] = self._predict(data, params)
                except Exception as exc:
                    outcomes[i] = Failed(exc)
        return outcomes

    def _predict_group(self, inputs: list[Any], params: dict[str, Any] | None) -> list[Any] | None:
        """One ``predict`` over ``inputs`` concatenated, split back per input; None if the
        call fails or its answer has not one row per input row."""
        import numpy as np
        import pandas as pd

        rows = [len(d) for d in inputs]
        total = sum(rows)
        if isinstance(inputs[0], pd.DataFrame):
            merged = pd.concat(inputs)  # each input keeps its index, as when alone
        else:
            merged = np.concatenate(inputs)
        try:
            if params is not None:
                out = self.model.predict(merged, params=params)
            else:
                out = self.model.predict(merged)
            if isinstance(out, pd.DataFrame | pd.Series):
                out = [out.iloc[a : a + n] for a, n in zip(_starts(rows), rows, strict=True)]
            elif isinstance(out, np.ndarray | list) and len(out) == total and np.ndim(out) > 0:
                out = [out[a : a + n] for a, n in zip(_starts(rows), rows, strict=True)]
            else:
                return None
        except Exception:
            return None
        if sum(len(part) for part in out) != total:
            return None
        return [jsonable(part) for part in out]

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


def _starts(rows: list[int]) -> list[int]:
    """Where each input's rows begin in the concatenation."""
    out, at = [], 0
    for n in rows:
        out.append(at)
        at += n
    return out


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
