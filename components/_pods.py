"""Pod settings shared by the scoring and router Deployments: drain timings and the locked-down
security contexts (non-root, read-only root, no capabilities, no service-account token)."""

from __future__ import annotations

import pulumi_kubernetes as k8s

# kube-proxy and the router's pools can take a few seconds to stop sending new connections to
# a terminating pod (measured here: up to ~5 s). The pod keeps serving that long before it
# gets SIGTERM, so a rollout or scale-down drops no request. The `sleep` action needs no
# binary in the image.
PRE_STOP_SLEEP_S = 6

# Room for the pre-stop wait plus the drain of in-flight requests after SIGTERM.
TERMINATION_GRACE_S = 30


def drain_lifecycle() -> k8s.core.v1.LifecycleArgs:
    """A pre-stop wait that lets endpoints drop the pod before it stops accepting."""
    return k8s.core.v1.LifecycleArgs(
        pre_stop=k8s.core.v1.LifecycleHandlerArgs(
            sleep=k8s.core.v1.SleepActionArgs(seconds=PRE_STOP_SLEEP_S)
        )
    )


# A fixed non-root identity for every pod: the images install into /opt/venv and
# /var/azureml-app readable by all, so any uid works; a fixed one keeps emptyDir ownership
# (fsGroup) and log lines predictable.
RUN_AS = 10001

# Where scratch writes go on a read-only root filesystem: /tmp (Python's tempfile, the scoring
# server's metrics snapshots when /dev/shm is not writable) and the data-collection spool.
TMP_DIR = "/tmp"


def pod_security() -> k8s.core.v1.PodSecurityContextArgs:
    """Non-root user and group, group-owned volumes, the runtime's default seccomp profile."""
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=RUN_AS,
        run_as_group=RUN_AS,
        fs_group=RUN_AS,
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def container_security() -> k8s.core.v1.SecurityContextArgs:
    """Read-only root, no privilege escalation, no capabilities: user code runs in a box."""
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        privileged=False,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def scratch_volume(name: str, size: str = "256Mi") -> k8s.core.v1.VolumeArgs:
    """A writable emptyDir (bounded) for a path on the read-only root filesystem."""
    return k8s.core.v1.VolumeArgs(
        name=name, empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit=size)
    )


def secret_volume(name: str, secret_name: str) -> k8s.core.v1.VolumeArgs:
    """A Secret as read-only files, readable by the pod's group only (fsGroup)."""
    return k8s.core.v1.VolumeArgs(
        name=name,
        secret=k8s.core.v1.SecretVolumeSourceArgs(secret_name=secret_name, default_mode=0o440),
    )
