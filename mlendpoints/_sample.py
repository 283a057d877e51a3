"""The shipped sample (samples/diabetes) and its two models' known answers, for the
end-to-end tests and the rollout benchmark (needs the dev extra: scikit-learn, joblib).

EXPECTED is computed at import from the trained models (`make sample-model`).
"""

from __future__ import annotations

import json
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_diabetes

from mlendpoints.client import Endpoint, Verify
from mlendpoints.paths import SAMPLE

ROWS = load_diabetes().data[:40].round(5).tolist()  # rows on which the two models disagree
BATCH = json.dumps({"data": ROWS}).encode()
SAMPLE_REQUEST = json.loads((SAMPLE / "sample-request.json").read_text())


def predictions(model: str, rows: list[list[float]]) -> list[Any]:
    return joblib.load(SAMPLE / model / "model.pkl").predict(np.array(rows)).tolist()


EXPECTED = {"blue": predictions("model", ROWS), "green": predictions("model-v2", ROWS)}
"""What each sample deployment answers to BATCH (the dev stack's blue and the README's green)."""


class SampleEndpoint(Endpoint):
    """The deployed sample endpoint: posts BATCH by default and `ask` accepts only the
    answering deployment's own predictions (EXPECTED)."""

    def __init__(self, scoring_uri: str, verify: Verify = True) -> None:
        super().__init__(scoring_uri, body=BATCH, expected=EXPECTED, verify=verify)
