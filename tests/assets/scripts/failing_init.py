"""init() fails the way a wrong model path fails."""

import os

import joblib


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "no-such-model.pkl"))


def run(raw_data):
    return model.predict(raw_data)
