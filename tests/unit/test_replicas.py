"""`ml-endpoints status`'s replica lines from kubectl's Deployment and HPA objects."""

from __future__ import annotations

from typing import Any

from mlendpoints import replicas

LABEL = "mlendpoints/deployment"


def deployment(name: str, spec: int, ready: int) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"labels": {LABEL: name}},
        "spec": {"replicas": spec},
        "status": {"readyReplicas": ready},
    }


HPA = {
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"labels": {LABEL: "blue"}},
    "spec": {
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"averageUtilization": 70}}}
        ],
    },
    "status": {
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "currentMetrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "current": {"averageUtilization": 140}},
            }
        ],
        "conditions": [
            {
                "type": "AbleToScale",
                "status": "True",
                "reason": "SucceededRescale",
                "message": "the HPA controller was able to update the target scale to 3",
            },
            {
                "type": "ScalingActive",
                "status": "True",
                "reason": "ValidMetricFound",
                "message": "ok",
            },
            {
                "type": "ScalingLimited",
                "status": "False",
                "reason": "DesiredWithinRange",
                "message": "in range",
            },
        ],
    },
}


def test_autoscaled_and_fixed_deployments() -> None:
    items = [deployment("blue", 3, 2), HPA, deployment("green", 1, 1), {"kind": "Service"}]
    state = replicas.summarize(items, LABEL)
    assert set(state) == {"blue", "green"}
    assert state["green"] == {"replicas": 1, "ready": 1, "autoscaler": None}
    assert replicas.line(state["green"]) == "1/1 ready, fixed"
    assert replicas.line(state["blue"]) == (
        "2/3 ready, autoscaled 1..3 at 70% CPU (now 140%), desired 3: SucceededRescale: "
        "the HPA controller was able to update the target scale to 3"
    )


def test_the_limiting_or_failing_condition_is_the_reason() -> None:
    hpa = {**HPA, "status": {**HPA["status"], "currentMetrics": None}}
    hpa["status"]["conditions"] = [
        *HPA["status"]["conditions"][:1],
        {
            "type": "ScalingActive",
            "status": "False",
            "reason": "FailedGetResourceMetric",
            "message": "no metrics returned from resource metrics API",
        },
    ]
    state = replicas.summarize([deployment("blue", 1, 1), hpa], LABEL)
    assert replicas.line(state["blue"]) == (
        "1/1 ready, autoscaled 1..3 at 70% CPU (now -), desired 3: FailedGetResourceMetric: "
        "no metrics returned from resource metrics API"
    )
