"""The router in front of real inference servers (``python -m scoring serve``) on the sample.

Two deployments, blue and green, each serve samples/diabetes (the model users deploy) with
one worker; the router splits, pins, mirrors (same model on both, so every mirror copy
must compare equal) and reports a server that went away.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlendpoints._procs import Proc
from mlendpoints.paths import SAMPLE
from tests.support.router import AUTH1, cfg, metric, router, wait_for
from tests.support.serving import serve

pytestmark = pytest.mark.router

REQUEST = json.loads((SAMPLE / "sample-request.json").read_text())


@contextlib.contextmanager
def inference_server() -> Iterator[Proc]:
    with serve(SAMPLE / "score.py", SAMPLE / "model", "--workers", "1") as p:
        yield p


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Proc]]:
    assert (SAMPLE / "model" / "model.pkl").exists(), "train the sample: samples/diabetes/train.py"
    with inference_server() as blue, inference_server() as green:
        yield {"blue": blue, "green": green}


def test_split_pin_and_request_id_through_real_servers(
    servers: dict[str, Proc], tmp_path: Path
) -> None:
    direct = httpx.post(f"{servers['blue'].url}/score", json=REQUEST).json()
    config = cfg({n: p.url for n, p in servers.items()}, {"blue": 80, "green": 20})
    with router(tmp_path, config) as (proc, _), httpx.Client(timeout=30) as c:
        seen: Counter[str] = Counter()
        for i in range(400):
            r = c.post(
                f"{proc.url}/score", json=REQUEST, headers={**AUTH1, "x-request-id": f"split-{i}"}
            )
            assert r.status_code == 200, r.text
            assert r.json() == direct
            assert r.headers["x-request-id"] == f"split-{i}"
            seen[r.headers["azureml-model-deployment"]] += 1
        assert set(seen) == {"blue", "green"}
        assert abs(seen["blue"] / 400 - 0.8) < 0.1, seen  # ±5 sigma at n=400
        r = c.post(
            f"{proc.url}/score",
            json=REQUEST,
            headers={**AUTH1, "azureml-model-deployment": "green"},
        )
        assert r.headers["azureml-model-deployment"] == "green" and r.json() == direct
        r = c.post(f"{proc.url}/score", json=REQUEST)
        assert r.status_code == 401
        # The server's own errors pass through untouched (status and body).
        r = c.post(
            f"{proc.url}/score",
            content=b"not json",
            headers={**AUTH1, "content-type": "application/json"},
        )
        assert 400 <= r.status_code < 500 and "error" in r.json()
        r = c.get(f"{proc.url}/swagger.json", headers=AUTH1)
        assert r.status_code == 200 and "paths" in r.json()


def test_mirror_of_the_same_model_compares_equal(servers: dict[str, Proc], tmp_path: Path) -> None:
    config = cfg(
        {n: p.url for n, p in servers.items()}, {"blue": 100}, mirror_traffic={"green": 50}
    )
    with router(tmp_path, config) as (proc, _), httpx.Client(timeout=30) as c:
        for _ in range(200):
            assert c.post(f"{proc.url}/score", json=REQUEST, headers=AUTH1).status_code == 200
        s = wait_for(
            lambda: (
                (x := c.get(f"{proc.url}/mirror/summary", headers=AUTH1).json())[
                    "mirror_calls_in_flight"
                ]
                == 0
                and x
            ),
            "mirror calls to finish",
        )
        g = s["mirrors"]["green"]
        assert 100 - 36 <= g["sent"] <= 100 + 36, g
        assert (g["equal"], g["different"], g["statuses"]) == (g["sent"], 0, {"200": g["sent"]})
        text = c.get(f"{proc.url}/metrics").text
        assert metric(text, "router_requests_total", deployment="blue", status="200") == 200
        assert metric(text, "router_requests_total", deployment="green", status="200") == 0


def test_deployment_that_went_away_is_502(tmp_path: Path) -> None:
    with inference_server() as gone:
        url = gone.url
    config = cfg({"blue": url}, {"blue": 100})
    with router(tmp_path, config) as (proc, _):
        r = httpx.post(f"{proc.url}/score", json=REQUEST, headers=AUTH1)
        assert r.status_code == 502
        assert r.json()["error"] == "deployment 'blue' is unreachable: Connection refused"
        assert url not in r.text
