"""Where a deployment's collected data goes: the durable sink behind the pod's spool.

The server writes collected records to a spool (an ``emptyDir``, so they survive a container
restart) and ships closed files to ``data_collection.destination`` (Azure-style key; the
server's setting ``collect_destination``, scoring/server/shipper.py). The components turn that
one setting into what the pod needs:

- ``s3://bucket/prefix``: the S3 connection of the stack (``CollectionStorage.s3``); its keys go
  to a Kubernetes Secret read by ``secretKeyRef`` (never in the pod spec), the endpoint URL and
  region are plain env (boto3 reads ``AWS_ENDPOINT_URL``/``AWS_REGION``); the environment image
  gets the ``s3`` extra (boto3).
- ``pvc``: a PersistentVolumeClaim per deployment (``CollectionStorage.pvc``: size, class,
  access mode), mounted at ``DEST_DIR``, which becomes the destination folder. It is kept when
  the deployment is removed (``retain_on_delete``): removing a deployment never deletes data.
- an absolute path: a folder the image or the user's own volume provides (used as is).
- empty: no shipping; records stay in the pod's spool (lost with the pod; preview warns).

With a destination the pod's termination grace period covers the pre-stop wait, the drain of
in-flight requests and the final shipping pass (``grace_seconds``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from components import _build, _naming, _pods
from scoring.server.config import DataCollection, MiB, Settings

DEST_DIR = f"{_build.APP_ROOT}/collected"
"""Where a ``pvc`` destination is mounted (the server ships into it)."""
PVC = "pvc"
"""The ``collect_destination`` value that asks for a PersistentVolumeClaim."""
SERVER_EXTRAS_ARG = "SERVER_EXTRAS"
"""The environment image's build arg naming the server's extras (``s3`` adds boto3)."""
S3_KEY_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_PLAIN_VARS = ("AWS_ENDPOINT_URL", "AWS_REGION")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
SHIP_BUDGET_S = int(Settings.model_fields["graceful_timeout_s"].default)
"""The supervisor's final shipping pass may take ``graceful_timeout_s`` (default 30 s)."""


class S3Connection(BaseModel):
    """How pods and the CLI reach the S3 API (any: AWS, MinIO, versitygw, GCS interop)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = None
    """S3 API URL as seen from the pods (unset: AWS's own endpoints)."""
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    """Set with `pulumi config set --secret`; unset (with the secret key) = the pod's own
    credentials (an IAM role for service accounts, ...)."""
    secret_access_key: SecretStr | None = None


class PvcSettings(BaseModel):
    """The PersistentVolumeClaim a ``pvc`` destination gets, one per deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: str = Field(default="1Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$")
    storage_class: str | None = None
    """Unset: the cluster's default StorageClass (local-path on the local cluster)."""
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = "ReadWriteOnce"
    """ReadWriteOnce serves every pod of a one-node cluster; pods spread over several nodes
    need a ReadWriteMany class (NFS, CephFS, a cloud file store)."""


class CollectionStorage(BaseModel):
    """The stack's collection sinks (stack config ``collection``; `OnlineDeploymentArgs`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3: S3Connection = S3Connection()
    pvc: PvcSettings = PvcSettings()


def kind(settings: DataCollection) -> Literal["s3", "pvc", "folder", "none"]:
    """Which sink ``collect_destination`` names."""
    dest = settings.collect_destination
    if not dest:
        return "none"
    if dest.startswith("s3://"):
        return "s3"
    return "pvc" if dest == PVC else "folder"


def check(where: str, settings: DataCollection, storage: CollectionStorage) -> list[str]:
    """The destination's problems, one line each, naming the key and the value."""
    key = f"{where} data_collection.destination"
    dest = settings.collect_destination
    found = kind(settings)
    problems = []
    if found == "s3":
        bucket = dest.removeprefix("s3://").split("/", 1)[0]
        if not _BUCKET.fullmatch(bucket):
            problems.append(
                f"{key}: {dest!r} does not name a bucket (s3://BUCKET/PREFIX; 3-63 of a-z, 0-9, "
                "'.', '-')"
            )
        keys = (storage.s3.access_key_id, storage.s3.secret_access_key)
        if (keys[0] is None) != (keys[1] is None):
            problems.append(
                "collection.s3: set both access_key_id and secret_access_key, or neither"
            )
    elif found == "folder" and not dest.startswith("/"):
        problems.append(
            f"{key}: {dest!r} is not accepted; use s3://BUCKET/PREFIX, 'pvc', or an absolute "
            "folder the image provides"
        )
    return problems


def shipped_to(settings: DataCollection) -> str:
    """The destination the server is given (a ``pvc`` is its mount folder)."""
    return DEST_DIR if kind(settings) == "pvc" else settings.collect_destination


def grace_seconds(settings: DataCollection) -> int:
    """The pod's termination grace: pre-stop wait + drain (+5 s for stuck workers) + the
    final shipping pass when there is a destination."""
    if kind(settings) == "none":
        return _pods.TERMINATION_GRACE_S
    return _pods.PRE_STOP_SLEEP_S + _pods.TERMINATION_GRACE_S + 5 + SHIP_BUDGET_S


def spool_volume_size(settings: DataCollection) -> str:
    """The spool emptyDir's size limit: the spool's own limit plus room for the files written
    between two shipper passes (past the emptyDir's limit the kubelet evicts the pod)."""
    mib = -(-settings.collect_spool_max_bytes // MiB) + 256
    return f"{mib}Mi"


def summary(
    deployment: str, endpoint: str, settings: DataCollection, storage: CollectionStorage
) -> str:
    """One preview line: what is collected and where it goes."""
    if not settings.collect and kind(settings) == "none":
        return f"collect {deployment}: off"
    which = settings.collect_collections
    what = (
        f"{'model_inputs/model_outputs' if which == 'both' else which} at "
        f"{settings.collect_sampling_rate:g} sampling"
        if settings.collect
        else "scripts' Collector() only (automatic collection off)"
    )
    found = kind(settings)
    layout = f"{endpoint}/{deployment}/<collection>/yyyy/MM/dd/HH/"
    if found == "s3":
        at = f" at {storage.s3.endpoint_url}" if storage.s3.endpoint_url else ""
        where = f"{settings.collect_destination.rstrip('/')}/{layout}{at}"
    elif found == "pvc":
        pvc = storage.pvc
        where = (
            f"PersistentVolumeClaim {_naming.collection_claim(endpoint, deployment)} ({pvc.size}, "
            f"{pvc.storage_class or 'default class'}) {layout}"
        )
    elif found == "folder":
        where = f"folder {settings.collect_destination}/{layout}"
    else:
        where = "the pod's spool only: LOST when the pod goes (set destination)"
    return f"collect {deployment}: {what} -> {where}"
