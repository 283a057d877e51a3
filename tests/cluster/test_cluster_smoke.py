"""The local cluster from `make cluster-up`, really exercised: images pulled from the local
registry, a NodePort Service answering on 127.0.0.1, cluster DNS inside pods, a rolling
update under a small bounded load with no failed request, and a Pulumi Kubernetes provider
deployment (`pulumi up` waits for Ready, update, `destroy` leaves nothing behind).

The workload is tests/cluster/echo_server (a static Go binary in a FROM-scratch image made by
images/pause/image_tar.py and pushed over the registry API), so this tier needs neither Docker
nor a base image; the scoring image takes its place once the image pipeline exists.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlendpoints import stack as stackmod
from mlendpoints._procs import stop, wait_http
from mlendpoints.kube import (
    CACHE,
    KUBECONFIG,
    check_cluster,
    kubectl,
    namespace_exists,
    running_pods,
)
from mlendpoints.paths import REPO
from tests.support.load import Load

pytestmark = pytest.mark.cluster

REGISTRY = "127.0.0.1:5000"
IMAGE_REPO = f"{REGISTRY}/ml-endpoints-test/echo"
DRAIN_SECONDS = 6  # preStop sleep: longer than kube-proxy's rule programming takes here


@pytest.fixture(scope="module")
def cluster() -> None:
    """The cluster must be up; the tier is only selected after `make cluster-up`."""
    check_cluster()


def _registry_up() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=3) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    """The local registry (scripts/registry.sh runs it). Absent, start Debian's
    docker-registry on 127.0.0.1:5000 for this module only, the same way."""
    if _registry_up():
        yield REGISTRY
        return
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.fail(f"no registry on {REGISTRY} and no docker-registry binary: run `make setup`")
    with tempfile.TemporaryDirectory(prefix="mle-registry-") as tmp:
        cfg = Path(tmp) / "config.yml"
        cfg.write_text(
            f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/data\n"
            f"http:\n  addr: {REGISTRY}\n"
        )
        log = Path(tmp) / "registry.log"
        with log.open("wb") as out:
            popen = subprocess.Popen([exe, "serve", str(cfg)], stdout=out, stderr=out)
        try:
            wait_http(f"http://{REGISTRY}/v2/", timeout=30, popen=popen, log_path=log)
            yield REGISTRY
        finally:
            stop(popen)


@pytest.fixture(scope="module")
def echo_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/cluster/echo_server built static (the Go build cache makes reruns fast)."""
    out = tmp_path_factory.mktemp("echo") / "echo-server"
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOWORK": "off",
        "GOFLAGS": "-buildvcs=false",
    }
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."],
        cwd=REPO / "tests" / "cluster" / "echo_server",
        env=env,
        check=True,
        timeout=600,
    )
    return out


def push_echo(binary: Path, version: str) -> tuple[str, str]:
    """Push the echo image answering VERSION; return (reference, manifest digest)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_tar", REPO / "images/pause/image_tar.py")
    assert spec and spec.loader
    image_tar = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(image_tar)
    # Same binary, same tag: reruns do not pile up images; the pods use imagePullPolicy
    # Always, so every run still resolves the image through the registry.
    ref = f"{IMAGE_REPO}:{hashlib.sha256(binary.read_bytes()).hexdigest()[:12]}-{version}"
    digest = image_tar.push(
        ref,
        image_tar.Spec(
            [(binary, "/echo-server", 0o755)],
            ["/echo-server"],
            user="65534:65534",
            ports=[8080],
            env=[f"VERSION={version}"],
        ),
    )
    return ref, digest


@pytest.fixture
def namespace(cluster: None) -> Iterator[str]:
    name = f"mle-test-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", timeout=180)


def workload(ns: str, image: str, version: str) -> str:
    """Deployment (2 replicas, readiness-gated surge rollout) + NodePort Service."""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: echo}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      terminationGracePeriodSeconds: 20
      containers:
      - name: echo
        image: {image}
        imagePullPolicy: Always
        env: [{{name: VERSION, value: "{version}"}}]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1}}
        # Serve on while kube-proxy drops this pod from the Service (measured here: up to
        # ~3 s under load); only then does the container get SIGTERM.
        lifecycle: {{preStop: {{sleep: {{seconds: {DRAIN_SECONDS}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {ns}}}
spec:
  type: NodePort
  selector: {{app: echo}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def post_score(port: int, timeout: float = 5) -> tuple[int, dict]:
    """POST /score on 127.0.0.1:PORT over a fresh connection (as a new client would)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/score",
            body=b"{}",
            headers={"Content-Type": "application/json", "Connection": "close"},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


Ask = Callable[[int], tuple[int, str]]  # one request to a port -> (status, version label)


def echo_ask(port: int) -> tuple[int, str]:
    status, body = post_score(port)
    return status, str(body.get("version") if status == 200 else body)


def node_port(ns: str, svc: str = "echo") -> int:
    return int(kubectl("-n", ns, "get", "svc", svc, "-o", "jsonpath={.spec.ports[0].nodePort}"))


def first_answer(port: int, timeout: float = 60) -> tuple[int, dict]:
    """POST /score until the NodePort accepts connections: kube-proxy programs a new
    Service's rules asynchronously, shortly after the Service and endpoints exist."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return post_score(port)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_all_answer(port: int, version: str, tries: int = 200, ask: Ask = echo_ask) -> None:
    """Bounded poll until 10 consecutive answers come from VERSION (old pods drained)."""
    streak = 0
    for _ in range(tries):
        streak = streak + 1 if ask(port) == (200, version) else 0
        if streak >= 10:
            return
        time.sleep(0.05)
    raise AssertionError(f"answers not all from {version} after {tries} requests")


def test_registry_image_nodeport_dns_and_rolling_update(
    namespace: str, registry: str, echo_binary: Path
) -> None:
    ref1, digest1 = push_echo(echo_binary, "v1")
    ref2, digest2 = push_echo(echo_binary, "v2")
    kubectl("apply", "-f", "-", stdin=workload(namespace, ref1, "v1"))
    kubectl("-n", namespace, "rollout", "status", "deploy/echo", "--timeout=180s", timeout=200)

    # The pods run the image pulled from the registry, by the digest that was pushed.
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", "app=echo", "-o", "json"))
    ids = {s["imageID"] for p in pods["items"] for s in p["status"]["containerStatuses"]}
    assert ids == {f"{IMAGE_REPO}@{digest1}"}

    port = node_port(namespace)
    status, body = first_answer(port)
    assert (status, body["version"]) == (200, "v1")

    # Cluster DNS inside a pod resolves the Service to its ClusterIP.
    cluster_ip = kubectl("-n", namespace, "get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}")
    name = f"echo.{namespace}.svc.cluster.local"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/resolve?name={name}", timeout=10) as r:
        assert json.loads(r.read()) == {"addresses": [cluster_ip]}
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(
            f"http://127.0.0.1:{port}/resolve?name=nope.{namespace}.svc.cluster.local", timeout=10
        )
    assert err.value.code == 502

    # Rolling update to v2 under load: no request may fail.
    with Load(lambda: echo_ask(port)) as load:
        time.sleep(1)
        kubectl("apply", "-f", "-", stdin=workload(namespace, ref2, "v2"))
        kubectl("-n", namespace, "rollout", "status", "deploy/echo", "--timeout=180s", timeout=200)
        wait_all_answer(port, "v2")
    assert load.failures == []
    assert len(load.versions) >= 20, "the load did not run during the rollout"
    assert {"v1", "v2"} <= set(load.versions), f"saw {set(load.versions)}"
    running = running_pods(namespace, "app=echo")
    assert {s["imageID"] for p in running for s in p["status"]["containerStatuses"]} == {
        f"{IMAGE_REPO}@{digest2}"
    }


# ------------------------------------------------------------------ Pulumi provider tier
def pulumi_env() -> dict[str, str] | None:
    """The toolchain's environment (scripts/env.sh's), or None while it is not built."""
    env = stackmod.pulumi_env(REPO)
    if shutil.which("pulumi", path=env.get("PATH")) is None:
        return None
    plugins = Path(env["PULUMI_HOME"]) / "plugins"
    if not any(plugins.glob("resource-kubernetes-v*")):
        return None
    return env


def inline_stack(name: str, program: Callable[[], None], state: Path, env: dict[str, str]) -> Any:
    """A stack of an inline PROGRAM on a file backend in STATE, on the local cluster."""
    from pulumi import automation as auto

    env = {
        **env,
        "PULUMI_BACKEND_URL": f"file://{state}?metadata=skip",
        # A throwaway state: a passphrase of its own (there is no shared default any more).
        "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(24),
        "KUBECONFIG": str(KUBECONFIG),
    }
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    cli = Path(shutil.which("pulumi", path=env["PATH"]) or "pulumi").resolve()
    return auto.create_or_select_stack(
        stack_name=name,
        project_name=f"mle-cluster-{name}",
        program=program,
        opts=auto.LocalWorkspaceOptions(
            env_vars=env,
            work_dir=str(state),
            pulumi_command=auto.PulumiCommand(root=str(cli.parent.parent)),
        ),
    )


def rolling_workload(
    ns: str,
    name: str,
    image: Any,
    port: int,
    opts: Any,
    container: dict[str, Any] | None = None,
    probe: dict[str, int] | None = None,
) -> Any:
    """Pulumi twin of `workload`: 2 replicas rolled readiness-gated with a preStop drain, and a
    NodePort Service (returned). CONTAINER adds container fields, PROBE readiness timings."""
    import pulumi_kubernetes as k8s

    labels = {"app": name}
    k8s.apps.v1.Deployment(
        name,
        metadata={"name": name, "namespace": ns},
        spec={
            "replicas": 2,
            "selector": {"match_labels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rolling_update": {"max_surge": 1, "max_unavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "termination_grace_period_seconds": 20,
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "ports": [{"container_port": port}],
                            "readiness_probe": {
                                "http_get": {"path": "/ready", "port": port},
                                **(probe or {"period_seconds": 1}),
                            },
                            "lifecycle": {"pre_stop": {"sleep": {"seconds": DRAIN_SECONDS}}},
                            **(container or {}),
                        }
                    ],
                },
            },
        },
        opts=opts,
    )
    return k8s.core.v1.Service(
        name,
        metadata={"name": name, "namespace": ns},
        spec={"type": "NodePort", "selector": labels, "ports": [{"port": 80, "target_port": port}]},
        opts=opts,
    )


def test_pulumi_deployment_up_update_destroy(
    cluster: None, registry: str, echo_binary: Path
) -> None:
    env = pulumi_env()
    if env is None:
        pytest.skip("Pulumi CLI or Kubernetes provider plugin not built yet (make setup)")
    import pulumi
    import pulumi_kubernetes as k8s
    from pulumi import automation as auto

    ref1, _ = push_echo(echo_binary, "v1")
    ref2, digest2 = push_echo(echo_binary, "v2")
    ns = f"mle-pulumi-{uuid.uuid4().hex[:8]}"

    def program() -> None:
        cfg = pulumi.Config()
        image, version = cfg.require("image"), cfg.require("version")
        space = k8s.core.v1.Namespace("ns", metadata={"name": ns})
        opts = pulumi.ResourceOptions(depends_on=[space])
        svc = rolling_workload(
            ns,
            "echo",
            image,
            8080,
            opts,
            container={
                "image_pull_policy": "Always",
                "env": [{"name": "VERSION", "value": version}],
            },
        )
        pulumi.export("node_port", svc.spec.ports[0].node_port)

    with tempfile.TemporaryDirectory(prefix="mle-pulumi-") as state:
        stack = inline_stack("smoke", program, Path(state), env)
        try:
            stack.set_all_config(
                {"image": auto.ConfigValue(ref1), "version": auto.ConfigValue("v1")}
            )
            up = stack.up(on_output=lambda _line: None)
            port = int(up.outputs["node_port"].value)
            status, body = first_answer(port)
            assert (status, body["version"]) == (200, "v1")

            stack.set_all_config(
                {"image": auto.ConfigValue(ref2), "version": auto.ConfigValue("v2")}
            )
            with Load(lambda: echo_ask(port)) as load:
                time.sleep(1)
                stack.up(on_output=lambda _line: None)  # waits for the rollout
                wait_all_answer(port, "v2")
            assert load.failures == []
            assert len(load.versions) >= 20, "the load did not run during the rollout"
            assert {"v1", "v2"} <= set(load.versions), f"saw {set(load.versions)}"
            running = running_pods(ns, "app=echo")
            assert {s["imageID"] for p in running for s in p["status"]["containerStatuses"]} == {
                f"{IMAGE_REPO}@{digest2}"
            }
        finally:
            stack.destroy(on_output=lambda _line: None)
            stack.workspace.remove_stack("smoke")
        # destroy leaves nothing: the namespace (and so everything in it) is gone.
        assert not namespace_exists(ns)


# ------------------------------------------------------------------ the scoring image
@pytest.mark.timeout(900)
def test_pulumi_scoring_image_serves_rolls_out_and_destroys(
    cluster: None, registry: str, tmp_path: Path
) -> None:
    """The issue's "done when": the sample's scoring image, built locally by the project's
    image component inside `pulumi up`, deployed with the real Kubernetes provider; `up`
    waits for Ready, POST /score answers from the host, a changed image (model v1 -> v2)
    rolls out under load with no failed request, and `destroy` leaves nothing behind."""
    env = pulumi_env()
    if env is None:
        pytest.skip("Pulumi CLI or Kubernetes provider plugin not built yet (make setup)")
    base_ref = Path(env.get("ML_ENDPOINTS_CACHE", str(CACHE))) / "images" / "base-image.ref"
    if not base_ref.is_file():
        pytest.fail(f"{base_ref} missing: run `make images-setup`")
    import joblib
    import numpy as np
    import pulumi
    import pulumi_kubernetes as k8s
    from pulumi import automation as auto
    from sklearn.datasets import load_diabetes

    from components._images import Image, ImageArgs

    sample = REPO / "samples" / "diabetes"
    # The sample request's format with 40 rows, enough for the two models to disagree.
    request = {"data": load_diabetes().data[:40].round(5).tolist()}
    env_ctx = tmp_path / "env"
    env_ctx.mkdir()
    shutil.copy(sample / "requirements.txt", env_ctx / "requirements.txt")
    expected: dict[str, list] = {}
    for version in (1, 2):
        ctx = tmp_path / f"scoring-v{version}"
        (ctx / "code").mkdir(parents=True)
        shutil.copy(sample / "score.py", ctx / "code" / "score.py")
        subprocess.run(
            [
                str(REPO / ".venv" / "bin" / "python"),
                str(sample / "train.py"),
                "--out",
                str(ctx / "model"),
                "--version",
                str(version),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        model = joblib.load(ctx / "model" / "model.pkl")
        expected[f"v{version}"] = model.predict(np.array(request["data"])).tolist()
    assert expected["v1"] != expected["v2"], "the two models must answer differently"

    def ask(port: int) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(
                "POST",
                "/score",
                body=json.dumps(request).encode(),
                headers={"Content-Type": "application/json", "Connection": "close"},
            )
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            return resp.status, body[:200].decode(errors="replace")
        answer = json.loads(body)
        for label, preds in expected.items():
            if answer == preds:
                return 200, label
        return 200, f"unexpected predictions {answer}"

    ns = f"mle-scoring-{uuid.uuid4().hex[:8]}"
    repo = f"{REGISTRY}/ml-endpoints-test"

    def program() -> None:
        version = pulumi.Config().require("model")
        env_image = Image(
            "env",
            ImageArgs(
                context=str(env_ctx),
                dockerfile=str(REPO / "images" / "environment.Dockerfile"),
                repository=f"{repo}/env",
                build_args={"BASE_IMAGE": base_ref.read_text().strip(), "PYTHON_VERSION": "3.11"},
            ),
        )
        scoring = Image(
            "scoring",
            ImageArgs(
                context=str(tmp_path / f"scoring-{version}"),
                dockerfile=str(REPO / "images" / "scoring.Dockerfile"),
                repository=f"{repo}/scoring",
                build_args={"ENV_IMAGE": env_image.ref},
            ),
        )
        space = k8s.core.v1.Namespace("ns", metadata={"name": ns})
        opts = pulumi.ResourceOptions(depends_on=[space])
        svc = rolling_workload(
            ns,
            "scoring",
            scoring.ref,
            5001,
            opts,
            probe={"period_seconds": 1, "failure_threshold": 3},
        )
        pulumi.export("node_port", svc.spec.ports[0].node_port)
        pulumi.export("image", scoring.ref)

    state = tmp_path / "state"
    state.mkdir()
    stack = inline_stack("scoring", program, state, env)
    try:
        stack.set_config("model", auto.ConfigValue("v1"))
        up = stack.up(on_output=lambda _line: None)
        port = int(up.outputs["node_port"].value)
        first_answer(port)
        assert ask(port) == (200, "v1")

        stack.set_config("model", auto.ConfigValue("v2"))
        with Load(lambda: ask(port), pause=0.02, max_seconds=600) as load:
            time.sleep(1)
            up2 = stack.up(on_output=lambda _line: None)  # builds v2, waits for the rollout
            wait_all_answer(port, "v2", ask=ask)
        assert up2.outputs["image"].value != up.outputs["image"].value
        assert load.failures == []
        assert len(load.versions) >= 20, "the load did not run during the rollout"
        assert {"v1", "v2"} <= set(load.versions), f"saw {set(load.versions)}"
    finally:
        stack.destroy(on_output=lambda _line: None)
        stack.workspace.remove_stack("scoring")
    assert not namespace_exists(ns)
