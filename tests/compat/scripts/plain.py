"""Plain Azure style: run(raw_data) parses the body itself; collects; reads request_headers."""

import json
import os

import joblib
import numpy as np
import pandas as pd
from azureml.ai.monitoring import Collector


def init():
    global model, inputs, outputs
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))
    inputs = Collector(name="model_inputs", on_error=lambda e: None)
    outputs = Collector(name="model_outputs", on_error=lambda e: None)


def run(raw_data, request_headers):
    body = json.loads(raw_data)
    if isinstance(body, dict) and "headers" in body:
        wanted = body["headers"]
        return {name: request_headers.get(name) for name in wanted}
    if isinstance(body, dict) and "text" in body:
        return {"got": raw_data}
    rows = np.array(body["data"], dtype=float)
    context = inputs.collect(pd.DataFrame(rows))
    predictions = model.predict(rows)
    outputs.collect(pd.DataFrame({"prediction": predictions}), context)
    return predictions.tolist()
