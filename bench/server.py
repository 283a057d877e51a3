"""Benchmark: the inference server against its peers, on the same model and machine.

    python -m bench.server [--duration 5] [--rounds 1] [--servers ours,ours-collect,bare,...]

One after another, on the sample diabetes model (samples/diabetes, trained here) with 2
workers each, payloads of 1 and 100 rows, wrk at 1, 8 and 64 connections for ``--duration``
seconds per cell:

- ``ours``           python -m scoring serve, every feature on (metrics, request ids,
                     request_timeout_ms=5000 via SIGALRM, body limit, JSON access log to a
                     file), collection off
- ``ours-collect``   the same with model_inputs/model_outputs collection at sampling rate 1
- ``ours-ship``      ours-collect shipping to a folder destination (a PVC's shape: the
                     supervisor's shipper thread copies each closed file; files roll at
                     1 MiB so shipping runs during the cells) (opt-in row: --servers)
- ``ours-queue``     the same (collection off) with a queue limit: run() in a thread,
                     max_concurrent_requests_per_instance=128 (opt-in row: --servers)
- ``bare``           uvicorn + Starlette calling the same run() inline (bench/bare_app.py)
- ``azmlinfsrv``     azureml-inference-server-http (Flask + gunicorn), own venv, loopback
- ``mlserver``       MLServer + mlserver-sklearn (V2 protocol body), own venv, uvloop 0.21

Peers are installed on first use into ``$ML_ENDPOINTS_CACHE/peers/`` (PyPI; ``mlendpoints._peers``).
Cold start is process start to the first 200 on ``POST /score``. wrk shares the 2 cores with the
servers, so absolute figures are lower than on a dedicated load generator; compare ratios.
The load average is printed per server: other work on the machine skews a run. So each cell
also reports the server's own CPU time per request (user + system of its process group,
from /proc): on a shared machine that is the steadier measure of what a server costs, and
cores / (CPU per request) bounds its throughput.
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
from mlendpoints._peers import AZMLINFSRV, AZMLINFSRV_LOOPBACK, peer_python
from mlendpoints._procs import free_port, serve_args, stop
from mlendpoints.paths import REPO, SAMPLE

PEERS = {
    "azmlinfsrv": [AZMLINFSRV],
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"],
}
MODEL_PINS = ["scikit-learn==1.9.1", "numpy==2.4.6", "joblib==1.6.0"]
ROWS = (1, 100)
CONNS = (1, 8, 64)
ALL = ("ours", "ours-collect", "bare", "azmlinfsrv", "mlserver")


@dataclass
class Server:
    name: str
    argv: list[str]
    path: str
    v2: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def payloads(work: Path) -> dict[tuple[str, int], Path]:
    """Request bodies: Azure style ``{"data": rows}`` and MLServer's V2 inference protocol."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes().data
    out = {}
    for n in ROWS:
        rows = [[round(v, 6) for v in r] for r in data[:n].tolist()]
        azure = work / f"azure-{n}.json"
        azure.write_text(json.dumps({"data": rows}))
        v2 = work / f"v2-{n}.json"
        v2.write_text(
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "predict",
                            "shape": [n, 10],
                            "datatype": "FP64",
                            "data": [v for r in rows for v in r],
                        }
                    ]
                }
            )
        )
        out[("azure", n)], out[("v2", n)] = azure, v2
    return out


def mlserver_folder(
    folder: Path, name: str, pickle: Path, port: int, **model_settings: object
) -> Path:
    """An MLServer model repository serving the scikit-learn ``pickle`` as model ``name``
    on 127.0.0.1:``port`` with 2 workers; ``model_settings`` add to its model-settings.json
    (e.g. adaptive batching's ``max_batch_size``)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    shutil.copy(pickle, folder / name / "model.pkl")
    (folder / name / "model-settings.json").write_text(
        json.dumps(
            {
                "name": name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                **model_settings,
                "parameters": {"uri": "./model.pkl", "version": "v1"},
            }
        )
    )
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": 2,
                "debug": False,
            }
        )
    )
    return folder


def servers(names: list[str], model: Path, work: Path, port: int) -> list[Server]:
    script = str(SAMPLE / "score.py")
    # Inline execution, no queue limit: what the published tables measured (the server's
    # default is Azure's max_concurrent_requests_per_instance=1, a 1-slot queue per worker).
    unlimited = ("--workers", "2", "--max-concurrent-requests-per-instance", "0")
    ours = [sys.executable, *serve_args(script, model, *unlimited, port=port)]
    result = []
    for name in names:
        if name == "ours":
            result.append(Server(name, ours, "/score", cwd=REPO))
        elif name == "ours-collect":
            result.append(
                Server(
                    name,
                    [*ours, "--collect", "true", "--collect-dir", str(work / "collected")],
                    "/score",
                    cwd=REPO,
                )
            )
        elif name == "ours-ship":
            (work / "shipped").mkdir(parents=True, exist_ok=True)
            collect = ["--collect", "true", "--collect-dir", str(work / "spool")]
            ship = ["--collect-destination", str(work / "shipped")]
            roll = ["--collect-max-file-bytes", str(1024 * 1024)]
            result.append(Server(name, [*ours, *collect, *ship, *roll], "/score", cwd=REPO))
        elif name == "ours-queue":
            result.append(
                Server(
                    name,
                    [*ours, "--max-concurrent-requests-per-instance", "128"],  # last one wins
                    "/score",
                    cwd=REPO,
                )
            )
        elif name == "bare":
            result.append(
                Server(
                    name,
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "bench.bare_app:app",
                        "--workers",
                        "2",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--loop",
                        "uvloop",
                        "--http",
                        "httptools",
                        "--no-access-log",
                        "--log-level",
                        "warning",
                    ],
                    "/score",
                    env={"BENCH_ENTRY_SCRIPT": script, "AZUREML_MODEL_DIR": str(model)},
                    cwd=REPO,
                )
            )
        elif name == "azmlinfsrv":
            py = peer_python("azmlinfsrv", PEERS["azmlinfsrv"] + MODEL_PINS)
            result.append(
                Server(
                    name,
                    [
                        str(py),
                        "-c",
                        AZMLINFSRV_LOOPBACK,
                        "--entry_script",
                        script,
                        "--model_dir",
                        str(model),
                        "--port",
                        str(port),
                        "--worker_count",
                        "2",
                    ],
                    "/score",
                    cwd=work,
                )
            )
        elif name == "mlserver":
            py = peer_python("mlserver", PEERS["mlserver"] + MODEL_PINS)
            folder = mlserver_folder(work / "mlserver", "diabetes", model / "model.pkl", port)
            result.append(
                Server(
                    name,
                    [str(py.parent / "mlserver"), "start", str(folder)],
                    "/v2/models/diabetes/infer",
                    v2=True,
                    cwd=folder,
                )
            )
        else:
            raise SystemExit(f"--servers: unknown server {name!r}; choose from {ALL}")
    return result


def measure(server: Server, work: Path, bodies: dict, seconds: float) -> dict:
    """Start one server, run every cell against it, stop it."""
    port = (
        server.argv[server.argv.index("--port") + 1]
        if "--port" in server.argv
        else json.loads((work / "mlserver" / "settings.json").read_text())["http_port"]
    )
    url = f"http://127.0.0.1:{port}{server.path}"
    kind = "v2" if server.v2 else "azure"
    load_before = loadavg()
    print(f"[{server.name}] starting (load {load_before})", flush=True)
    started = start(
        server.argv,
        url,
        bodies[(kind, 1)].read_bytes(),
        work / f"{server.name}.log",
        env=server.env,
        cwd=server.cwd,
    )
    entry: dict = {
        "cold_start_s": round(started.cold_start_s, 3),
        "load_before": load_before,
        "cells": {},
    }
    try:
        wrk(url, bodies[(kind, 1)], 8, 1, work)  # warm-up, not recorded
        for n in ROWS:
            for conns in CONNS:
                r = wrk(url, bodies[(kind, n)], conns, seconds, work, started.popen.pid)
                entry["cells"][f"{n}x{conns}"] = r.__dict__
                print(
                    f"[{server.name}] rows={n} conns={conns}: {r.rps:,.0f} req/s "
                    f"p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms "
                    f"cpu {r.cpu_us_per_request:.0f} us/req"
                    f"{f' errors {r.errors}' if r.errors else ''}",
                    flush=True,
                )
    finally:
        stop(started.popen, 20.0, group=True)
    entry["load_after"] = loadavg()
    return entry


def best(a: dict | None, b: dict) -> dict:
    """Merge rounds: per cell the run with the most req/s; the lowest cold start."""
    if a is None:
        return b
    merged = {
        **a,
        "cold_start_s": min(a["cold_start_s"], b["cold_start_s"]),
        "load_after": b["load_after"],
        "cells": dict(a["cells"]),
    }
    for cell, r in b["cells"].items():
        if cell not in merged["cells"] or r["rps"] > merged["cells"][cell]["rps"]:
            merged["cells"][cell] = r
    return merged


def run(names: list[str], seconds: float, rounds: int = 1) -> dict:
    """``rounds`` passes over every server in turn (so load from elsewhere on the machine
    hits all of them alike); each cell keeps its best pass."""
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        model = work / "model"
        subprocess.run(
            [sys.executable, str(SAMPLE / "train.py"), "--out", str(model)],
            check=True,
            capture_output=True,
        )
        bodies = payloads(work)
        results: dict = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(),
            "duration_s": seconds,
            "rounds": rounds,
            "servers": {},
        }
        for round_no in range(rounds):
            print(f"-- round {round_no + 1}/{rounds}", flush=True)
            for server in servers(names, model, work, free_port()):
                try:
                    entry = measure(server, work, bodies, seconds)
                except (RuntimeError, TimeoutError) as exc:  # one peer failing ends no run
                    print(f"[{server.name}] skipped this round: {exc}", flush=True)
                    continue
                results["servers"][server.name] = best(results["servers"].get(server.name), entry)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(results: dict) -> str:
    """A markdown table: req/s, p50, p99 and ratios vs azmlinfsrv and the bare app."""
    srv = results["servers"]
    lines = [
        f"Measured {results['date']} on {results['cpus']} cores (wrk on the same cores), "
        f"{results['duration_s']:g} s per cell, 2 workers per server, best of "
        f"{results.get('rounds', 1)} round(s) per cell.",
        "",
        "| server | rows | conns | req/s | p50 ms | p99 ms | x azmlinfsrv | x bare | "
        "server CPU us/req | CPU x azmlinfsrv | CPU x bare | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in srv.items():
        for cell, r in entry["cells"].items():
            n, conns = cell.split("x")

            def ratio(peer: str, cell: str = cell, r: dict = r) -> str:
                other = srv.get(peer, {}).get("cells", {}).get(cell)
                return f"{r['rps'] / other['rps']:.2f}" if other and other["rps"] else "-"

            def cpu_ratio(peer: str, cell: str = cell, r: dict = r) -> str:
                """How many times less CPU per request than ``peer`` (higher is better)."""
                other = srv.get(peer, {}).get("cells", {}).get(cell)
                mine = r.get("cpu_us_per_request", 0)
                if not other or not mine or not other.get("cpu_us_per_request"):
                    return "-"
                return f"{other['cpu_us_per_request'] / mine:.2f}"

            lines.append(
                f"| {name} | {n} | {conns} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {ratio('azmlinfsrv')} | {ratio('bare')} | "
                f"{r.get('cpu_us_per_request', 0):.0f} | {cpu_ratio('azmlinfsrv')} | "
                f"{cpu_ratio('bare')} | {r['errors']} |"
            )
    lines += [
        "",
        "| server | cold start s (process start to first 200, best round) | "
        "load avg before / after (last round) |",
        "|---|---:|---|",
    ]
    for name, entry in srv.items():
        lines.append(
            f"| {name} | {entry['cold_start_s']:.2f} | {entry['load_before']} / "
            f"{entry['load_after']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk cell")
    parser.add_argument(
        "--servers",
        default=",".join(ALL),
        help=f"comma-separated subset/order of {', '.join(ALL)}, ours-queue, ours-ship",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="passes over all servers; each cell keeps its best pass",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    results = run(
        [s.strip() for s in args.servers.split(",") if s.strip()], args.duration, args.rounds
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
