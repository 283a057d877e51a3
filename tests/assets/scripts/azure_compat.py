"""A script written against Azure's packages: Model.get_model_path, Collector, AMLResponse."""

import json

import joblib
import numpy as np
import pandas as pd
from azureml.ai.monitoring import Collector
from azureml.ai.monitoring.context import BasicCorrelationContext
from azureml.contrib.services.aml_response import AMLResponse
from azureml.core.model import Model


def init():
    global model, inputs_collector, outputs_collector
    model = joblib.load(Model.get_model_path("model"))
    inputs_collector = Collector(name="script_inputs")
    outputs_collector = Collector(name="script_outputs")


def run(raw_data):
    body = json.loads(raw_data)
    if "data" not in body:
        return AMLResponse(
            {"message": "send {'data': [[...10 features...]]}"},
            422,
            {"X-Script": "azure-compat"},
            json_str=True,
        )
    rows = np.array(body["data"])
    context = inputs_collector.collect(pd.DataFrame(rows))
    if body.get("context"):
        context = BasicCorrelationContext(id=body["context"])
    predictions = model.predict(rows)
    outputs_collector.collect(pd.DataFrame({"prediction": predictions}), context)
    return predictions.tolist()
