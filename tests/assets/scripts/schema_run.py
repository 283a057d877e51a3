"""inference-schema decorated run(): the server parses the body into ``data`` (a numpy array)."""

import os

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import (
    StandardPythonParameterType,
)
from inference_schema.schema_decorators import input_schema, output_schema

SAMPLE = np.array([[0.038, 0.050, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]])


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))


@input_schema("data", NumpyParameterType(SAMPLE))
@output_schema(StandardPythonParameterType({"predictions": [1], "type": "ndarray"}))
def run(data):
    assert isinstance(data, np.ndarray), type(data)
    return {"predictions": model.predict(data).tolist(), "type": type(data).__name__}
