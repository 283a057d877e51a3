"""A scoring pod's own `/metrics`, read from inside the pod (`kubectl exec`): the server
answers only requests carrying the router's internal credential, which only the pod can read."""

from __future__ import annotations

from mlendpoints.kube import kubectl
from scoring.server.config import Settings

_READ = """
import os, urllib.request
credential = open(os.environ[{var!r}]).read().strip()
port = os.environ.get("ML_ENDPOINTS_PORT") or os.environ.get("AZUREML_SERVER_PORT") or "5001"
req = urllib.request.Request(
    "http://127.0.0.1:" + port + "/metrics", headers={{"x-ml-endpoints-credential": credential}}
)
print(urllib.request.urlopen(req, timeout=10).read().decode())
""".format(var=Settings.env_vars("internal_credential_file")[0])


def pod_metrics(namespace: str, pod: str) -> str:
    """The Prometheus text of POD's scoring server."""
    return kubectl("-n", namespace, "exec", pod, "-c", "scoring", "--", "python", "-c", _READ)


def sample_sum(text: str, name: str, labels: str = "") -> float:
    """The sum of metric NAME's samples in TEXT whose labels contain LABELS (e.g.
    `status="200"`)."""
    total = 0.0
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        if metric.split("{", 1)[0] == name and labels in metric:
            total += float(value)
    return total
