"""Pod settings shared by the scoring and router Deployments."""

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
