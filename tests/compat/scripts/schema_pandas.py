"""inference-schema with a pandas parameter (int, double, string columns) and an optional
standard-Python parameter."""

import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import (
    StandardPythonParameterType,
)
from inference_schema.schema_decorators import input_schema, output_schema

SAMPLE = pd.DataFrame({"count": [1], "price": [2.5], "name": ["a"]})


def init():
    pass


@input_schema("frame", PandasParameterType(SAMPLE))
@input_schema("options", StandardPythonParameterType({"scale": 1.0, "tag": "x"}), optional=True)
@output_schema(StandardPythonParameterType({"total": 1.0}))
def run(frame, options=None):
    scale = (options or {}).get("scale", 1.0)
    return {
        "total": float((frame["count"] * frame["price"]).sum() * scale),
        "names": list(frame["name"]),
        "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
        "tag": (options or {}).get("tag"),
    }
