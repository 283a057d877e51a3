"""The router balances over a deployment's ready pods (issue 15), over real sockets.

The router reads the pods from a stand-in Kubernetes API on loopback
(tests/support/kube_api.py: list + watch of EndpointSlices, as the API server answers them);
the "pods" are echo upstreams on 127.0.0.2, 127.0.0.3, ... sharing one port, like pods behind
one Service; the deployment's own address (`http://localhost:PORT`, its "Service") is a third
echo upstream, the fallback when no pods are known.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlendpoints._procs import Proc, free_port, running
from tests.support.kube_api import FakeKubeApi, fake_kube_api
from tests.support.load import Load
from tests.support.router import KEY1, cfg, router, wait_for

pytestmark = pytest.mark.router

NS, TOKEN = "ns", "service-account-token-for-tests"
SERVICE = "localhost"  # the Service name discovery derives from the deployment's URL host


@contextlib.contextmanager
def pod(host: str, port: int, name: str, delay_ms: int = 0) -> Iterator[None]:
    """An echo upstream answering as NAME on HOST:PORT, DELAY_MS per /score."""
    log = Path(tempfile.mkstemp(prefix=f"pod-{name}-", suffix=".log")[1])
    argv = [sys.executable, "tests/assets/echo_upstream.py", "--name", name]
    argv += ["--host", host, "--port", str(port), "--delay-ms", str(delay_ms)]
    with running(argv, f"http://{host}:{port}/ready", log):
        yield


def ask(proc: Proc) -> tuple[int, str]:
    """One POST /score on a new connection: (status, the pod that answered)."""
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/score",
            body=b'{"x": 1}',
            headers={"Authorization": f"Bearer {KEY1}", "content-type": "application/json"},
        )
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        return resp.status, body.decode(errors="replace")[:200]
    return 200, json.loads(body)["deployment"]


def discovering(tmp: Path, api: FakeKubeApi, service_port: int) -> dict:
    """A router config whose deployment 'blue' is the Service localhost:SERVICE_PORT, with its
    pods read from API."""
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    return cfg(
        {"blue": f"http://{SERVICE}:{service_port}"},
        {"blue": 100},
        discovery={"namespace": NS, "api_url": api.url, "token_file": str(token), "ca_file": None},
    )


def answered(proc: Proc, n: int) -> Counter[str]:
    """Who answered N sequential requests (each must be a 200)."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        status, who = ask(proc)
        assert status == 200, who
        seen[who] += 1
    return seen


def test_requests_go_to_ready_pods_in_turn_and_follow_the_api(tmp_path: Path) -> None:
    """Idle pods take requests in turn; under load, a pod turned not-ready (terminating) gets
    none from the next update on and then stops, a new pod replaces it and gets its share,
    and no request fails."""
    port, service_port = free_port(), free_port()
    with (
        fake_kube_api(TOKEN) as api,
        pod("127.0.0.1", service_port, "service"),
        pod("127.0.0.2", port, "a"),
        contextlib.ExitStack() as b_running,
        pod("127.0.0.4", port, "c"),
    ):
        b_running.enter_context(pod("127.0.0.3", port, "b"))
        api.set_pods(NS, SERVICE, {"127.0.0.2": True, "127.0.0.3": True}, port)
        with router(tmp_path, discovering(tmp_path, api, service_port)) as (proc, _):
            wait_for(lambda: set(answered(proc, 4)) == {"a", "b"}, "both pods answering")
            # One request at a time: every pod has 0 in flight, so they alternate exactly.
            assert answered(proc, 40) == Counter({"a": 20, "b": 20})
            load = Load(lambda: ask(proc), threads=4, pause=0.0, max_seconds=60)
            with load:
                wait_for(lambda: len(load.answers) > 50, "load running")
                api.set_pods(NS, SERVICE, {"127.0.0.2": True, "127.0.0.3": False}, port)
                wait_for(lambda: set(load.versions[-30:]) == {"a"}, "b out of rotation")
                b_running.close()  # the terminating pod exits
                mark = len(load.answers)
                wait_for(lambda: len(load.answers) > mark + 200, "200 more answers")
                assert set(load.versions[mark:]) == {"a"}
                api.set_pods(NS, SERVICE, {"127.0.0.2": True, "127.0.0.4": True}, port)
                wait_for(lambda: "c" in load.versions[-30:], "c in rotation")
                mark = len(load.answers)
                wait_for(lambda: len(load.answers) > mark + 200, "200 more answers")
            assert load.failures == [], load.failures[:10]
            last = Counter(load.versions[mark:])
            assert set(last) <= {"a", "c"} and min(last["a"], last["c"]) > 40, last
            assert "service" not in load.versions


def test_least_outstanding_requests_sends_more_to_the_faster_pod(tmp_path: Path) -> None:
    """Eight clients at once over a fast pod (2 ms) and a slow one (40 ms): the router keeps
    about as many requests in flight on each, so the fast pod answers several times more
    (round robin would give each half)."""
    port, service_port = free_port(), free_port()
    with (
        fake_kube_api(TOKEN) as api,
        pod("127.0.0.1", service_port, "service"),
        pod("127.0.0.2", port, "fast", delay_ms=2),
        pod("127.0.0.3", port, "slow", delay_ms=40),
    ):
        api.set_pods(NS, SERVICE, {"127.0.0.2": True, "127.0.0.3": True}, port)
        with router(tmp_path, discovering(tmp_path, api, service_port)) as (proc, _):
            wait_for(lambda: set(answered(proc, 4)) == {"fast", "slow"}, "both pods answering")
            load = Load(lambda: ask(proc), threads=8, pause=0.0, max_seconds=60, max_requests=600)
            with load:
                wait_for(lambda: len(load.answers) + len(load.failures) >= 600, "600", 60)
    assert load.failures == [], load.failures[:10]
    seen = Counter(load.versions)
    assert seen["slow"] > 0 and seen["fast"] > 3 * seen["slow"], seen


def test_no_api_or_no_permission_means_the_service_address(tmp_path: Path) -> None:
    """An API that refuses (403, as without RBAC) or is gone: requests go to the deployment's
    own address, none fails; when the API answers again, to the pods."""
    port, service_port = free_port(), free_port()
    with (
        fake_kube_api(TOKEN) as api,
        pod("127.0.0.1", service_port, "service"),
        pod("127.0.0.2", port, "a"),
    ):
        api.set_pods(NS, SERVICE, {"127.0.0.2": True}, port)
        api.refuse = True
        with router(tmp_path, discovering(tmp_path, api, service_port)) as (proc, _):
            assert answered(proc, 10) == Counter({"service": 10})
            wait_for(lambda: "cannot list EndpointSlices" in proc.log(), "the refusal logged")
            assert "forbidden" in proc.log()
            api.refuse = False
            wait_for(lambda: answered(proc, 5) == Counter({"a": 5}), "pods used", timeout=60)
    gone = cfg(
        {"blue": f"http://{SERVICE}:{service_port}"},
        {"blue": 100},
        discovery={"namespace": NS, "api_url": f"http://127.0.0.1:{free_port()}"},
    )
    with pod("127.0.0.1", service_port, "service"), router(tmp_path, gone) as (proc, _):
        assert answered(proc, 10) == Counter({"service": 10})
