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


INTERNAL_DIR = "/var/run/secrets/ml-endpoints-internal"
"""Where router and scoring pods mount the endpoint's internal credential Secret."""
INTERNAL_FILE = "credential"
TLS_DIR = "/etc/ml-endpoints/tls"
"""Where the router mounts its kubernetes.io/tls Secret (tls.crt, tls.key)."""
ROUTER_METRICS_PORT = 9090
"""The router's /metrics port: declared on the pod, never on the public Service."""


def internal_secret(endpoint: str) -> str:
    """Kubernetes name of the endpoint's internal credential Secret."""
    return f"{endpoint}-internal"


def tls_secret(endpoint: str) -> str:
    """Kubernetes name of the router's TLS Secret when the stack makes it."""
    return f"{router_object(endpoint)}-tls"


def env_secret(endpoint: str, deployment: str) -> str:
    """Kubernetes name of a deployment's secret environment variables."""
    return f"{deployment_object(endpoint, deployment)}-env"


def router_dns_names(endpoint: str, namespace: str) -> list[str]:
    """Every name the router's Service answers to inside the cluster."""
    svc = router_object(endpoint)
    return [
        svc,
        f"{svc}.{namespace}",
        f"{svc}.{namespace}.svc",
        f"{svc}.{namespace}.svc.cluster.local",
    ]


def collection_secret(endpoint: str, deployment: str) -> str:
    """Kubernetes name of a deployment's S3 keys for shipping collected data."""
    return f"{deployment_object(endpoint, deployment)}-collection-s3"


def collection_claim(endpoint: str, deployment: str) -> str:
    """Kubernetes name of a deployment's PersistentVolumeClaim for collected data."""
    return f"{deployment_object(endpoint, deployment)}-collected"
