"""Cluster checks of issue 13 shared by the end-to-end tests: a pod that bypasses the router,
secrets read from the cluster, and a scan of everything readable for secret values."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from components._naming import router_object, service_url
from mlendpoints.kube import kubectl, kubectl_json

PLAIN_OUTPUTS_EXCLUDED = ("primary_key", "secondary_key")
"""Outputs that are Pulumi secrets by design; every other output is plain text."""


def cluster_secret(namespace: str, name: str, key: str) -> str:
    """One value of a Kubernetes Secret (the test reads it where only the cluster has it)."""
    data = kubectl_json("-n", namespace, "get", "secret", name)["data"]
    return base64.b64decode(data[key]).decode()


def bypass_status(namespace: str, endpoint: str, deployment: str, key: str) -> int | str:
    """POST to a deployment's Service from a new pod in the namespace, around the router,
    with a valid endpoint KEY: the HTTP status, or the connection error's name (a policy
    that drops the packets). The pod runs the router's image (it has Python)."""
    router = kubectl_json("-n", namespace, "get", "deployment", router_object(endpoint))
    image = router["spec"]["template"]["spec"]["containers"][0]["image"]
    name = f"bypass-{uuid.uuid4().hex[:6]}"
    url = service_url(endpoint, deployment, namespace) + "/score"
    script = (
        "import urllib.request, urllib.error\n"
        f"req = urllib.request.Request({url!r}, data=b'{{\"data\": [[0]]}}', "
        f"headers={{'Authorization': 'Bearer {key}', 'Content-Type': 'application/json'}})\n"
        "try:\n"
        "    print('STATUS', urllib.request.urlopen(req, timeout=10).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print('STATUS', e.code, e.read().decode())\n"
        "except OSError as e:\n"
        "    print('STATUS', type(e).__name__)\n"
    )
    overrides = {
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        }
    }
    kubectl(
        "-n", namespace, "run", name, f"--image={image}", "--restart=Never",
        "--image-pull-policy=IfNotPresent", f"--overrides={json.dumps(overrides)}",
        "--command", "--", "python", "-c", script,
    )  # fmt: skip
    try:
        kubectl(
            "-n", namespace, "wait", f"pod/{name}", "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=120s",
        )  # fmt: skip
        out = kubectl("-n", namespace, "logs", name)
    finally:
        kubectl("-n", namespace, "delete", "pod", name, "--wait=false", "--ignore-not-found")
    line = next(x for x in out.splitlines() if x.startswith("STATUS "))
    status = line.split()[1]
    return int(status) if status.isdigit() else status


def scan_for_secrets(namespace: str, secrets: list[str], outputs: dict[str, Any]) -> None:
    """Assert no secret value appears in a pod spec, ConfigMap, plain stack output or pod log
    of the namespace."""
    places: dict[str, str] = {
        "pods": kubectl("-n", namespace, "get", "pods", "-o", "json"),
        "deployments": kubectl("-n", namespace, "get", "deployments", "-o", "json"),
        "configmaps": kubectl("-n", namespace, "get", "configmaps", "-o", "json"),
        "plain outputs": json.dumps(
            {k: v for k, v in outputs.items() if k not in PLAIN_OUTPUTS_EXCLUDED}, default=str
        ),
    }
    for pod in kubectl_json("-n", namespace, "get", "pods")["items"]:
        name = pod["metadata"]["name"]
        places[f"log of {name}"] = kubectl("-n", namespace, "logs", name, "--all-containers")
    assert all(len(s) >= 16 for s in secrets), "a scan for short strings proves nothing"
    for where, text in places.items():
        for i, secret in enumerate(secrets):
            assert secret not in text, f"secret #{i} appears in {where}"
