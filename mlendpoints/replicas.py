"""Replica counts and the autoscaler's view of each deployment, for `ml-endpoints status`.

Read with one `kubectl get deployments,horizontalpodautoscalers` in the endpoint's namespace;
`summarize` turns that list into one line per deployment, e.g.
`2/3 ready, autoscaled 1..5 at 70% CPU (now 112%), desired 3: ScaleUpLimit ...`.
"""

from __future__ import annotations

from typing import Any


def summarize(items: list[dict[str, Any]], label: str) -> dict[str, dict[str, Any]]:
    """Deployment name (the value of LABEL, `components._labels.DEPLOYMENT`) -> {replicas,
    ready, autoscaler: {...} | None}, from kubectl's items."""
    out: dict[str, dict[str, Any]] = {}
    hpas: dict[str, dict[str, Any]] = {}
    for item in items:
        name = (item.get("metadata", {}).get("labels") or {}).get(label)
        if name is None:
            continue
        if item.get("kind") == "Deployment":
            status = item.get("status") or {}
            out[name] = {
                "replicas": (item.get("spec") or {}).get("replicas", 0),
                "ready": status.get("readyReplicas", 0),
                "autoscaler": None,
            }
        elif item.get("kind") == "HorizontalPodAutoscaler":
            hpas[name] = item
    for name, hpa in hpas.items():
        if name in out:
            out[name]["autoscaler"] = _autoscaler(hpa)
    return out


def _autoscaler(hpa: dict[str, Any]) -> dict[str, Any]:
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    target = None
    for metric in spec.get("metrics") or []:
        target = ((metric.get("resource") or {}).get("target") or {}).get("averageUtilization")
    current = None
    for metric in status.get("currentMetrics") or []:
        current = ((metric.get("resource") or {}).get("current") or {}).get("averageUtilization")
    # The condition that explains the count: limited (at min/max), else why it can(not) scale.
    reason = ""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    for kind in ("ScalingLimited", "ScalingActive", "AbleToScale"):
        cond = conditions.get(kind)
        if cond is None:
            continue
        limiting = kind == "ScalingLimited" and cond.get("status") == "True"
        failing = kind != "ScalingLimited" and cond.get("status") != "True"
        if limiting or failing or kind == "AbleToScale":
            reason = f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
            break
    return {
        "min": spec.get("minReplicas", 1),
        "max": spec.get("maxReplicas"),
        "target_cpu_percent": target,
        "current_cpu_percent": current,
        "current": status.get("currentReplicas"),
        "desired": status.get("desiredReplicas"),
        "reason": reason,
    }


def line(state: dict[str, Any]) -> str:
    """One readable line for a deployment's entry of `summarize`."""
    text = f"{state['ready']}/{state['replicas']} ready"
    hpa = state.get("autoscaler")
    if hpa is None:
        return text + ", fixed"
    now = hpa["current_cpu_percent"]
    text += (
        f", autoscaled {hpa['min']}..{hpa['max']} at {hpa['target_cpu_percent']}% CPU"
        f" (now {'-' if now is None else f'{now}%'}), desired {hpa['desired']}"
    )
    return text + (f": {hpa['reason']}" if hpa["reason"] else "")
