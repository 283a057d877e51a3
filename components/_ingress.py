"""An optional Ingress in front of the router: the one declaration of `endpoint.ingress`, its
checks, and the networking.k8s.io/v1 Ingress it becomes.

`IngressSettings` is used as is by the stack config (`endpoint.ingress`) and by
`RouterSettings.ingress`, so rules and messages agree in both layers. The controller terminates
TLS with the endpoint's own TLS Secret (generated, the user's, or cert-manager's; its
certificate then also names `host`) and re-encrypts to the router's HTTPS Service port: keys
and tokens are never in clear text on the network, inside the cluster either.

A Gateway API route is not offered: terminating at a Gateway needs a listener on a Gateway the
cluster's operator usually owns (in another namespace, with a ReferenceGrant for the Secret), and
re-encrypting to the router needs BackendTLSPolicy; neither is small to get right from here.
"""

from __future__ import annotations

import ipaddress
import re

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict, field_validator

from scoring.router.config import RouterLimits

#: A DNS-1123 subdomain: what Kubernetes accepts for an Ingress host and an IngressClass name.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_SUBDOMAIN = 253
#: The name part of an annotation key (after an optional `prefix/`).
_KEY_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")

#: ingress-nginx annotations every endpoint Ingress carries (`annotations` are merged over them).
BACKEND_PROTOCOL = "nginx.ingress.kubernetes.io/backend-protocol"
PROXY_BODY_SIZE = "nginx.ingress.kubernetes.io/proxy-body-size"


class IngressSettings(BaseModel):
    """Clients reach the router through the cluster's ingress controller at `https://<host>`."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    class_name: str
    """The IngressClass of the controller that serves it (e.g. `nginx`)."""
    host: str
    """The public host name clients use; `scoring_uri` becomes `https://<host>/score`."""
    annotations: dict[str, str] = {}
    """Annotations of the Ingress, merged over the defaults (`default_annotations`)."""

    @field_validator("class_name")
    @classmethod
    def _class_name(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty: name the IngressClass of your controller")
        if len(value) > _MAX_SUBDOMAIN or not _SUBDOMAIN.fullmatch(value):
            raise ValueError(
                "is not a valid IngressClass name (lowercase letters, digits, '-' and '.')"
            )
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            pass
        else:
            raise ValueError("is an IP address; an Ingress routes a DNS name (give one)")
        if value.startswith("*."):
            raise ValueError("is a wildcard; give the one name clients use")
        labels = value.split(".")
        if (
            len(value) > _MAX_SUBDOMAIN
            or not _SUBDOMAIN.fullmatch(value)
            or any(len(label) > 63 for label in labels)
        ):
            raise ValueError(
                "is not a valid DNS name (lowercase letters, digits and '-', labels of at most "
                "63 chars separated by '.')"
            )
        return value

    @field_validator("annotations")
    @classmethod
    def _annotation_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [key for key in value if not _annotation_key_ok(key)]
        if bad:
            raise ValueError(
                f"{', '.join(repr(k) for k in bad)}: not a valid annotation key "
                "([prefix/]name, name <= 63 chars of letters, digits, '-', '_', '.')"
            )
        return value


def _annotation_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > _MAX_SUBDOMAIN or not _SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_KEY_NAME.fullmatch(name))


def default_annotations(limits: RouterLimits) -> dict[str, str]:
    """What ingress-nginx must know to front the router: it speaks HTTPS, and takes bodies as
    large as the router does (the controller's own default, 1 MiB, would answer 413 first)."""
    return {BACKEND_PROTOCOL: "HTTPS", PROXY_BODY_SIZE: str(limits.max_body_bytes)}


def declare(
    parent: pulumi.Resource,
    child: str,
    object_name: str,
    namespace: str,
    labels: dict[str, str],
    settings: IngressSettings,
    limits: RouterLimits,
    service_port: str,
    tls_secret: str,
    depends_on: list[pulumi.Resource],
) -> k8s.networking.v1.Ingress:
    """The Ingress: every path of `host` to the router Service's HTTPS port, TLS with the
    endpoint's Secret."""
    return k8s.networking.v1.Ingress(
        child,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=object_name,
            namespace=namespace,
            labels=labels,
            annotations={**default_annotations(limits), **settings.annotations},
        ),
        spec=k8s.networking.v1.IngressSpecArgs(
            ingress_class_name=settings.class_name,
            tls=[k8s.networking.v1.IngressTLSArgs(hosts=[settings.host], secret_name=tls_secret)],
            rules=[
                k8s.networking.v1.IngressRuleArgs(
                    host=settings.host,
                    http=k8s.networking.v1.HTTPIngressRuleValueArgs(
                        paths=[
                            k8s.networking.v1.HTTPIngressPathArgs(
                                path="/",
                                path_type="Prefix",
                                backend=k8s.networking.v1.IngressBackendArgs(
                                    service=k8s.networking.v1.IngressServiceBackendArgs(
                                        name=object_name,
                                        port=k8s.networking.v1.ServiceBackendPortArgs(
                                            name=service_port
                                        ),
                                    )
                                ),
                            )
                        ]
                    ),
                )
            ],
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
    )
