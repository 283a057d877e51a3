"""Scoring script for the sample diabetes model, written the way Azure ML tutorials write them.

``init()`` runs once per worker and loads the model from ``AZUREML_MODEL_DIR``;
``run(raw_data)`` gets the request body as a string: ``{"data": [[10 features], ...]}``.
"""

import json
import os

import joblib
import numpy as np


def init():
    global model
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pkl")
    model = joblib.load(model_path)


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    predictions = model.predict(data)
    return predictions.tolist()
