"""Progressive rollouts on the local cluster (issue 17), one deployed stack for every scenario.

The dev stack gets a `green` deployment and an `endpoint.rollout` block (steps 20/50/100, a
short bake); a bounded background load runs throughout. Then, in order:
1. a good green (blue's model and script) promotes through every step, zero failed requests;
2. back to blue with two router replicas, and the deciding one (the Lease holder) is deleted
   mid-rollout: the other takes the lease over, resumes and finishes, no request failing;
3. (agreement gate off) a green whose script fails 1 request in 20 rolls back at the first
   step; `up` fails naming
   the error gate; the failures clients saw are counted against the exposure bound;
4. a green that answers 300 ms late rolls back on the p99 gate;
5. a green with the other model (answers differ) is refused by the agreement gate while only
   mirrored: no client ever gets its answer.
Detection and rollback times go to the end-to-end figures (and docs/router.md).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from components import _labels, _naming
from mlendpoints._project import EndpointProject
from mlendpoints._sample import BATCH
from mlendpoints.client import Endpoint, ca_file
from mlendpoints.kube import is_ready, kubectl, running_pods
from mlendpoints.paths import REPO
from tests.support.load import Load
from tests.support.router import wait_for
from tests.support.stack_ops import failed_up, script_folder, up
from tests.support.walkthrough import FIGURES

pytestmark = [pytest.mark.toolchain, pytest.mark.images, pytest.mark.cluster]

STEPS, BAKE_S = (20, 50, 100), 5
GATES = {
    "min_requests": 100,
    "max_error_rate_pct": 1.0,
    "max_p99_ratio": 3.0,
    "min_agreement_pct": 98,
}
SCRIPT = (REPO / "samples" / "diabetes" / "score.py").read_text()
FAILING = SCRIPT.replace(
    "def run(raw_data):\n",
    "import itertools\n\n_count = itertools.count(1)\n\n\ndef run(raw_data):\n"
    "    if next(_count) % 20 == 0:\n"
    '        raise RuntimeError("injected failure: 1 request in 20")\n',
)
SLOW = SCRIPT.replace(
    "def run(raw_data):\n",
    "import time\n\n\ndef run(raw_data):\n    time.sleep(0.3)\n",
)


def green(project: EndpointProject, code: Path, model: str = "diabetes") -> None:
    project.set_config(
        {
            "deployments[1].name": "green",
            "deployments[1].model": model,
            "deployments[1].environment": "sklearn",
            "deployments[1].code.path": str(code),
            "deployments[1].rollout_timeout_s": 180,
        }
    )


def target(project: EndpointProject, blue: int) -> None:
    project.set_config({"endpoint.traffic.blue": blue, "endpoint.traffic.green": 100 - blue})


@pytest.mark.timeout(2400)
def test_progressive_rollouts(endpoint_project: EndpointProject, tmp_path: Path) -> None:
    try:
        scenarios(endpoint_project, tmp_path)
    except BaseException:  # the router's own account of what it decided, for the report
        selector = _labels.as_selector(_labels.router_selector("diabetes"))
        ns = endpoint_project.namespace
        print(_try(kubectl, "-n", ns, "logs", "-l", selector, "--tail", "60", "--prefix"))
        raise


def scenarios(project: EndpointProject, tmp_path: Path) -> None:
    ns = project.namespace
    sample = REPO / "samples" / "diabetes"
    green(project, sample)
    target(project, 100)
    settings: dict[str, Any] = {"endpoint.rollout.bake_s": BAKE_S}
    for i, step in enumerate(STEPS):
        settings[f"endpoint.rollout.steps[{i}]"] = step
    for gate, value in GATES.items():
        settings[f"endpoint.rollout.gates.{gate}"] = value
    project.set_config(settings)
    up(project)
    outputs = project.outputs()
    verify = ca_file(ns, outputs["ca_certificate"])
    endpoint = Endpoint(outputs["scoring_uri"], body=BATCH, verify=verify)
    key = outputs["primary_key"]

    def status() -> dict[str, Any]:
        return endpoint.get("/rollout", key)

    def ask() -> tuple[int, str]:
        code, who, body = endpoint.post(credential=key)
        return (code, who) if code == 200 else (code, f"{who}: {body[:120]!r}")

    load = Load(ask, threads=3, pause=0.01, max_seconds=2000, max_requests=400_000)
    with load:
        # 1. A good green promotes through every step, nothing fails.
        target(project, 0)
        t0 = time.monotonic()
        up(project)
        took = time.monotonic() - t0
        done = status()
        assert done["status"] == "promoted", done
        assert [h["live"]["green"] for h in done["history"]] == [0, *STEPS], done["history"]
        assert load.failures == [], load.failures[:10]
        FIGURES.append(
            f"progressive 1: good green promoted through mirror + {len(STEPS)} steps of "
            f"{BAKE_S} s bake in {took:.0f} s (`up` included), 0 failed requests"
        )

        # 2. Back to blue with two router replicas; the one deciding (the Lease's holder) is
        # deleted mid-rollout and the other takes the lease over and finishes the rollout.
        # (A longer bake: time for the second replica to be Ready before the kill.)
        target(project, 100)
        project.set_config({"endpoint.router.replicas": 2, "endpoint.rollout.bake_s": 15})
        result: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: result.update(up=_try(up, project)))
        runner.start()
        deadline = time.monotonic() + 300
        while True:
            now = _try(status)
            if isinstance(now, dict) and now.get("status") == "baking" and now.get("step", 0) >= 1:
                break
            assert time.monotonic() < deadline, f"the rollout to blue never reached step 2: {now}"
            time.sleep(0.5)
        selector = _labels.as_selector(_labels.router_selector("diabetes"))

        def two_routers_one_deciding() -> str:
            ready = {p["metadata"]["name"] for p in running_pods(ns, selector) if is_ready(p)}
            holder = lease_holder(ns)
            return holder if len(ready) == 2 and holder in ready else ""

        try:
            decider = wait_for(
                two_routers_one_deciding, "2 Ready router pods, one deciding", 120, 0.5
            )
            before_kill = status()
            assert before_kill["status"] == "baking", before_kill  # the kill is mid-rollout
            killed_at = time.monotonic()
            kubectl("-n", ns, "delete", "pod", decider, "--wait=false")
        finally:  # the `up` holds the stack's lock: the next module needs it back
            runner.join(timeout=600)
        assert not isinstance(result.get("up"), Exception), result
        resumed = status()
        assert resumed["status"] == "promoted" and resumed["candidate"] == "blue", resumed
        successor = lease_holder(ns)
        assert successor and successor != decider, (decider, successor)
        assert load.failures == [], load.failures[:10]
        FIGURES.append(
            f"progressive 5: the deciding router replica (of 2) deleted at step 2 of the rollout "
            f"back to blue; {successor} took the lease, resumed and promoted "
            f"{time.monotonic() - killed_at:.0f} s later, 0 failed requests"
        )
        # One router again before the gates below (each replica judges the traffic it routes,
        # so a second one still serving during scenario 3 would hide failures from the count).
        project.set_config({"endpoint.router.replicas": 1, "endpoint.rollout.bake_s": BAKE_S})
        up(project)

        # 3. 5% 500s: rolled back at the first step, naming the error gate. (No agreement gate
        # for 3 and 4: a candidate that fails or differs would be refused while mirrored.)
        project.remove_config("endpoint.rollout.gates.min_agreement_pct")
        green(project, script_folder(tmp_path, "failing", FAILING))
        target(project, 0)
        before = len(load.failures)
        message = failed_up(project)
        assert "gate error_rate" in message and "step 1 of 3 (20%)" in message, message[-3000:]
        back = status()
        assert back["status"] == "rolled_back" and back["live"] == {"blue": 100, "green": 0}
        verdict = back["verdict"]
        seen = load.failures[before:]
        detection = verdict["at"] - back["step_started"]
        FIGURES.append(
            f"progressive 2: 5% 500s rolled back at step 1 (20%) {detection:.1f} s after the "
            f"step began ({verdict['figures']['failed']} failed of "
            f"{verdict['figures']['requests']} green requests in the window); clients saw "
            f"{len(seen)} failed requests"
        )
        assert all("green" in f.label for f in seen), seen[:5]
        assert len(seen) <= verdict["figures"]["failed"] + 5, (len(seen), verdict)
        assert endpoint.split(key, 50) == {"blue": 50}
        target(project, 100)
        up(project)

        # 4. A slow green rolls back on the p99 gate.
        green(project, script_folder(tmp_path, "slow", SLOW))
        target(project, 0)
        message = failed_up(project)
        assert "gate p99" in message, message[-3000:]
        slow = status()["verdict"]
        FIGURES.append(f"progressive 3: +300 ms green rolled back on p99: {slow['reason']}")
        target(project, 100)
        up(project)

        # 5. Answers that differ: refused while mirrored, before any live traffic.
        green(project, sample, model="diabetes-v2")
        project.set_config({"endpoint.rollout.gates.min_agreement_pct": GATES["min_agreement_pct"]})
        target(project, 0)
        since = load.elapsed()
        message = failed_up(project)
        assert "gate agreement" in message and "before live traffic" in message, message[-3000:]
        refused = status()["verdict"]
        assert "green" not in {a.label for a in load.since(since)}
        FIGURES.append(f"progressive 4: disagreeing green refused: {refused['reason']}")
        target(project, 100)
        up(project)
    FIGURES.append(f"progressive: background load {load.report()}")


def lease_holder(ns: str) -> str:
    """The router pod that decides the rollout: the holder of the endpoint's rollout Lease
    (empty while no replica has taken it)."""
    lease = f"{_naming.router_object('diabetes')}-rollout"  # the router's `rollout_store`
    found = _try(kubectl, "-n", ns, "get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}")
    return "" if isinstance(found, Exception) else found.strip()


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        return exc
