"""The rollout's store and lease on the Kubernetes API, with the pod's ServiceAccount token.

Plain HTTPS (stdlib) to ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` with the
token and CA the kubelet mounts; called from a thread (``asyncio.to_thread``), never on the
request path. The record is a ConfigMap ``NAME`` (key ``state``), written with its
``resourceVersion`` so two writers cannot silently overwrite each other; the decider holds the
``coordination.k8s.io/v1`` Lease ``NAME`` (renewed every second, 5 s duration).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from scoring.router.config import SERVICE_ACCOUNT_DIR as SA_DIR

LEASE_S = 5
TIMEOUT_S = 2.0


class KubeApi:
    """GET/PUT/POST JSON on the in-cluster API server."""

    def __init__(self, sa_dir: str = SA_DIR, base: str | None = None) -> None:
        self.sa_dir = sa_dir
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.base = base or f"https://{host}:{port}"
        self.context = ssl.create_default_context(cafile=f"{sa_dir}/ca.crt")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The decoded JSON answer; None for 404; raises for anything else but 2xx."""
        with open(f"{self.sa_dir}/token") as f:  # re-read: the kubelet rotates it
            token = f.read().strip()
        req = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=self.context) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 409:
                raise Conflict(exc.code) from exc
            raise
        except (TimeoutError, OSError) as exc:
            raise OSError(f"kubernetes API {method} {path}: {exc}") from exc


class Conflict(RuntimeError):
    """409: another writer changed the object first."""

    def __init__(self, code: int) -> None:
        super().__init__(f"kubernetes API answered {code}")


class ConfigMapStore:
    """The rollout record in ConfigMap ``name`` (created on first write)."""

    def __init__(self, namespace: str, name: str, api: KubeApi | None = None) -> None:
        self.api = api or KubeApi()
        self.path = f"/api/v1/namespaces/{namespace}/configmaps"
        self.namespace, self.name = namespace, name
        self.version: str | None = None

    def load(self) -> dict[str, Any] | None:
        obj = self.api.call("GET", f"{self.path}/{self.name}")
        if obj is None:
            self.version = None
            return None
        self.version = obj["metadata"].get("resourceVersion")
        try:
            data = json.loads((obj.get("data") or {}).get("state", "null"))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def save(self, record: dict[str, Any]) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/part-of": "ml-endpoints"},
            },
            "data": {"state": json.dumps(record, sort_keys=True)},
        }
        current = self.api.call("GET", f"{self.path}/{self.name}")
        if current is None:
            self.api.call("POST", self.path, body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.api.call("PUT", f"{self.path}/{self.name}", body)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class KubeLease:
    """``coordination.k8s.io/v1`` Lease ``name``: held by this pod while it renews it."""

    def __init__(self, namespace: str, name: str, api: KubeApi | None = None) -> None:
        self.api = api or KubeApi()
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace, self.name = namespace, name
        self.me = os.environ.get("POD_NAME") or socket.gethostname()

    def hold(self) -> bool:
        """Acquire (no holder, expired, or ours) or renew; False when another pod holds it."""
        lease = self.api.call("GET", f"{self.path}/{self.name}")
        spec = {
            "holderIdentity": self.me,
            "leaseDurationSeconds": LEASE_S,
            "renewTime": _now(),
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": spec["renewTime"]},
            }
            try:
                self.api.call("POST", self.path, body)
            except Conflict:
                return False
            return True
        held = lease.get("spec") or {}
        holder = held.get("holderIdentity")
        expired = (
            _parse(held.get("renewTime")) + float(held.get("leaseDurationSeconds") or LEASE_S)
            < datetime.now(UTC).timestamp()
        )
        if holder not in (None, "", self.me) and not expired:
            return False
        if holder != self.me:
            spec["acquireTime"] = spec["renewTime"]
        lease["spec"] = {**held, **spec}
        try:
            self.api.call("PUT", f"{self.path}/{self.name}", lease)
        except Conflict:
            return False
        return True

    def release(self) -> None:
        """Give the lease up (at shutdown) so another replica decides at once."""
        lease = self.api.call("GET", f"{self.path}/{self.name}")
        if lease and (lease.get("spec") or {}).get("holderIdentity") == self.me:
            lease["spec"]["holderIdentity"] = None
            with contextlib.suppress(Conflict):
                self.api.call("PUT", f"{self.path}/{self.name}", lease)
