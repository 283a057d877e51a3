"""Labels: the selector set never changes after creation; everything else is informational.

Selectors are computed once per object and used for the Deployment selector, its pod template and
the Service, so they cannot drift apart. Image tags, model versions and hashes go into annotations
or non-selector labels only: putting them in a selector would force a replacement.
"""

from __future__ import annotations

NAME = "app.kubernetes.io/name"
ENDPOINT = "mlendpoints/endpoint"
DEPLOYMENT = "mlendpoints/deployment"
SCORING = "ml-endpoints-scoring"
ROUTER = "ml-endpoints-router"


def scoring_selector(endpoint: str, deployment: str) -> dict[str, str]:
    """Selector for one deployment's pods (fixed at creation)."""
    return {NAME: SCORING, ENDPOINT: endpoint, DEPLOYMENT: deployment}


def router_selector(endpoint: str) -> dict[str, str]:
    """Selector for the endpoint's router pods (fixed at creation)."""
    return {NAME: ROUTER, ENDPOINT: endpoint}


def as_selector(labels: dict[str, str]) -> str:
    """A label selector in kubectl's `-l`/`--selector` form (`k=v,k2=v2`)."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def common(component: str) -> dict[str, str]:
    """Non-selector labels every object carries."""
    return {
        "app.kubernetes.io/part-of": "ml-endpoints",
        "app.kubernetes.io/managed-by": "pulumi",
        "app.kubernetes.io/component": component,
    }
