"""The sample model with run() and run_batch() (adaptive batching opts in with run_batch).

Body: ``{"data": [[10 features], ...]}``. A row whose first value is 999 makes the call sleep
2 s (so that requests sent meanwhile queue up and form one batch); a NaN makes the model raise,
failing every batch it is in.
"""

import json
import os
import time

import joblib
import numpy as np


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))


def _rows(raw):
    return json.loads(raw)["data"]


def run(raw_data):
    rows = _rows(raw_data)
    if rows[0][0] == 999:
        time.sleep(2)
    return model.predict(np.array(rows)).tolist()


def run_batch(raw_data_list):
    inputs = [_rows(raw) for raw in raw_data_list]
    if any(rows[0][0] == 999 for rows in inputs):
        time.sleep(2)
    predictions = model.predict(np.array([row for rows in inputs for row in rows])).tolist()
    out, at = [], 0
    for rows in inputs:
        out.append(predictions[at : at + len(rows)])
        at += len(rows)
    return out
