"""inference-schema run() that declares one output per input row but answers a single
aggregate (the mean prediction): a batch's answer does not split by rows, so the server must
score each request alone. ``{"data": [[10 features], ...]}``; 999 first sleeps 2 s."""

import os
import time

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema

SAMPLE = np.array([[0.038, 0.050, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]])


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))


@input_schema("data", NumpyParameterType(SAMPLE))
@output_schema(NumpyParameterType(np.array([151.0])))
def run(data):
    if (data[:, 0] == 999).any():
        time.sleep(2)
    return [float(model.predict(data).mean())]
