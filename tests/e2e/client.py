"""A client of the deployed sample endpoint, for the end-to-end tests and the rollout bench.

It reaches the endpoint the way a user's client does (scoring_uri plus a credential) and knows
the two sample models' answers, so every response can be checked against the model of the
deployment that says it answered (response header `azureml-model-deployment`).
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import joblib
import numpy as np
from sklearn.datasets import load_diabetes

from tests.e2e.project import SAMPLE

ROWS = load_diabetes().data[:40].round(5).tolist()  # rows on which the two models disagree
BATCH = json.dumps({"data": ROWS}).encode()
SAMPLE_REQUEST = json.loads((SAMPLE / "sample-request.json").read_text())


def predictions(model: str, rows: list[list[float]]) -> list[Any]:
    return joblib.load(SAMPLE / model / "model.pkl").predict(np.array(rows)).tolist()


EXPECTED = {"blue": predictions("model", ROWS), "green": predictions("model-v2", ROWS)}
"""What each sample deployment answers to BATCH (the dev stack's blue and the README's green)."""


class Endpoint:
    """The deployed endpoint reached the way a client does: scoring_uri plus a credential."""

    def __init__(self, scoring_uri: str) -> None:
        parts = urlsplit(scoring_uri)
        self.host, self.port, self.path = parts.hostname or "", parts.port or 80, parts.path

    def post(
        self,
        body: bytes = BATCH,
        credential: str | None = None,
        pin: str | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, str, bytes]:
        """(status, deployment that answered, body); a fresh connection unless CONN is given."""
        headers = {"Content-Type": "application/json"}
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        if pin is not None:
            headers["azureml-model-deployment"] = pin
        own = conn is None
        conn = conn or http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheader("azureml-model-deployment") or "", resp.read()
        finally:
            if own:
                conn.close()

    def get(self, path: str, credential: str) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {credential}"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, (path, resp.status, body)
            return json.loads(body)
        finally:
            conn.close()

    def ask(self, key: str, pin: str | None = None) -> tuple[int, str]:
        """One request: (200, who answered) only if that deployment's own predictions came
        back; else the status (-1 for wrong predictions) and what came."""
        status, who, body = self.post(credential=key, pin=pin)
        if status != 200:
            return status, body[:200].decode(errors="replace")
        if json.loads(body) != EXPECTED.get(who):
            return -1, f"{who or 'no deployment header'} answered {body[:80]!r}"
        return 200, who

    def split(self, key: str, n: int) -> dict[str, int]:
        """Who answered N requests sent back to back over one kept-alive connection."""
        counts: dict[str, int] = {}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            for _ in range(n):
                status, who, body = self.post(credential=key, conn=conn)
                assert status == 200, (status, body)
                counts[who] = counts.get(who, 0) + 1
        finally:
            conn.close()
        return counts

    def routing(self, key: str) -> tuple[dict[str, int], dict[str, int]]:
        """(live split, mirror split) the router answering a new connection applies now,
        deployments at 0% left out of the live split."""
        summary = self.get("/mirror/summary", key)
        return {k: v for k, v in summary["traffic"].items() if v}, summary["mirror_traffic"]

    def wait_router(
        self, key: str, traffic: dict[str, int], mirror: dict[str, int], timeout: float = 60
    ) -> float:
        """Seconds until the router answering new connections applies TRAFFIC and MIRROR
        (five reads in a row: a replaced router pod drains for a few seconds)."""
        start = time.monotonic()
        wanted = ({k: v for k, v in traffic.items() if v}, mirror)
        streak = 0
        while streak < 5:
            now = self.routing(key)
            streak = streak + 1 if now == wanted else 0
            assert time.monotonic() - start < timeout, f"router still applies {now}"
            time.sleep(0.2)
        return time.monotonic() - start
