"""kubectl, as the CLI (`ml-endpoints logs`), the cluster and end-to-end tests and the rollout
benchmark run it. Default target: the local cluster from `make cluster-up`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from mlendpoints.paths import cache_root
from mlendpoints.stack import kubectl as find_kubectl

CACHE = cache_root()
KUBECONFIG = CACHE / "cluster" / "kubeconfig"
"""The local cluster's kubeconfig (scripts/cluster.sh writes it)."""


class KubectlError(RuntimeError):
    """kubectl exited non-zero (the message carries its stderr), or there is no kubectl."""


def kubectl_path() -> str:
    found = find_kubectl()
    if found is None:
        raise KubectlError(
            "no kubectl: run `make cluster-up` (it builds one) or put kubectl on PATH"
        )
    return found


def base_argv(kubectl: str, kubeconfig: Path, context: str | None = None) -> list[str]:
    """`kubectl --kubeconfig KUBECONFIG [--context CONTEXT]`: the start of every call."""
    argv = [kubectl, "--kubeconfig", str(kubeconfig)]
    if context:
        argv += ["--context", str(context)]
    return argv


def kubectl(*args: str, stdin: str | None = None, timeout: float = 120) -> str:
    """Run kubectl against the local cluster; raise with its stderr on failure."""
    proc = subprocess.run(
        [*base_argv(kubectl_path(), KUBECONFIG), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def kubectl_json(*args: str, timeout: float = 120) -> Any:
    return json.loads(kubectl(*args, "-o", "json", timeout=timeout))


def check_cluster() -> None:
    """Fail with what to run unless the cluster answers and its one node is Ready."""
    if not KUBECONFIG.exists():
        raise AssertionError(f"{KUBECONFIG} is missing: run `make cluster-up` before this tier")
    assert kubectl("get", "--raw", "/readyz").strip() == "ok"
    nodes = kubectl_json("get", "nodes")["items"]
    ready = [c["status"] for n in nodes for c in n["status"]["conditions"] if c["type"] == "Ready"]
    assert ready == ["True"], f"expected one Ready node, got {ready}"


def running_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
    """Pods matching SELECTOR that are not being deleted."""
    pods = kubectl_json("-n", namespace, "get", "pods", "-l", selector)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True (it receives Service traffic)."""
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def namespace_exists(namespace: str) -> bool:
    return kubectl("get", "namespace", namespace, "--ignore-not-found").strip() != ""
