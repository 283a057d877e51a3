"""Adaptive batching for inference-schema scripts that never asked for it.

A ``run`` decorated with ``@input_schema`` is batched, with no change to the script, only
when its declarations say it scores rows one by one:

- ``run`` itself (under the inference-schema decorators only) takes exactly one parameter,
  declared ``NumpyParameterType`` or ``PandasParameterType`` (rows along axis 0; pandas
  ``orient`` records, values or split), converted and not optional: no other argument, no
  ``request_headers``, no ``**kwargs`` (they could differ between the merged requests);
- ``@output_schema`` declares an array (numpy, pandas records, or a list) with as many items
  as the input sample has rows: one answer per input row;
- ``run.batchable`` is not False (the script's opt-out), the module has no ``run_batch``
  (that one wins) and keeps no data ``Collector`` (its inputs would be collected merged,
  under one request's id).

A batch then reads each request as ``run()``'s decorator would, concatenates the inputs when
that changes no dtype (same dtype and row shape; same columns, dtypes and a default index),
calls ``run`` once and cuts its answer back by rows. Anything else raises, and the batcher
scores that batch one request at a time, each getting what it gets alone: a body that does
not read, inputs that do not concatenate, a ``run`` that raises (a poisoned input), and an
answer without one row per input row, after which this worker stops merging and logs it
(the script does not answer per row; calling it twice per batch would only cost).

What no declaration proves, and this cannot check: that a row's answer depends on that row
alone (no normalising over the input, no use of the index, no randomness). Such a script
sets ``run.batchable = False``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from scoring.common.logs import get_log
from scoring.server.scorer import ScriptHeaders, split_rows

_DECORATORS = "inference_schema.schema_decorators"
_NUMPY = "inference_schema.parameter_types.numpy_parameter_type.NumpyParameterType"
_PANDAS = "inference_schema.parameter_types.pandas_parameter_type.PandasParameterType"
_ORIENTS = ("records", "values", "split")  # a frame read with these has rows, not labels


class Unmerged(Exception):
    """This batch is not merged; the batcher scores its requests one at a time."""


class SchemaBatch:
    """``call_batch`` for a row-wise inference-schema ``run`` (a ``BatchScore``)."""

    def __init__(self, run: Callable[..., Any], name: str, param_type: Any, source: str) -> None:
        self.run = run
        self.name = name
        self.param_type = param_type
        self.frame = _qualname(param_type) == _PANDAS
        self.source = source  # the script, for the log line when merging stops
        self.merging = True

    def __call__(self, raws: Sequence[str], headers: Sequence[ScriptHeaders | None]) -> list[Any]:
        if not self.merging:
            raise Unmerged("run() does not answer one row per input row")
        inputs = [self._read(raw) for raw in raws]
        merged = self._merge(inputs)
        sizes = [len(x) for x in inputs]
        out = self.run(**{self.name: merged})
        parts = split_rows(out, sizes)
        if parts is not None and self.frame and hasattr(out, "iloc"):
            if not out.index.equals(merged.index):  # run() set its own index: unknown alone
                parts = None
            else:
                parts = [p.reset_index(drop=True) for p in parts]
        if parts is None:
            self._stop(out, sum(sizes))
            raise Unmerged(f"run() returned {type(out).__name__}, not one row per input row")
        return parts

    def _stop(self, out: Any, rows: int) -> None:
        """No more merging in this worker; logged once, since it costs the batching's gain."""
        if self.merging:
            self.merging = False
            get_log().event(
                "warning",
                f"run() answered {rows} merged input rows with a {type(out).__name__} that has "
                "not one row per input row; this worker now calls it once per request "
                "(set run.batchable = False to skip the attempt)",
                event="schema_batching_stopped",
                script=self.source,
            )

    def _read(self, raw: str) -> Any:
        """One body as ``run()``'s decorator converts it (any failure: scored alone)."""
        payload = json.loads(raw)
        if not isinstance(payload, dict) or self.name not in payload:
            raise Unmerged(f"the body has no {self.name!r}")
        return self.param_type.deserialize_input(payload[self.name])

    def _merge(self, inputs: list[Any]) -> Any:
        """The inputs as one, if each keeps its dtypes and rows: else ``Unmerged``."""
        first = inputs[0]
        if self.frame:
            import pandas as pd

            for x in inputs:
                index = x.index
                if not (
                    len(x)
                    and isinstance(index, pd.RangeIndex)
                    and index.start == 0
                    and index.step == 1
                    and x.columns.equals(first.columns)
                    and x.dtypes.equals(first.dtypes)
                ):
                    raise Unmerged("the frames differ in columns, dtypes or index")
            merged = pd.concat(inputs, ignore_index=True)
            if not merged.dtypes.equals(first.dtypes):
                raise Unmerged("concatenating changed a column's dtype")
            return merged
        import numpy as np

        for x in inputs:
            if not (
                x.ndim and len(x) and x.dtype == first.dtype and x.shape[1:] == first.shape[1:]
            ):
                raise Unmerged("the arrays differ in dtype or row shape")
        return np.concatenate(inputs)


def schema_batch(run: Callable[..., Any], module: ModuleType | None) -> SchemaBatch | None:
    """The batch call for an inference-schema ``run`` that scores rows one by one, else None
    (see the module docstring for the rules). Never raises: a layout of decorators this does
    not foresee leaves the script unbatched, as it was."""
    try:
        return _schema_batch(run, module)
    except Exception:
        return None


def _schema_batch(run: Callable[..., Any], module: ModuleType | None) -> SchemaBatch | None:
    if getattr(run, "batchable", True) is False or callable(getattr(module, "run_batch", None)):
        return None
    if module is not None and _keeps_collector(module):
        return None
    inputs: list[Mapping[str, Any]] = []
    outputs = 0
    fn: Any = run
    while hasattr(fn, "_self_wrapper") and hasattr(fn, "__wrapped__"):  # wrapt's proxies
        wrapper = fn._self_wrapper
        if getattr(wrapper, "__module__", None) != _DECORATORS:
            return None  # another decorator: who knows what it does with a batch
        kind = wrapper.__qualname__.split(".")[0]
        if kind == "input_schema":
            inputs.append(inspect.getclosurevars(wrapper).nonlocals)
        elif kind == "output_schema":
            outputs += 1
        else:
            return None
        fn = fn.__wrapped__
    if not inspect.isfunction(fn) or hasattr(fn, "__wrapped__"):  # functools.wraps: a wrapper
        return None
    if len(inputs) != 1 or outputs != 1:
        return None
    params = list(inspect.signature(fn, follow_wrapped=False).parameters.values())
    declared = inputs[0]
    name, param_type = declared.get("param_name"), declared.get("param_type")
    if (
        len(params) != 1
        or params[0].name != name
        or params[0].kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD
        or declared.get("convert_to_provided_type") is not True
        or declared.get("optional") is not False
        or _qualname(param_type) not in (_NUMPY, _PANDAS)
    ):
        return None
    sample: Any = getattr(param_type, "sample_input", None)
    if _qualname(param_type) == _PANDAS and getattr(param_type, "orient", None) not in _ORIENTS:
        return None
    if getattr(sample, "ndim", 0) < 1 or not len(sample):
        return None
    if not _per_row_output(run, len(sample)):
        return None
    return SchemaBatch(run, name, param_type, str(getattr(module, "__file__", None) or ""))


def _per_row_output(run: Callable[..., Any], rows: int) -> bool:
    """Whether ``@output_schema`` declares an array of one item per input sample row."""
    from inference_schema.schema_util import get_output_schema

    schema = get_output_schema(run) or {}
    example = schema.get("example")
    return schema.get("type") == "array" and isinstance(example, list) and len(example) == rows


def _keeps_collector(module: ModuleType) -> bool:
    """Whether the script holds a data ``Collector`` (Azure's or the stand-in) or its class."""
    for value in list(vars(module).values()):
        cls = value if isinstance(value, type) else type(value)
        if cls.__name__ == "Collector" and cls.__module__.startswith(
            ("azureml.ai.monitoring", "scoring.server.collector")
        ):
            return True
    return False


def _qualname(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"
