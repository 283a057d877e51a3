"""Autoscaling on the local cluster (issue 15): the session's copy of the dev stack with blue on
`scale_settings.type: target_utilization` (1..3 replicas) and green fixed at 1, a bounded CPU
step load through the router, then:

- blue's replicas rise to >= 2 while the load runs, and return to 1 after it stops;
- a `pulumi up` that rolls blue while it is scaled out keeps the autoscaler's count (the
  Deployment declares no `replicas`: Pulumi's apply does not own the field; a lower count
  right after it must be the autoscaler's own rescale event);
- 30 s after the last scale-out every Ready blue pod serves a share of requests within
  SHARE_TOLERANCE of an even split, counted from each pod's own `/metrics` counter: the router
  balances over the ready pods it reads from blue's EndpointSlices (its ServiceAccount and
  Role at work: its log shows the pods it found, and no refused list);
- zero failed requests throughout; green (`type: default`) keeps its one replica.

Figures (time to 2nd/3rd replica, shares, p99, time to scale in) are printed, not asserted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from mlendpoints._project import EndpointProject
from mlendpoints._sample import SampleEndpoint
from mlendpoints.client import ca_file
from mlendpoints.kube import is_ready, kubectl, kubectl_json, running_pods
from tests.support.load import Load
from tests.support.pod_metrics import pod_metrics, sample_sum

pytestmark = [pytest.mark.toolchain, pytest.mark.images, pytest.mark.cluster]

SHARE_TOLERANCE = 0.10  # of the whole, around an even split (the goal)
SCALE = {
    "type": "target_utilization",
    "min_instances": 1,
    "max_instances": 3,
    "target_utilization_percentage": 50,
    "polling_interval": 15,
    "scale_down_delay": 20,
}
READY_PODS = re.compile(r"deployment 'blue' .*?: (\d+) ready pod\(s\)")


@pytest.fixture(scope="module")
def project(module_stack: EndpointProject) -> EndpointProject:
    """The session's dev stack (tests/conftest.py) with blue autoscaled and green fixed."""
    shared_project = module_stack
    path = shared_project.stack_file
    doc = yaml.safe_load(path.read_text())
    [blue] = doc["config"]["ml-endpoints:deployments"]
    blue.pop("instance_count")
    blue["scale_settings"] = SCALE
    green = {**blue, "name": "green", "instance_count": 1}
    green.pop("scale_settings")
    doc["config"]["ml-endpoints:deployments"] = [blue, green]
    doc["config"]["ml-endpoints:endpoint"]["traffic"] = {"blue": 100, "green": 0}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with shared_project.logged("pulumi up") as out:
        shared_project.stack.up(on_output=out)
    return shared_project


def replicas(ns: str, name: str) -> tuple[int, int]:
    """(spec.replicas, ready replicas) of a Deployment."""
    dep = kubectl_json("-n", ns, "get", "deployment", name)
    return dep["spec"].get("replicas", 0), dep["status"].get("readyReplicas", 0)


def ready_pods(ns: str, deployment: str) -> list[str]:
    """Ready pods of DEPLOYMENT (its name in the stack, the label's value)."""
    pods = running_pods(ns, f"mlendpoints/deployment={deployment}")
    return sorted(p["metadata"]["name"] for p in pods if is_ready(p))


def replicas_owners(ns: str, name: str) -> set[str]:
    """Field managers owning a Deployment's spec.replicas (server-side apply bookkeeping)."""
    dep = kubectl_json("-n", ns, "get", "deployment", name, "--show-managed-fields")
    return {
        m.get("manager", "")
        for m in dep["metadata"].get("managedFields") or []
        if "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})
    }


def rescales(ns: str, hpa: str) -> list[str]:
    """The autoscaler's rescale event messages (`New size: N; reason: ...`), oldest first."""
    events = kubectl_json(
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        f"involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name={hpa}",
    )["items"]
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return [e.get("message", "") for e in events if "New size" in e.get("message", "")]


def served(ns: str, pod: str) -> int:
    """Requests to /score this pod answered with 200, from its own /metrics."""
    text = pod_metrics(ns, pod)
    return int(sample_sum(text, "scoring_requests_total", 'route="/score",status="200"'))


def wait_for(what: str, check: object, limit: float) -> float:
    """Poll CHECK (a callable) every 2 s until true; seconds it took. Fails after LIMIT."""
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < limit, f"{what}: not within {limit:.0f} s"
        time.sleep(2)
    return time.monotonic() - start


@pytest.mark.timeout(900)
def test_autoscaling_under_step_load(project: EndpointProject) -> None:
    ns = project.namespace
    outputs = project.outputs()
    blue, green = (outputs["deployments"][d]["kubernetes_name"] for d in ("blue", "green"))
    endpoint = SampleEndpoint(
        outputs["scoring_uri"], verify=ca_file(ns, outputs.get("ca_certificate"))
    )
    key = outputs["primary_key"]
    hpa = kubectl_json("-n", ns, "get", "hpa", blue)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert wait_for("blue at 1 Ready pod", lambda: replicas(ns, blue) == (1, 1), 120) >= 0
    figures: list[str] = []

    def note(text: str) -> None:  # printed as measured: a later failure keeps them
        figures.append(text)
        print(f"autoscaling: {text}", flush=True)

    # Bounded by time (and a count far above what 300 s gives here).
    load = Load(
        lambda: endpoint.ask(key), threads=4, pause=0.0, max_seconds=300, max_requests=300_000
    )
    with load:
        t2 = wait_for("a 2nd blue pod Ready", lambda: replicas(ns, blue)[1] >= 2, 180)
        note(f"2nd replica Ready {t2:.0f} s after the load started")
        # A rollout of the scaled-out Deployment keeps the autoscaler's count.
        scaled = replicas(ns, blue)[0]
        project.set_config({"deployments[0].environment_variables.ROLL": "rolled"})
        with project.logged("pulumi up (roll blue while scaled out)") as out:
            project.stack.up(on_output=out)
        after_up = replicas(ns, blue)[0]
        # Pulumi's apply never owns the count (server-side apply bookkeeping); a lower count
        # right after the up is only allowed when the autoscaler itself chose it (under a
        # busy machine's load it may, during the roll).
        owners = replicas_owners(ns, blue)
        assert not any(o.startswith("pulumi") for o in owners), owners
        # ...while it does own green's fixed count (the check sees ownership).
        assert any(o.startswith("pulumi") for o in replicas_owners(ns, green))
        if after_up < min(scaled, 2):
            sizes = rescales(ns, blue)
            note(f"the autoscaler moved blue {scaled} -> {after_up} during the up: {sizes}")
            assert any(f"New size: {after_up};" in m for m in sizes), (scaled, after_up, sizes)
        # Let the autoscaler settle, then 30 s for the pools to spread onto every pod.
        settle = time.monotonic()
        last = len(ready_pods(ns, "blue"))
        while time.monotonic() - settle < 40 and load.elapsed() < 200:
            time.sleep(5)
            now = len(ready_pods(ns, "blue"))
            if now != last:
                settle, last = time.monotonic(), now
        note(f"{last} blue pods Ready at {load.elapsed():.0f} s")
        time.sleep(30)
        pods = ready_pods(ns, "blue")
        first = {p: served(ns, p) for p in pods}
        time.sleep(20)
        second = {p: served(ns, p) for p in pods if p in ready_pods(ns, "blue")}
        assert replicas(ns, green) == (1, 1), "green (type: default) must keep its count"
    note(f"blue under load: {load.report()}")
    stopped = time.monotonic()
    delta = {p: second[p] - first[p] for p in second}
    total = sum(delta.values())
    shares = {p: n / total for p, n in delta.items()} if total else {}
    note(
        "per-pod share over 20 s: "
        + ", ".join(f"{p[-5:]} {s:.0%}" for p, s in sorted(shares.items()))
    )
    scale_in = wait_for("blue back to 1 replica", lambda: replicas(ns, blue)[0] == 1, 240)
    note(f"back to 1 replica {time.monotonic() - stopped:.0f} s after the load stopped")
    Path(project.work_dir / "figures.txt").write_text("\n".join(figures) + "\n")
    assert load.failures == [], load.failures[:20]
    assert len(delta) >= 2 and total > 0, (first, second)
    even = 1 / len(delta)
    assert all(abs(s - even) <= SHARE_TOLERANCE for s in shares.values()), shares
    assert scale_in >= 0
    assert replicas(ns, green) == (1, 1)
    logs = kubectl("-n", ns, "logs", f"deployment/{outputs['endpoint_name']}-router", timeout=30)
    found = [line for line in logs.splitlines() if '"discovery"' in line]
    counts = [int(m.group(1)) for m in map(READY_PODS.search, found) if m]
    assert counts and max(counts) >= 2, found
    assert not any("cannot list EndpointSlices" in line for line in found), found
