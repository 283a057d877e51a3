"""Azure-style `scale_settings`: the one declaration, its rules, and the objects they become.

`ScaleSettings` is used as is by the stack config (`deployments[i].scale_settings`) and by
`OnlineDeploymentArgs.scale_settings`, so defaults, bounds and messages agree in both layers.
A `target_utilization` deployment gets an autoscaling/v2 HorizontalPodAutoscaler on CPU
utilisation; every deployment gets a PodDisruptionBudget and a preferred spread across nodes.

Mapping of Azure's fields (documented in docs/components.md, "Autoscaling"):

- `min_instances` / `max_instances` → the HPA's `minReplicas` / `maxReplicas`.
- `target_utilization_percentage` → the CPU `averageUtilization` target (percent of the pod's
  CPU *request*, so a CPU request is required).
- `polling_interval` → the `periodSeconds` of the HPA's scale-up and scale-down policies (how
  much may change per interval: up to +100 % or +4 pods, down to -100 %). The HPA controller's
  own sync period (15 s by default) is cluster-wide and cannot be set per HPA; the default
  `polling_interval: 15` reproduces Kubernetes' default behaviour.
- `scale_down_delay` → `behavior.scaleDown.stabilizationWindowSeconds`.
- `target_concurrent_requests_per_instance` needs KEDA or prometheus-adapter, which the
  cluster does not run yet: it is refused with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Kubernetes' default HPA sync period (kube-controller-manager --horizontal-pod-autoscaler-sync-
#: period); shown in docs, not settable per HPA.
HPA_SYNC_PERIOD_S = 15


class ScaleSettings(BaseModel):
    """How many replicas a deployment runs: fixed (`default`) or by CPU (`target_utilization`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    type: Literal["default", "target_utilization"] = "default"
    """`default`: `instance_count` replicas, fixed. `target_utilization`: an autoscaler keeps
    between `min_instances` and `max_instances`, aiming at `target_utilization_percentage`."""
    min_instances: int = Field(default=1, ge=1, le=100)
    """Fewest replicas the autoscaler keeps (also the PodDisruptionBudget's minAvailable)."""
    max_instances: int = Field(default=5, ge=1, le=100)
    """Most replicas the autoscaler adds."""
    target_utilization_percentage: int = Field(default=70, ge=1, le=100)
    """Average CPU use, in percent of the pod's CPU request, the autoscaler aims at (1..100)."""
    polling_interval: int = Field(default=HPA_SYNC_PERIOD_S, ge=1, le=1800)
    """Seconds per scaling step: at most +100 % (or +4 pods) up and -100 % down per interval.
    The controller's own check period (15 s) is cluster-wide."""
    scale_down_delay: int = Field(default=300, ge=0, le=3600)
    """Seconds the load must stay low before replicas are removed (stabilisation window)."""
    target_concurrent_requests_per_instance: int | None = None
    """Not supported yet: needs KEDA or prometheus-adapter on the cluster."""

    @field_validator("target_concurrent_requests_per_instance")
    @classmethod
    def _not_yet(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError(
                "not supported yet (it needs KEDA or prometheus-adapter on the cluster); "
                "use target_utilization_percentage"
            )
        return value

    def problems(self, where: str = "scale_settings") -> list[str]:
        """Cross-field problems, each naming its field (empty: usable). Single-field bounds
        are pydantic's, reported with their path by whoever validates the model."""
        if self.min_instances > self.max_instances:
            return [
                f"{where}.min_instances: {self.min_instances} is more than max_instances "
                f"{self.max_instances}"
            ]
        return []

    @property
    def autoscaled(self) -> bool:
        return self.type == "target_utilization"


def check(
    where: str, scale: ScaleSettings, instance_count_set: bool, requests: dict[str, str]
) -> list[str]:
    """Problems between `scale_settings` and the rest of the deployment.

    An autoscaled deployment must not also give a fixed `instance_count` (the autoscaler owns
    the count; `min_instances` is the count it starts from), and its pods need a CPU request:
    utilisation is measured against it.
    """
    out = scale.problems(f"{where}.scale_settings")
    if not scale.autoscaled:
        return out
    if instance_count_set:
        out.append(
            f"{where}.instance_count: a fixed count conflicts with scale_settings.type "
            f"target_utilization; remove it (min_instances is the starting count)"
        )
    if not requests.get("cpu"):
        out.append(
            f"{where}.resources.requests.cpu: required by scale_settings.type "
            f"target_utilization (CPU utilisation is a percentage of the request)"
        )
    return out


def replicas(scale: ScaleSettings, instance_count: int) -> int | None:
    """The Deployment's `spec.replicas`: none when autoscaled, so `pulumi up` never resets
    what the HorizontalPodAutoscaler chose (the field is then owned by the HPA alone)."""
    return None if scale.autoscaled else instance_count


def summary(name: str, scale: ScaleSettings, instance_count: int) -> str:
    """One line for preview, e.g. `blue: 1..5 replicas, target 70% CPU`."""
    if scale.autoscaled:
        return (
            f"{name}: {scale.min_instances}..{scale.max_instances} replicas, target "
            f"{scale.target_utilization_percentage}% CPU, scale-down delay "
            f"{scale.scale_down_delay}s"
        )
    return f"{name}: {instance_count} replica{'s' if instance_count != 1 else ''} (fixed)"


def shift_notes(
    scales: Mapping[str, ScaleSettings],
    before: Mapping[str, int] | None,
    after: Mapping[str, int],
) -> list[str]:
    """Traffic plan lines for each autoscaled deployment whose live share rises.

    Preview cannot know how many replicas run now; an autoscaled deployment that had less
    traffic may well be at its minimum, and capacity follows the new load only after the
    autoscaler's next steps and pod start-up. Empty on the first deployment (no shift).
    """
    if before is None:
        return []
    out = []
    for name, scale in scales.items():
        was, now = before.get(name, 0), after.get(name, 0)
        if not scale.autoscaled or now <= was:
            continue
        out.append(
            f"  {name}: live {was}% -> {now}% onto a deployment that may be at its minimum "
            f"({scale.min_instances} replica{'s' if scale.min_instances != 1 else ''}); the "
            f"autoscaler adds replicas (up to {scale.max_instances}) once CPU passes "
            f"{scale.target_utilization_percentage}%, one step per {scale.polling_interval} s "
            "plus pod start-up: raise min_instances first for a large shift"
        )
    return out


def spread(selector: dict[str, str]) -> list[k8s.core.v1.TopologySpreadConstraintArgs]:
    """Replicas spread across nodes when there are several; one node still schedules them all."""
    return [
        k8s.core.v1.TopologySpreadConstraintArgs(
            max_skew=1,
            topology_key="kubernetes.io/hostname",
            when_unsatisfiable="ScheduleAnyway",
            label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
        )
    ]


def hpa_behavior(scale: ScaleSettings) -> k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs:
    period = scale.polling_interval
    return k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
        scale_up=k8s.autoscaling.v2.HPAScalingRulesArgs(
            stabilization_window_seconds=0,
            select_policy="Max",
            policies=[
                k8s.autoscaling.v2.HPAScalingPolicyArgs(
                    type="Percent", value=100, period_seconds=period
                ),
                k8s.autoscaling.v2.HPAScalingPolicyArgs(
                    type="Pods", value=4, period_seconds=period
                ),
            ],
        ),
        scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(
            stabilization_window_seconds=scale.scale_down_delay,
            select_policy="Max",
            policies=[
                k8s.autoscaling.v2.HPAScalingPolicyArgs(
                    type="Percent", value=100, period_seconds=period
                )
            ],
        ),
    )


def declare(
    parent: pulumi.Resource,
    child: str,
    object_name: str,
    namespace: str,
    labels: dict[str, str],
    selector: dict[str, str],
    scale: ScaleSettings,
    instance_count: int,
) -> None:
    """The HPA (autoscaled only) and the PodDisruptionBudget of one deployment."""
    metadata = k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=namespace, labels=labels)
    opts = pulumi.ResourceOptions(parent=parent)
    if scale.autoscaled:
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{child}-hpa",
            metadata=metadata,
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=object_name
                ),
                min_replicas=scale.min_instances,
                max_replicas=scale.max_instances,
                metrics=[
                    k8s.autoscaling.v2.MetricSpecArgs(
                        type="Resource",
                        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                            name="cpu",
                            target=k8s.autoscaling.v2.MetricTargetArgs(
                                type="Utilization",
                                average_utilization=scale.target_utilization_percentage,
                            ),
                        ),
                    )
                ],
                behavior=hpa_behavior(scale),
            ),
            opts=opts,
        )
    keep = scale.min_instances if scale.autoscaled else min(instance_count, 1)
    if keep < 1:
        return  # instance_count 0: no pod to protect
    k8s.policy.v1.PodDisruptionBudget(
        f"{child}-pdb",
        metadata=metadata,
        spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
            min_available=keep,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
        ),
        opts=opts,
    )
