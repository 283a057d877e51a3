"""Faults on the local cluster (issue 7): what breaks must not reach clients.

One stack (the shipped dev stack, blue with two instances) under a background load, then:
- a scoring pod is deleted: its replacement starts, and no request fails;
- a new deployment whose `init()` fails: `pulumi up` fails naming it, with the pod's log tail
  (the script's exception), and the endpoint keeps serving blue, router untouched;
- a new deployment that never becomes Ready (init() never returns): `pulumi up` fails after
  its rollout timeout, the deployment receives no traffic, not even pinned requests, and its
  log says init() is still running;
- both are removed again with a plain `up`.
Blue also carries a secret environment variable (issue 13): the container reads it, and its
value is in no pod spec, ConfigMap, plain output or log.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from components import _labels
from mlendpoints._project import EndpointProject
from mlendpoints._sample import SampleEndpoint as Endpoint
from mlendpoints.client import ca_file
from mlendpoints.kube import is_ready, kubectl, running_pods
from mlendpoints.paths import REPO
from tests.support.load import Load
from tests.support.security import scan_for_secrets
from tests.support.stack_ops import failed_up, script_folder, up
from tests.support.walkthrough import FIGURES

pytestmark = [pytest.mark.toolchain, pytest.mark.images, pytest.mark.cluster]

NEVER_READY = '''"""init() that never returns: the pod runs but never becomes Ready."""

import time


def init():
    while True:
        time.sleep(3600)


def run(raw_data):
    return raw_data
'''


def pods_of(deployment: str) -> str:
    """kubectl selector of a deployment's pods (the labels the components put on them)."""
    return _labels.as_selector(_labels.scoring_selector("diabetes", deployment))


def add_deployment(project: EndpointProject, index: int, name: str, code: Path) -> None:
    """A deployment of the sample model with the scoring script in CODE, 10% of live traffic
    (so a router that took it would send it requests), a short rollout timeout."""
    project.set_config(
        {
            f"deployments[{index}].name": name,
            f"deployments[{index}].model": "diabetes",
            f"deployments[{index}].environment": "sklearn",
            f"deployments[{index}].code.path": str(code),
            f"deployments[{index}].rollout_timeout_s": 45,
            "endpoint.traffic.blue": 90,
            f"endpoint.traffic.{name}": 10,
        }
    )


def remove_deployment(project: EndpointProject, index: int, name: str) -> None:
    project.remove_config(f"deployments[{index}]")
    project.remove_config(f"endpoint.traffic.{name}")
    project.set_config({"endpoint.traffic.blue": 100})


@pytest.mark.timeout(1200)
def test_pod_kill_failed_init_and_never_ready_cost_no_request(
    endpoint_project: EndpointProject, tmp_path: Path
) -> None:
    project = endpoint_project
    ns = project.namespace
    project.set_config({"deployments[0].instance_count": 2})
    token = secrets.token_urlsafe(24)
    project.set_secret_config("deployments[0].secret_environment_variables.API_TOKEN", token)
    up(project)
    outputs = project.outputs()
    # The secret environment variable reaches the container, and nothing else shows it.
    blue_pod = running_pods(ns, pods_of("blue"))[0]["metadata"]["name"]
    assert kubectl("-n", ns, "exec", blue_pod, "--", "printenv", "API_TOKEN").strip() == token
    stack_file = Path(project.stack.workspace.work_dir) / "Pulumi.dev.yaml"
    assert "API_TOKEN" in stack_file.read_text() and token not in stack_file.read_text()
    scan_for_secrets(ns, [token], outputs)
    verify = ca_file(ns, outputs["ca_certificate"])
    endpoint, key = Endpoint(outputs["scoring_uri"], verify=verify), outputs["primary_key"]
    endpoint.wait_router(key, {"blue": 100}, {})
    selector = pods_of("blue")
    blue_pods = {p["metadata"]["name"] for p in running_pods(ns, selector)}
    assert len(blue_pods) == 2, blue_pods

    load = Load(
        lambda: endpoint.ask(key), threads=3, pause=0.02, max_seconds=900, max_requests=200_000
    )
    with load:
        # A scoring pod deleted under load: it drains, a replacement comes up, nothing fails.
        victim = sorted(blue_pods)[0]
        kubectl("-n", ns, "delete", "pod", victim, "--wait=false")
        deadline = time.monotonic() + 120
        while True:
            ready = [p for p in running_pods(ns, selector) if is_ready(p)]
            names = {p["metadata"]["name"] for p in ready}
            if (
                len(ready) == 2
                and victim not in names
                and not kubectl("-n", ns, "get", "pod", victim, "--ignore-not-found").strip()
            ):
                break
            assert time.monotonic() < deadline, f"no replacement for {victim}: {names}"
            time.sleep(1)
        killed_at = load.elapsed()
        time.sleep(2)
        assert load.failures == [], load.failures[:10]
        assert any(a.at > killed_at for a in load.answers)

        # init() fails: up fails with the pod's log tail; blue keeps serving, router untouched.
        broken = script_folder(
            tmp_path,
            "broken",
            (REPO / "tests" / "assets" / "scripts" / "failing_init.py").read_text(),
        )
        add_deployment(project, 1, "broken", broken)
        message = failed_up(project)
        assert "broken" in message, message[-3000:]
        assert "no-such-model.pkl" in message, message[-3000:]  # the script's exception
        assert project.outputs()["traffic"] == {"blue": 100}
        assert endpoint.split(key, 300) == {"blue": 300}
        status, _, body = endpoint.post(credential=key, pin="broken")
        assert status == 404 and b"broken" in body, (status, body)
        remove_deployment(project, 1, "broken")
        up(project)
        assert set(project.outputs()["deployments"]) == {"blue"}

        # Never Ready: up fails after the rollout timeout; no request ever reaches it.
        stuck = script_folder(tmp_path, "stuck", NEVER_READY)
        add_deployment(project, 1, "stuck", stuck)
        message = failed_up(project)
        assert "stuck" in message, message[-3000:]
        assert endpoint.split(key, 300) == {"blue": 300}
        status, _, body = endpoint.post(credential=key, pin="stuck")
        assert status == 404, (status, body)
        pods = running_pods(ns, pods_of("stuck"))
        assert pods and not any(is_ready(p) for p in pods), pods
        stuck_log = kubectl("-n", ns, "logs", "-l", pods_of("stuck"), "--tail", "50")
        assert '"event": "init_slow"' in stuck_log and "still running after 30 s" in stuck_log, (
            stuck_log
        )
        remove_deployment(project, 1, "stuck")
        up(project)
        assert set(project.outputs()["deployments"]) == {"blue"}
        assert not running_pods(ns, pods_of("stuck"))
    FIGURES.append(
        f"faults: background load through pod kill, failed init, never-Ready: {load.report()}"
    )
    assert load.failures == [], load.failures[:10]
    assert {a.label for a in load.answers} == {"blue"}
