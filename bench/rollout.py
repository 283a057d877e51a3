"""Rollout benchmark: how long the dev stack takes to serve, to preview, and to shift traffic.

``python -m bench rollout [--repeats N]`` (not a test; prints a table; needs `make setup`,
`make cluster-up` and `make sample-model`; a few minutes on a warm machine).

On the local cluster, with the real Pulumi CLI through the Automation API, on a throwaway copy
of the dev stack (`tests.e2e.project.make_project`: own namespace, own state, a NodePort the
cluster picks; destroyed at the end whatever happens):

1. first `pulumi up` (blue at 100%): from `up` start to the first 200 through `scoring_uri`
   with the primary key carrying blue's own predictions (mlendpoints/_sample.py's 40-row batch),
   `up`'s duration, and the gap after `up` returns. A thread polls from `up` start; until the
   router Service and key Secret exist it finds the NodePort and key with kubectl (every 0.5 s),
   then POSTs every 0.1 s.
2. add green at 0% (README step 2) and `up`; effect: a request pinned to green gets green's
   predictions. Then N previews with no change, and N previews of blue 90 / green 10.
3. `up` of 100/0 -> 90/10 and of 90/10 -> 0/100; effect: GET /mirror/summary (primary key,
   fresh connection, every 0.2 s) shows the new split five reads in a row, as the e2e test's
   `wait_router`; the time reported is the first read of that streak.

Every `up` row also gives the router Deployment's own update as Pulumi reports it (engine
events: from its step starting to its outputs, i.e. Pulumi's await of the rollout). As a
same-run reference without Pulumi, the last row is `kubectl rollout restart` of the router
Deployment until `kubectl rollout status` returns. None of Azure ML, KServe, Seldon or SageMaker
runs here, so the figures are absolute; the load average is printed since other work on the
machine's 2 cores moves them.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pulumi import automation as auto

from bench._load import loadavg
from mlendpoints._project import EndpointProject, make_project
from mlendpoints._sample import SampleEndpoint as Endpoint
from mlendpoints.kube import KubectlError, check_cluster, kubectl, kubectl_json

ENDPOINT = "diabetes"
ROUTER = f"{ENDPOINT}-router"  # router Deployment and Service, Secret prefix
SETTLE_S = 120  # polling after `up` returns, at most
ADD_GREEN = {  # README step 2, as `pulumi config set --path ml-endpoints:KEY VALUE`
    "endpoint.traffic.green": 0,
    "deployments[1].name": "green",
    "deployments[1].model": "diabetes-v2",
    "deployments[1].environment": "sklearn",
    "deployments[1].code.path": "samples/diabetes",
}


def serves(endpoint: Endpoint, key: str, deployment: str, pin: bool = False) -> bool:
    """True if a score request got a 200 from DEPLOYMENT carrying its model's predictions."""
    try:
        return endpoint.ask(key, pin=deployment if pin else None) == (200, deployment)
    except (OSError, http.client.HTTPException, ValueError):
        return False


def routes(endpoint: Endpoint, key: str, traffic: dict[str, int]) -> bool:
    """True if the router that answered applies TRAFFIC (zero shares ignored)."""
    try:
        live, _ = endpoint.routing(key)
    except (OSError, http.client.HTTPException, ValueError, AssertionError):
        return False
    return live == {k: v for k, v in traffic.items() if v}


@dataclass
class Poll:
    """Background poller: seconds since START until CHECK held STREAK times in a row
    (the time of the streak's first read); never past START + TIMEOUT."""

    check: Callable[[], bool]
    start: float
    interval: float
    streak: int = 1
    timeout: float = 900
    at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        run_start: float | None = None
        count = 0
        while not self._stop.is_set() and time.monotonic() - self.start < self.timeout:
            t = time.monotonic()
            if self.check():
                run_start, count = (run_start if count else t), count + 1
                if count >= self.streak:
                    self.at = run_start - self.start
                    return
            else:
                count = 0
            self._stop.wait(self.interval)

    @contextmanager
    def running(self, settle: float = SETTLE_S) -> Iterator[Poll]:
        """Poll while the body runs, then at most SETTLE more seconds."""
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
            thread.join(settle)
        finally:
            self._stop.set()
            thread.join(5)


@dataclass
class Up:
    """One timed `up`: its duration, the router's own steps, and when the change showed."""

    label: str
    up_s: float
    router_s: float | None  # the router Deployment's step (Pulumi's await of its rollout)
    service_s: float | None  # the router Service's step (created on the first up only)
    effect_s: float | None  # from `up` start
    images_s: float | None  # first image step start to last image step end (builds, pushes)

    @property
    def after_return_s(self) -> float | None:
        return None if self.effect_s is None else self.effect_s - self.up_s


ROUTER_STEPS = {
    "kubernetes:apps/v1:Deployment": ROUTER,
    "kubernetes:core/v1:Service": f"{ROUTER}-service",
}


def timed_up(
    project: EndpointProject, label: str, check: Callable[[], bool], streak: int, interval: float
) -> Up:
    """`up` with a poller started alongside; the router's steps timed from engine events
    (delivered within ~0.1 s: the Automation API tails the event log every 0.1 s)."""
    seen: dict[tuple[str, str], float] = {}
    images_pre: list[float] = []
    images_outs: list[float] = []

    def on_event(event: auto.EngineEvent) -> None:
        now = time.monotonic()
        step = event.resource_pre_event or event.res_outputs_event
        if step is None or step.metadata.op.value in ("same", "read"):
            return
        meta = step.metadata
        if meta.type == "docker-build:index:Image":
            (images_pre if event.resource_pre_event else images_outs).append(now)
        name = ROUTER_STEPS.get(meta.type)
        if name and meta.urn.endswith(f"::{name}"):
            seen[meta.type, "pre" if event.resource_pre_event else "outs"] = now

    def took(kind: str) -> float | None:
        pre, outs = seen.get((kind, "pre")), seen.get((kind, "outs"))
        return None if pre is None or outs is None else outs - pre

    start = time.monotonic()
    poll = Poll(check, start, interval, streak)
    with project.logged(f"pulumi up  # {label}") as out, poll.running():
        project.stack.up(on_output=out, on_event=on_event)
        up_s = time.monotonic() - start
    images_s = max(images_outs) - min(images_pre) if images_pre and images_outs else None
    return Up(
        label,
        up_s,
        took("kubernetes:apps/v1:Deployment"),
        took("kubernetes:core/v1:Service"),
        poll.at,
        images_s,
    )


class FirstScore:
    """The first-up check: find the NodePort and primary key with kubectl (every 0.5 s) until
    both exist, then score through them with a fresh connection each time."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.endpoint: Endpoint | None = None
        self.key = ""
        self._next = 0.0

    def __call__(self) -> bool:
        if self.endpoint is None:
            if time.monotonic() < self._next:
                return False
            self._next = time.monotonic() + 0.5
            try:
                items = kubectl_json(
                    "-n",
                    self.namespace,
                    "get",
                    f"service/{ROUTER}",
                    f"secret/{ROUTER}-keys",
                    "--ignore-not-found",
                    timeout=10,
                )["items"]
            except (KubectlError, ValueError, OSError, subprocess.SubprocessError):
                return False
            kinds = {i["kind"]: i for i in items}
            if {"Service", "Secret"} - kinds.keys():
                return False
            port = kinds["Service"]["spec"]["ports"][0]["nodePort"]
            self.key = base64.b64decode(kinds["Secret"]["data"]["primary_key"]).decode()
            self.endpoint = Endpoint(f"http://127.0.0.1:{port}/score")
        return serves(self.endpoint, self.key, "blue")


def timed_previews(project: EndpointProject, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        project.stack.preview(on_output=lambda _line: None)
        times.append(time.monotonic() - t0)
    return times


def kubectl_rollout(namespace: str) -> float:
    """`kubectl rollout restart` of the router until `kubectl rollout status` returns."""
    t0 = time.monotonic()
    kubectl("-n", namespace, "rollout", "restart", f"deployment/{ROUTER}")
    kubectl(
        "-n", namespace, "rollout", "status", f"deployment/{ROUTER}", "--timeout=120s", timeout=150
    )
    return time.monotonic() - t0


def run(project: EndpointProject, repeats: int) -> tuple[list[Up], dict[str, list[float]], float]:
    first = FirstScore(project.namespace)
    ups = [timed_up(project, "first up (blue 100%)", first, streak=1, interval=0.1)]
    outputs = project.outputs()
    endpoint, key = Endpoint(outputs["scoring_uri"]), outputs["primary_key"]
    if first.endpoint and (first.endpoint.port, first.key) != (endpoint.port, key):
        raise RuntimeError(
            f"the poller scored through port {first.endpoint.port}, but "
            f"scoring_uri is {outputs['scoring_uri']} (or the key differs)"
        )
    project.set_config(ADD_GREEN)
    ups.append(
        timed_up(
            project,
            "add green at 0%",
            lambda: serves(endpoint, key, "green", True),
            streak=1,
            interval=0.2,
        )
    )
    previews = {"no change": timed_previews(project, repeats)}
    project.set_config({"endpoint.traffic.blue": 90, "endpoint.traffic.green": 10})
    previews["100/0 -> 90/10"] = timed_previews(project, repeats)
    for label, split in (
        ("100/0 -> 90/10", {"blue": 90, "green": 10}),
        ("90/10 -> 0/100", {"blue": 0, "green": 100}),
    ):
        project.set_config({f"endpoint.traffic.{k}": v for k, v in split.items()})
        ups.append(
            timed_up(
                project, label, lambda s=split: routes(endpoint, key, s), streak=5, interval=0.2
            )
        )
    return ups, previews, kubectl_rollout(project.namespace)


def _s(value: float | None, missing: str = "—") -> str:
    return missing if value is None else f"{value:.1f}"


def table(ups: list[Up], previews: dict[str, list[float]], kubectl_s: float) -> str:
    rows = [
        "| change                  | image steps s | `up` s | router Deployment s "
        "| router Service s | `up` start → served s | `up` return → served s |",
        "|-------------------------|--------------:|-------:|--------------------:"
        "|-----------------:|----------------------:|-----------------------:|",
    ]
    rows += [
        f"| {u.label:<23} | {_s(u.images_s):>13} | {u.up_s:>6.1f} | {_s(u.router_s):>19} "
        f"| {_s(u.service_s):>16} "
        f"| {_s(u.effect_s, 'not seen'):>21} | {_s(u.after_return_s, 'not seen'):>22} |"
        for u in ups
    ]
    rows.append(
        f"| {'kubectl rollout restart':<23} | {'—':>13} | {'—':>6} | {kubectl_s:>19.1f} "
        f"| {'—':>16} | {'—':>21} | {'—':>22} |"
    )
    rows += [
        "",
        "| `pulumi preview`        | median s | min s | max s |",
        "|-------------------------|---------:|------:|------:|",
    ]
    rows += [
        f"| {name:<23} | {statistics.median(t):>8.1f} | {min(t):>5.1f} | {max(t):>5.1f} |"
        for name, t in previews.items()
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench rollout", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=3, help="previews of each kind (3)")
    parser.add_argument(
        "--log",
        type=Path,
        help="keep Pulumi's output of the ups here (default: removed with the throwaway project)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.repeats <= 20:
        parser.error(f"--repeats: {args.repeats} is outside 1..20")
    try:
        check_cluster()
    except (AssertionError, KubectlError) as exc:
        print(f"rollout bench: the local cluster is not ready: {exc}", file=sys.stderr)
        return 2
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="mle-bench-") as tmp:
        try:
            project = make_project(Path(tmp), prefix="mle-bench")
        except FileNotFoundError as exc:
            print(f"rollout bench: {exc}", file=sys.stderr)
            return 2
        try:
            ups, previews, kubectl_s = run(project, args.repeats)
        except Exception:
            log = project.log.read_text(errors="replace")[-3000:] if project.log.exists() else ""
            print(f"rollout bench failed; pulumi log tail:\n{log}", file=sys.stderr)
            raise
        finally:
            if args.log and project.log.exists():
                args.log.write_text(project.log.read_text())
            project.stack.destroy(on_output=lambda _line: None)
    print(
        f"rollout benchmark {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, dev stack copy on "
        f"the local cluster; load avg before {load_before}, after {loadavg()}; "
        f"{os.cpu_count()} cores"
    )
    print()
    print(table(ups, previews, kubectl_s))
    unseen = [u.label for u in ups if u.effect_s is None]
    if unseen:
        print(
            f"\nnot served within {SETTLE_S:g} s after `up` returned: {', '.join(unseen)}",
            file=sys.stderr,
        )
    return 1 if unseen else 0


if __name__ == "__main__":
    sys.exit(main())
