"""The sample model with a ``@batched`` run(): it takes a list of bodies, one result each.

Same bodies and markers as batch_run.py (999 first: sleep 2 s; NaN: the model raises).
"""

import json
import os
import time

import joblib
import numpy as np

from scoring.server.scorer import batched


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))


@batched
def run(raw_data_list):
    inputs = [json.loads(raw)["data"] for raw in raw_data_list]
    if any(rows[0][0] == 999 for rows in inputs):
        time.sleep(2)
    predictions = model.predict(np.array([row for rows in inputs for row in rows])).tolist()
    out, at = [], 0
    for rows in inputs:
        out.append(predictions[at : at + len(rows)])
        at += len(rows)
    return out
