"""inference-schema run() over a pandas frame (records), answering a frame of one row per input
row: batched by the server with no change to the script.

Body: ``{"frame": [{"age": ..., ... "s6": ...}, ...]}`` (the 10 diabetes features). ``age``
999 makes the call sleep 2 s; a NaN makes the model raise, for every batch it is in;
``ROWS_LOG`` names a file that gets the rows of each call.
"""

import os
import time

import joblib
import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.schema_decorators import input_schema, output_schema

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
SAMPLE = pd.DataFrame(
    [[0.038, 0.050, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]], columns=FEATURES
)


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))


def _log_rows(n):
    """``ROWS_LOG``: append the rows of each call (the test sees whether calls merged)."""
    if os.environ.get("ROWS_LOG"):
        with open(os.environ["ROWS_LOG"], "a") as f:
            f.write(f"{n}\n")


@input_schema("frame", PandasParameterType(SAMPLE))
@output_schema(PandasParameterType(pd.DataFrame({"prediction": [151], "bmi": [0.061]})))
def run(frame):
    _log_rows(len(frame))
    if (frame["age"] == 999).any():
        time.sleep(2)
    return pd.DataFrame({"prediction": model.predict(frame.values), "bmi": frame["bmi"]})
