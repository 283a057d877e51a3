"""Names of Pulumi children and Kubernetes objects, derived in one place.

Kubernetes objects get fixed names (not Pulumi auto-names): Services must be reachable by stable DNS
names from the router config, and ConfigMap/Secret are updated in place under the same name.
"""

from __future__ import annotations

SCORING_PORT = 5001
ROUTER_PORT = 8080
SECRETS_DIR = "/var/run/secrets/ml-endpoints"
CONFIG_DIR = "/etc/ml-endpoints"
CONFIG_FILE = "router.json"


def child(component_name: str, suffix: str) -> str:
    """Pulumi logical name of a component's child."""
    return f"{component_name}-{suffix}"


def deployment_object(endpoint: str, deployment: str) -> str:
    """Kubernetes name of a deployment's Deployment and Service: `{endpoint}-{deployment}`."""
    return f"{endpoint}-{deployment}"


def router_object(endpoint: str) -> str:
    """Kubernetes name of the endpoint's router Deployment, Service, ConfigMap and Secret."""
    return f"{endpoint}-router"


def service_url(endpoint: str, deployment: str, namespace: str) -> str:
    """In-cluster URL the router uses to reach a deployment."""
    host = f"{deployment_object(endpoint, deployment)}.{namespace}.svc"
    return f"http://{host}:{SCORING_PORT}"
