"""The local cluster from `make cluster-up`, as the cluster and end-to-end tiers reach it."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from mlendpoints import stack as stackmod

CACHE = stackmod.cache_root()
KUBECONFIG = CACHE / "cluster" / "kubeconfig"


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries its stderr."""


def kubectl_path() -> str:
    found = stackmod.kubectl()
    if found is None:
        raise KubectlError(
            "no kubectl: run `make cluster-up` (it builds one) or put kubectl on PATH"
        )
    return found


def kubectl(*args: str, stdin: str | None = None, timeout: float = 120) -> str:
    """Run kubectl against the local cluster; raise with its stderr on failure."""
    proc = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(KUBECONFIG), *args],
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
