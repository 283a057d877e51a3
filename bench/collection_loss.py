"""``python -m bench collection-loss``: what a SIGKILL loses of collected data.

The sample model (trained here), 2 workers collecting every request with a folder destination;
2 clients send requests in a loop for 3 s; then the supervisor and its workers are SIGKILLed
(an OOM kill or node loss as the pod sees it) and a new server starts on the same spool and
ships what the killed one left. Prints how many answered requests never reached the
destination and how long before the kill the oldest of them was answered (the loss window;
bounded by the workers' 0.5 s flush interval).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from mlendpoints._procs import run_python, serve_args
from mlendpoints.paths import REPO, SAMPLE


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-collection-") as tmp:
        root = Path(tmp)
        model = root / "model"
        subprocess.run(
            [sys.executable, str(SAMPLE / "train.py"), "--out", str(model)],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        (root / "dest").mkdir()
        args = serve_args(SAMPLE / "score.py", model, "--workers", "2", "--collect", "true")
        args += ["--collect-dir", str(root / "spool")]
        args += ["--collect-destination", str(root / "dest"), "--access-log", "false"]
        answered: list[tuple[str, float]] = []
        with run_python(args, ready_path="/ready") as proc:
            stop = threading.Event()

            def load(tag: str) -> None:
                with httpx.Client() as client:
                    i = 0
                    while not stop.is_set():
                        rid = f"{tag}-{i}"
                        with contextlib.suppress(httpx.HTTPError):
                            resp = client.post(
                                proc.url + "/score",
                                json={"data": [[0.1] * 10]},
                                headers={"x-request-id": rid},
                            )
                            if resp.status_code == 200:
                                answered.append((rid, time.monotonic()))
                        i += 1

            clients = [threading.Thread(target=load, args=(f"c{k}",)) for k in range(2)]
            for t in clients:
                t.start()
            time.sleep(3)
            workers = subprocess.run(
                ["pgrep", "-P", str(proc.popen.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
            killed_at = time.monotonic()
            for pid in [proc.popen.pid, *map(int, workers)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stop.set()
            for t in clients:
                t.join()
            proc.popen.wait()
        with run_python(args, ready_path="/ready"):
            time.sleep(4)  # the new start ships the killed run's files on its first pass
        got: set[str] = set()
        for path in (root / "dest").rglob("*.jsonl"):
            if "/model_inputs/" in str(path):
                got |= {json.loads(x)["xrequestid"] for x in path.read_text().splitlines()}
    lost = [killed_at - t for rid, t in answered if rid not in got]
    print("| answered | lost | oldest lost, answered before the kill |")
    print("|---|---|---|")
    print(f"| {len(answered)} | {len(lost)} | {max(lost, default=0):.3f} s |")
    return 0
