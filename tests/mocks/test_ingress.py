"""Issue 13, `endpoint.ingress` under mocks: the Ingress in front of the router, TLS with the
endpoint's Secret, outputs and certificate naming its host, and nothing of it when unset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra import config as cfgmod
from infra import program
from scoring.router.config import RouterLimits
from tests.mocks.test_components import run_stack
from tests.support.pulumi_mocks import Recorder, install, stack_raw

pytestmark = pytest.mark.components

INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
CERTIFICATE = "kubernetes:cert-manager.io/v1:Certificate"
DYNAMIC = "pulumi-python:dynamic:Resource"
HOST = "scoring.example.com"


def with_ingress(assets: dict[str, Path], **ingress: Any) -> dict[str, Any]:
    raw = stack_raw(assets)
    raw["endpoint"]["ingress"] = {"class_name": "nginx", "host": HOST, **ingress}
    return raw


def the_ingress(rec: Recorder) -> Any:
    [ingress] = rec.of_type(INGRESS)
    return ingress


def test_ingress_routes_the_host_to_the_router_https_port(assets: dict[str, Path]) -> None:
    rec, _ = run_stack(
        with_ingress(
            assets,
            annotations={
                "nginx.ingress.kubernetes.io/proxy-read-timeout": "300",
                "nginx.ingress.kubernetes.io/proxy-body-size": "50m",
            },
        )
    )
    ingress = the_ingress(rec)
    assert ingress.name == "diabetes-ingress"
    router = rec.one("kubernetes:apps/v1:Deployment", "diabetes-router")
    volumes = {v["name"]: v for v in router.inputs["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "diabetes-router-tls"
    assert ingress.parent == rec.one("mlendpoints:index:OnlineEndpoint", "diabetes").urn
    meta, spec = ingress.inputs["metadata"], ingress.inputs["spec"]
    assert (meta["name"], meta["namespace"]) == ("diabetes-router", "mlns")
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": [HOST], "secretName": "diabetes-router-tls"}]
    [rule] = spec["rules"]
    assert rule["host"] == HOST
    assert rule["http"]["paths"] == [
        {
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": "diabetes-router", "port": {"name": "https"}}},
        }
    ]
    # The backend is the router Service, on the port it serves HTTPS on.
    service = rec.one(SERVICE, "diabetes-router-service")
    [port] = service.inputs["spec"]["ports"]
    assert (port["name"], port["port"]) == ("https", 443)
    assert meta["name"] == service.inputs["metadata"]["name"]
    # The user's annotations are merged over the defaults (and win on the same key).
    assert meta["annotations"] == {
        "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
        "nginx.ingress.kubernetes.io/proxy-body-size": "50m",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "300",
    }
    # Created once the Service and the TLS Secret it names exist.
    assert service.urn in ingress.dependencies
    assert rec.one(SECRET, "diabetes-tls").urn in ingress.dependencies


def test_default_annotations_say_https_and_take_the_routers_body_limit(
    assets: dict[str, Path],
) -> None:
    raw = with_ingress(assets)
    rec, _ = run_stack(raw)
    assert the_ingress(rec).inputs["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
        "nginx.ingress.kubernetes.io/proxy-body-size": str(RouterLimits().max_body_bytes),
    }
    raw["endpoint"]["router"]["max_body_bytes"] = 123_456
    rec, _ = run_stack(raw)
    annotations = the_ingress(rec).inputs["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "123456"


def test_outputs_use_the_host(assets: dict[str, Path]) -> None:
    _, outputs = run_stack(with_ingress(assets))
    assert outputs["scoring_uri"] == f"https://{HOST}/score"
    assert outputs["swagger_uri"] == f"https://{HOST}/swagger.json"


def test_generated_certificate_names_the_host(assets: dict[str, Path]) -> None:
    raw = with_ingress(assets)
    raw["endpoint"]["tls"] = {"dns_names": ["other.example.com"]}
    rec, _ = run_stack(raw)
    names = rec.one(DYNAMIC, "diabetes-certificate").inputs["dns_names"]
    assert HOST in names and "other.example.com" in names
    # The router's own names stay: the controller re-encrypts to the Service.
    assert "diabetes-router.mlns.svc" in names


def test_cert_manager_certificate_names_the_host(assets: dict[str, Path]) -> None:
    raw = with_ingress(assets)
    raw["endpoint"]["tls"] = {"issuer": "letsencrypt", "issuer_kind": "ClusterIssuer"}
    rec, _ = run_stack(raw)
    [cert] = rec.of_type(CERTIFICATE)
    assert HOST in cert.inputs["spec"]["dnsNames"]
    ingress = the_ingress(rec)
    assert ingress.inputs["spec"]["tls"][0]["secretName"] == cert.inputs["spec"]["secretName"]
    assert cert.urn in ingress.dependencies


def test_own_tls_secret_is_the_ingress_secret(assets: dict[str, Path]) -> None:
    raw = with_ingress(assets)
    raw["endpoint"]["tls"] = {"secret_name": "my-company-cert"}
    rec, outputs = run_stack(raw)
    assert the_ingress(rec).inputs["spec"]["tls"] == [
        {"hosts": [HOST], "secretName": "my-company-cert"}
    ]
    # The router serves the same Secret behind the controller.
    router = rec.one("kubernetes:apps/v1:Deployment", "diabetes-router")
    volumes = {v["name"]: v for v in router.inputs["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "my-company-cert"
    assert outputs["scoring_uri"] == f"https://{HOST}/score"


def test_no_ingress_when_unset(assets: dict[str, Path]) -> None:
    rec, outputs = run_stack(stack_raw(assets))
    assert not rec.of_type(INGRESS)
    assert outputs["scoring_uri"] == "https://127.0.0.1:30080/score"
    assert HOST not in rec.one(DYNAMIC, "diabetes-certificate").inputs["dns_names"]


def test_ingress_without_tls_is_refused(assets: dict[str, Path]) -> None:
    raw = with_ingress(assets)
    raw["endpoint"]["tls"] = {"enabled": False}
    rec = install()

    @pulumi.runtime.test
    def go() -> Any:
        return program.build(cfgmod.parse(raw)).traffic

    with pytest.raises(ValueError, match=r"^endpoint\.ingress: needs endpoint\.tls\.enabled"):
        go()
    assert not rec.of_type(INGRESS)


def test_rollout_verdict_asks_through_the_ingress(assets: dict[str, Path]) -> None:
    """With gates, `up` waits for the router's verdict, asked where clients reach it: the
    host, once the Ingress exists."""
    raw = with_ingress(assets)
    raw["endpoint"]["traffic"] = {"blue": 0, "green": 100}
    raw["endpoint"]["rollout"] = {"steps": [5, 100], "bake_s": 30, "gates": {"min_requests": 10}}
    rec, _ = run_stack(raw, ({"blue": 100, "green": 0}, None))
    verdict = rec.one(DYNAMIC, "diabetes-rollout")
    assert verdict.inputs["base_url"] == f"https://{HOST}"
    assert the_ingress(rec).urn in verdict.dependencies
