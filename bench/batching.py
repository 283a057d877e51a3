"""Benchmark: adaptive batching, ours against MLServer's and BentoML's, on two models.

    python -m bench batching [--duration 5] [--servers ours-batched,ours-unbatched,...]

Two scikit-learn models trained here on the diabetes data (no download): the sample logistic
regression (``sample``: a call costs mostly fixed overhead) and a 200-tree random forest
(``forest``: a call costs ~10x more, most of it per call, not per row). Each server gets 2
workers and 1-row requests from wrk at 1, 8 and 64 connections, ``--duration`` seconds per
cell, one server at a time:

- ``ours-batched``    python -m scoring serve on the MLflow model folder (no script), batching
                      on (its default: ``max_batch_size`` 32, ``max_batch_wait_ms`` 2), no
                      concurrency limit
- ``ours-unbatched``  the same with ``--max-batch-size 1`` (run() inline, as before batching)
- ``mlserver``        MLServer + mlserver-sklearn with adaptive batching (``max_batch_size``
                      32, ``max_batch_time`` 2 ms), V2 protocol body, own venv
- ``bentoml``         BentoML with a batchable API (``max_batch_size`` 32,
                      ``max_latency_ms`` 10000 so it never sheds load), own venv

Peers are installed on first use into ``$ML_ENDPOINTS_CACHE/peers/`` (PyPI). wrk shares the
cores with the servers; the load average is printed per server and each cell reports the
server's CPU time per request (its process group): on a shared machine the steadier measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._load import loadavg, start, wrk
from bench.server import MODEL_PINS, PEERS, mlserver_folder
from mlendpoints._peers import peer_python
from mlendpoints._procs import free_port, serve_args, stop
from mlendpoints.paths import REPO

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
MODELS = ("sample", "forest")
CONNS = (1, 8, 64)
ALL = ("ours-batched", "ours-unbatched", "mlserver", "bentoml")
BENTOML = ["bentoml==1.4.40"]
MAX_BATCH = 32

TRAIN = """
import sys, joblib, numpy as np, pandas as pd, mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
out, features = sys.argv[1], sys.argv[2].split(",")
data = load_diabetes()
y = (data.target > np.median(data.target)).astype(int)
for name, model in (("sample", LogisticRegression(max_iter=1000)),
                    ("forest", RandomForestClassifier(n_estimators=200, random_state=0))):
    model.fit(data.data, y)
    joblib.dump(model, f"{out}/{name}.pkl")
    x = pd.DataFrame(data.data[:2], columns=features)
    mlflow.sklearn.save_model(model, f"{out}/{name}-mlflow", serialization_format="cloudpickle",
        signature=infer_signature(x, model.predict(data.data[:2])),
        pip_requirements=["scikit-learn"])
"""

BENTO_SERVICE = """
import os
import bentoml
import joblib
import numpy as np


@bentoml.service(workers=2)
class Model:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api(batchable=True, max_batch_size={max_batch}, max_latency_ms=10000)
    def predict(self, input: np.ndarray) -> np.ndarray:
        return self.model.predict(input)
"""


@dataclass
class Server:
    name: str
    argv: list[str]
    url: str
    body: str  # which request body: "ours", "v2", "bento"
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def bodies(work: Path) -> dict[str, Path]:
    """One 1-row request in each server's protocol."""
    from sklearn.datasets import load_diabetes

    row = [round(v, 6) for v in load_diabetes().data[0].tolist()]
    forms = {
        "ours": {"input_data": {"columns": FEATURES, "data": [row]}},
        "v2": {"inputs": [{"name": "predict", "shape": [1, 10], "datatype": "FP64", "data": row}]},
        "bento": {"input": [row]},
    }
    out = {}
    for name, body in forms.items():
        out[name] = work / f"{name}.json"
        out[name].write_text(json.dumps(body))
    return out


def server(name: str, model: str, work: Path) -> Server:
    port = free_port()
    if name.startswith("ours"):
        args = ["--workers", "2", "--max-concurrent-requests-per-instance", "0"]
        if name == "ours-unbatched":
            args += ["--max-batch-size", "1"]
        argv = [sys.executable, *serve_args(None, work / f"{model}-mlflow", *args, port=port)]
        argv += ["--access-log", "false"]
        return Server(name, argv, f"http://127.0.0.1:{port}/score", "ours", cwd=REPO)
    if name == "mlserver":
        py = peer_python("mlserver", PEERS["mlserver"] + MODEL_PINS)
        folder = mlserver_folder(
            work / f"mlserver-{model}",
            model,
            work / f"{model}.pkl",
            port,
            max_batch_size=MAX_BATCH,
            max_batch_time=0.002,
        )
        return Server(
            name,
            [str(py.parent / "mlserver"), "start", str(folder)],
            f"http://127.0.0.1:{port}/v2/models/{model}/infer",
            "v2",
            cwd=folder,
        )
    if name == "bentoml":
        py = peer_python("bentoml", BENTOML + MODEL_PINS)
        folder = work / f"bento-{model}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "service.py").write_text(BENTO_SERVICE.format(max_batch=MAX_BATCH))
        return Server(
            name,
            [
                str(py.parent / "bentoml"),
                "serve",
                "service:Model",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            f"http://127.0.0.1:{port}/predict",
            "bento",
            env={
                "BENCH_MODEL": str(work / f"{model}.pkl"),
                "BENTOML_DO_NOT_TRACK": "true",
                "BENTOML_HOME": str(work / "bentoml-home"),
            },
            cwd=folder,
        )
    raise SystemExit(f"--servers: unknown server {name!r}; choose from {ALL}")


def batch_counts(url: str) -> tuple[float, float]:
    """(requests batched, model calls) so far, from our ``/metrics`` (after the workers'
    once-a-second snapshot, so the previous cell's last requests are in)."""
    import urllib.request

    time.sleep(1.1)
    with urllib.request.urlopen(url.replace("/score", "/metrics"), timeout=5) as resp:
        text = resp.read().decode()
    values = dict.fromkeys(("scoring_batch_size_sum", "scoring_batch_size_count"), 0.0)
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in values:
            values[key] = float(value)
    return values["scoring_batch_size_sum"], values["scoring_batch_size_count"]


def measure(srv: Server, work: Path, body: Path, seconds: float) -> dict:
    print(f"[{srv.name}] starting (load {loadavg()})", flush=True)
    started = start(
        srv.argv, srv.url, body.read_bytes(), work / f"{srv.name}.log", env=srv.env, cwd=srv.cwd
    )
    cells: dict = {}
    try:
        wrk(srv.url, body, 8, 1, work)  # warm-up, not recorded
        for conns in CONNS:
            ours = srv.body == "ours"
            before = batch_counts(srv.url) if ours else (0.0, 0.0)
            r = wrk(srv.url, body, conns, seconds, work, started.popen.pid)
            after = batch_counts(srv.url) if ours else (0.0, 0.0)
            calls = after[1] - before[1]
            mean = (after[0] - before[0]) / calls if calls else None
            cells[str(conns)] = {**r.__dict__, "mean_batch": mean}
            print(
                f"[{srv.name}] conns={conns}: {r.rps:,.0f} req/s p50 {r.p50_ms:.2f} ms "
                f"p99 {r.p99_ms:.2f} ms cpu {r.cpu_us_per_request:.0f} us/req"
                f"{f' errors {r.errors}' if r.errors else ''}",
                flush=True,
            )
    finally:
        stop(started.popen, 20.0, group=True)
    return {"cells": cells, "load_after": loadavg()}


def run(names: list[str], models: list[str], seconds: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    try:
        subprocess.run(
            [sys.executable, "-c", TRAIN, str(work), ",".join(FEATURES)],
            check=True,
            capture_output=True,
        )
        request = bodies(work)
        results: dict = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(),
            "duration_s": seconds,
            "models": {},
        }
        for model in models:
            print(f"-- model {model}", flush=True)
            results["models"][model] = {}
            for name in names:
                srv = server(name, model, work)
                try:
                    entry = measure(srv, work, request[srv.body], seconds)
                except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
                    print(f"[{name}] skipped: {exc}", flush=True)
                    continue
                results["models"][model][name] = entry
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(results: dict) -> str:
    lines = [
        f"Measured {results['date']} on {results['cpus']} cores shared with other work (wrk on "
        f"the same cores), {results['duration_s']:g} s per cell, 2 workers per server, 1-row "
        "requests.",
        "",
        "| model | server | conns | req/s | p50 ms | p99 ms | x unbatched | server CPU us/req "
        "| mean batch | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, servers in results["models"].items():
        base = servers.get("ours-unbatched", {}).get("cells", {})
        for name, entry in servers.items():
            for conns, r in entry["cells"].items():
                other = base.get(conns)
                ratio = f"{r['rps'] / other['rps']:.2f}" if other and other["rps"] else "-"
                lines.append(
                    f"| {model} | {name} | {conns} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | "
                    f"{r['p99_ms']:.2f} | {ratio} | {r['cpu_us_per_request'] or '-'} | "
                    f"{'-' if r['mean_batch'] is None else format(r['mean_batch'], '.1f')} | "
                    f"{r['errors']} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench batching", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk cell")
    parser.add_argument("--servers", default=",".join(ALL), help=f"subset of {', '.join(ALL)}")
    parser.add_argument("--models", default=",".join(MODELS), help="sample, forest or both")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results = run(names, models, args.duration)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
