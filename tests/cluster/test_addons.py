"""The local cluster's add-ons that `make cluster-up` deploys, really exercised: the metrics API
(metrics-server through the aggregation layer) reports a pod's CPU and memory, the default
StorageClass (local-path-provisioner) binds a claim whose data outlives the pod that wrote it,
and the S3 server (versitygw) stores, lists and returns objects for a real S3 client on the
host and for a pod on the node IP.

The pods use the images cluster-up imports (pause, and the static busybox that local-path's
helper pod runs), so this module needs no registry.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlendpoints.kube import CACHE, check_cluster, kubectl, kubectl_json
from mlendpoints.versions import PAUSE_VERSION

pytestmark = pytest.mark.cluster

PAUSE = f"registry.k8s.io/pause:{PAUSE_VERSION}"
BUSYBOX = "ml-endpoints.local/busybox:debian"  # scripts/cluster.sh builds and imports it
S3_ENV = CACHE / "cluster" / "s3.env"
LOCAL_PATH_ROOT = Path("/var/lib/ml-endpoints/local-path")  # the provisioner's nodePathMap


def _poll(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 2) -> Any:
    """CHECK's first truthy result within TIMEOUT seconds, else fail naming WHAT."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    check_cluster()
    name = f"mle-addons-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false")


def _apply(manifest: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def _pod(ns: str, name: str, image: str, command: list[str], claim: str = "") -> dict[str, Any]:
    """A pod that runs COMMAND once; with CLAIM, that PersistentVolumeClaim on /data."""
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
    }
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "restartPolicy": "Never",
        "containers": [container],
    }
    if claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def _run_to_completion(manifest: dict[str, Any]) -> str:
    """Run a pod that exits; return its log. Fails with the log when it does not succeed."""
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    _apply(manifest)

    def finished() -> str | None:
        phase = kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = _poll(f"pod {name} finished", finished)
    log = kubectl("-n", ns, "logs", name)
    assert phase == "Succeeded", f"pod {name} {phase}: {log}"
    return log


def test_metrics_api_reports_a_pods_cpu_and_memory(namespace: str) -> None:
    _apply(_pod(namespace, "idle", PAUSE, ["/pause"]))
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/idle", "--timeout=90s")
    path = f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/idle"

    def usage() -> dict[str, str] | None:
        try:
            found = json.loads(kubectl("get", "--raw", path))
        except Exception:  # 404 until metrics-server's next scrape sees the pod
            return None
        return found["containers"][0]["usage"]

    got = _poll("metrics for pod idle", usage, timeout=150, every=5)
    assert set(got) >= {"cpu", "memory"}, got
    assert got["memory"].endswith("Ki") and int(got["memory"][:-2]) > 0, got
    # The node's figures too: what `kubectl top nodes` and an HPA read.
    nodes = json.loads(kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"))
    assert [n["metadata"]["name"] for n in nodes["items"]] == ["ml-endpoints"]
    assert int(nodes["items"][0]["usage"]["memory"].removesuffix("Ki")) > 0
    top = kubectl("top", "pod", "idle", "-n", namespace, "--no-headers")
    assert top.split()[0] == "idle", top


def test_default_storage_class_binds_and_data_survives_the_pod(namespace: str) -> None:
    classes = kubectl_json("get", "storageclass")["items"]
    default = [
        c["metadata"]["name"]
        for c in classes
        if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class")
        == "true"
    ]
    assert default == ["local-path"], default
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    }  # no storageClassName: the default class must take it
    _apply(claim)
    token = uuid.uuid4().hex
    writer = _pod(namespace, "writer", BUSYBOX, ["sh", "-c", f"echo {token} > /data/t"], "data")
    _run_to_completion(writer)
    assert kubectl("-n", namespace, "get", "pvc", "data", "-o", "jsonpath={.status.phase}") == (
        "Bound"
    )
    pv = kubectl("-n", namespace, "get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}")
    host_path = kubectl("get", "pv", pv, "-o", "jsonpath={.spec.hostPath.path}")
    assert Path(host_path).parent == LOCAL_PATH_ROOT, host_path
    kubectl("-n", namespace, "delete", "pod", "writer", "--wait=true")

    reader = _pod(namespace, "reader", BUSYBOX, ["sh", "-c", "read t < /data/t; echo $t"], "data")
    assert _run_to_completion(reader).strip() == token
    # Deleting the claim runs the teardown helper pod (busybox `rm -rf`): the folder goes.
    kubectl("-n", namespace, "delete", "pod", "reader", "--wait=true")
    kubectl("-n", namespace, "delete", "pvc", "data", "--wait=true")
    _poll(f"{host_path} removed", lambda: not Path(host_path).exists())


def _s3_env() -> dict[str, str]:
    assert S3_ENV.exists(), f"{S3_ENV} is missing: run `make cluster-up`"
    assert S3_ENV.stat().st_mode & 0o077 == 0, f"{S3_ENV} must be private (0600)"
    pairs = (
        line.split("=", 1)
        for line in S3_ENV.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return dict(pairs)


def _s3_client(env: dict[str, str], endpoint: str) -> Any:
    import boto3  # the dev extra; only this tier needs it
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        # SigV4 for presigned URLs too (boto3 presigns S3 with SigV2 unless told), path-style.
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def test_s3_put_list_get_from_the_host_and_a_pod(namespace: str) -> None:
    from botocore.exceptions import ClientError

    env = _s3_env()
    bucket = env["ML_ENDPOINTS_S3_BUCKET"]
    s3 = _s3_client(env, env["AWS_ENDPOINT_URL"])
    prefix = f"tests/{namespace}/"
    body = json.dumps({"id": uuid.uuid4().hex, "data": [1, 2, 3]}).encode()
    s3.put_object(Bucket=bucket, Key=prefix + "a.json", Body=body)
    s3.put_object(Bucket=bucket, Key=prefix + "b.json", Body=b"{}")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert [o["Key"] for o in listed["Contents"]] == [prefix + "a.json", prefix + "b.json"]
    assert s3.get_object(Bucket=bucket, Key=prefix + "a.json")["Body"].read() == body
    # Wrong credentials are refused: the server checks signatures.
    bad = _s3_client({**env, "AWS_SECRET_ACCESS_KEY": "wrong"}, env["AWS_ENDPOINT_URL"])
    with pytest.raises(ClientError) as refused:
        bad.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"

    # From a pod, on the node IP: a signed (presigned) GET of the object the host wrote.
    pod_s3 = _s3_client(env, env["ML_ENDPOINTS_S3_POD_ENDPOINT"])
    url = pod_s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": prefix + "a.json"}, ExpiresIn=300
    )
    got = _run_to_completion(
        _pod(namespace, "s3-get", BUSYBOX, ["/bin/busybox", "wget", "-q", "-O", "-", url])
    )
    assert got.encode() == body
    for key in ("a.json", "b.json"):
        s3.delete_object(Bucket=bucket, Key=prefix + key)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0
