"""inference-schema with a numpy parameter: the server parses the body into an ndarray."""

import os

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import (
    StandardPythonParameterType,
)
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0]])))
@output_schema(StandardPythonParameterType({"predictions": [1.0]}))
def run(data):
    return {"predictions": model.predict(data).tolist(), "shape": list(data.shape)}
