"""Cluster checks of issue 13 shared by the end-to-end tests: a pod that bypasses the router,
secrets read from the cluster, and a scan of everything readable for secret values, down to
every layer of every image the pods run."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
import zlib
from collections.abc import Iterable, Iterator
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


MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
CHUNK = 1 << 20


def _registry_get(registry: str, path: str, accept: str = "*/*") -> Any:
    """An open response from the image registry's HTTP API (the local one needs no auth)."""
    request = urllib.request.Request(f"http://{registry}/v2/{path}", headers={"Accept": accept})
    return urllib.request.urlopen(request, timeout=60)


def _image_blobs(image: str) -> Iterator[tuple[str, str, str, str]]:
    """(registry, repository, digest, media type) of an image's config and layers, following
    an index (BuildKit pushes those) to each of its manifests."""
    registry, _, rest = image.partition("/")
    if "@" in rest:  # repository[:tag]@digest: the digest is what the cluster pulls
        repository, _, reference = rest.partition("@")
        repository = repository.split(":")[0]
    else:
        repository, _, reference = rest.rpartition(":")
    pending = [reference]
    while pending:
        path = f"{repository}/manifests/{pending.pop()}"
        with _registry_get(registry, path, MANIFEST_TYPES) as r:
            manifest = json.load(r)
        pending.extend(m["digest"] for m in manifest.get("manifests", []))
        if "config" in manifest:
            config = manifest["config"]
            yield registry, repository, config["digest"], config["mediaType"]
        for layer in manifest.get("layers", []):
            yield registry, repository, layer["digest"], layer["mediaType"]


def _blob_text(registry: str, repository: str, digest: str, media_type: str) -> Iterator[bytes]:
    """A blob's bytes in chunks, gunzipped when the layer is gzip-compressed."""
    gzipped = media_type.endswith("gzip")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with _registry_get(registry, f"{repository}/blobs/{digest}") as r:
        while chunk := r.read(CHUNK):
            yield inflate.decompress(chunk) if gzipped else chunk
    if gzipped:
        yield inflate.flush()


def scan_images_for_secrets(images: Iterable[str], secrets: list[str]) -> int:
    """Assert no secret value appears in any layer or config of the images (pulled from the
    registry as the cluster pulls them); returns the number of distinct blobs read, so a
    caller can tell the scan read something."""
    assert all(len(s) >= 16 for s in secrets), "a scan for short strings proves nothing"
    needles = [s.encode() for s in secrets]
    overlap = max(len(n) for n in needles) - 1
    seen: set[str] = set()
    for image in sorted(set(images)):
        for registry, repository, digest, media_type in _image_blobs(image):
            if digest in seen:
                continue
            if "zstd" in media_type:
                raise AssertionError(f"{image}: cannot scan zstd layer {digest} ({media_type})")
            seen.add(digest)
            tail = b""
            for chunk in _blob_text(registry, repository, digest, media_type):
                window = tail + chunk
                for i, needle in enumerate(needles):
                    assert needle not in window, f"secret #{i} appears in {image} blob {digest}"
                tail = window[-overlap:]
    return len(seen)


def pod_images(namespace: str) -> list[str]:
    """Every container image (init containers too) the namespace's pods run."""
    images: list[str] = []
    for pod in kubectl_json("-n", namespace, "get", "pods")["items"]:
        spec = pod["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            images.append(container["image"])
    return images
