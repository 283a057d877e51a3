"""inference-schema run() that scores rows one by one: a numpy array in, one row out per row
(the prediction and the row's bmi, declared with ``@output_schema``), so the server batches it
with no change to the script.

Body: ``{"data": [[10 features], ...]}``. A row whose first value is 999 makes the call sleep
2 s (requests sent meanwhile queue up and form one batch); a NaN makes the model raise, for
every batch it is in. ``SCHEMA_BATCHABLE=0`` sets ``run.batchable = False`` (the opt-out);
``ROWS_LOG`` names a file that gets the rows of each call.
"""

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


def _log_rows(n):
    """``ROWS_LOG``: append the rows of each call (the test sees whether calls merged)."""
    if os.environ.get("ROWS_LOG"):
        with open(os.environ["ROWS_LOG"], "a") as f:
            f.write(f"{n}\n")


@input_schema("data", NumpyParameterType(SAMPLE))
@output_schema(NumpyParameterType(np.array([[1.0, 0.061]])))
def run(data):
    _log_rows(len(data))
    if (data[:, 0] == 999).any():
        time.sleep(2)
    return np.column_stack((model.predict(data), data[:, 2]))  # with bmi: each row's own


run.batchable = os.environ.get("SCHEMA_BATCHABLE", "1") == "1"
