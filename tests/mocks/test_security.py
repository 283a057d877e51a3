"""Issue 13 under mocks: HTTPS by default, locked-down pods, NetworkPolicy, the internal
credential, secret environment variables, and no secret value anywhere it could be read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
from cryptography import x509
from pulumi.runtime import rpc

from components._certs import _CertificateProvider
from components.online_endpoint import OnlineEndpoint, certificate_names
from infra import config as cfgmod
from infra import program
from tests.support.pulumi_mocks import FAKE_CA, FAKE_KEY, Recorder, install, stack_raw

pytestmark = pytest.mark.components

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
SERVICE = "kubernetes:core/v1:Service"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CERTIFICATE = "kubernetes:cert-manager.io/v1:Certificate"
DYNAMIC = "pulumi-python:dynamic:Resource"
SECRET_ENV_VALUE = "s3cr3t-api-token-value"

OUTPUTS = ("scoring_uri", "swagger_uri", "ca_certificate", "primary_key", "secondary_key")


def build(raw: dict[str, Any]) -> tuple[Recorder, dict[str, Any], dict[str, bool]]:
    """The whole program under mocks: (registrations, output values, output secrecy)."""
    rec = install()
    values: dict[str, Any] = {}
    secret: dict[str, bool] = {}

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        endpoint = program.build(cfgmod.parse(raw))

        async def read() -> None:
            for name in OUTPUTS:
                out = getattr(endpoint, name)
                values[name] = await out.future()
                secret[name] = await out.is_secret()

        return pulumi.Output.from_input(read())

    go()
    return rec, values, secret


def pods(rec: Recorder) -> dict[str, dict[str, Any]]:
    return {d.name: d.inputs["spec"]["template"]["spec"] for d in rec.of_type(DEPLOYMENT)}


def with_secret_env(assets: dict[str, Path]) -> dict[str, Any]:
    raw = stack_raw(assets)
    raw["deployments"][0]["secret_environment_variables"] = {"API_TOKEN": SECRET_ENV_VALUE}
    return raw


def test_every_pod_runs_locked_down(assets: dict[str, Path]) -> None:
    rec, _, _ = build(stack_raw(assets))
    assert set(pods(rec)) == {"blue-deployment", "green-deployment", "diabetes-router"}
    for name, pod in pods(rec).items():
        assert pod["automountServiceAccountToken"] is False, name
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] not in (None, 0), name
        assert ctx["runAsGroup"] == ctx["fsGroup"] == ctx["runAsUser"], name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["privileged"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            # Writes go to emptyDirs: /tmp everywhere, the collection spool in scoring pods.
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], name
            for mount in mounts.values():
                volume = volumes[mount["name"]]
                if "secret" in volume or "configMap" in volume:
                    assert mount.get("readOnly") is True, (name, mount)
    scoring = pods(rec)["blue-deployment"]["containers"][0]
    env = {e["name"]: e.get("value") for e in scoring["env"]}
    spool = env["DATA_COLLECTION_DIR"]
    assert spool in {m["mountPath"] for m in scoring["volumeMounts"]}


def test_router_resources_come_from_the_stack_config(assets: dict[str, Path]) -> None:
    rec, _, _ = build(stack_raw(assets))
    [router] = pods(rec)["diabetes-router"]["containers"]
    assert router["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    raw = stack_raw(assets)
    raw["endpoint"]["router"]["resources"] = {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}
    rec, _, _ = build(raw)
    [router] = pods(rec)["diabetes-router"]["containers"]
    assert router["resources"] == {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}


def test_network_policy_admits_only_the_endpoints_router(assets: dict[str, Path]) -> None:
    rec, _, _ = build(stack_raw(assets))
    policies = {p.inputs["metadata"]["name"]: p.inputs["spec"] for p in rec.of_type(NETPOL)}
    assert set(policies) == {"diabetes-blue", "diabetes-green"}
    blue = policies["diabetes-blue"]
    scoring = rec.one(DEPLOYMENT, "blue-deployment").inputs["spec"]["selector"]
    assert blue["podSelector"] == scoring
    assert blue["policyTypes"] == ["Ingress"]
    router = rec.one(DEPLOYMENT, "diabetes-router").inputs["spec"]["selector"]
    assert blue["ingress"] == [
        {"from": [{"podSelector": router}], "ports": [{"port": 5001, "protocol": "TCP"}]}
    ]


def test_internal_credential_reaches_router_and_scoring_pods_only(
    assets: dict[str, Path],
) -> None:
    rec, _, _ = build(stack_raw(assets))
    secret = rec.one(SECRET, "diabetes-internal")
    assert secret.inputs["metadata"]["name"] == "diabetes-internal"
    assert secret.raw["stringData"][rpc._special_sig_key] == rpc._special_secret_sig
    path = "/var/run/secrets/ml-endpoints-internal/credential"
    for name, pod in pods(rec).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["internal"]["secret"]["secretName"] == "diabetes-internal", name
        assert volumes["internal"]["secret"]["defaultMode"] == 0o440, name
    env = {e["name"]: e.get("value") for e in pods(rec)["blue-deployment"]["containers"][0]["env"]}
    assert env["INTERNAL_CREDENTIAL_FILE"] == path
    config = json.loads(rec.one(CONFIGMAP, "diabetes-router-config").inputs["data"]["router.json"])
    assert config["internal_credential_file"] == path
    # The scoring pods never see the endpoint's keys.
    for name in ("blue-deployment", "green-deployment"):
        assert "diabetes-router-keys" not in json.dumps(pods(rec)[name])
    # Created before the deployments that mount it.
    deps = rec.one(DEPLOYMENT, "blue-deployment").dependencies
    assert secret.urn in deps


def test_secret_environment_variables_by_secret_key_ref(assets: dict[str, Path]) -> None:
    rec, _, _ = build(with_secret_env(assets))
    secret = rec.one(SECRET, "blue-env")
    assert secret.inputs["metadata"]["name"] == "diabetes-blue-env"
    assert secret.inputs["stringData"] == {"API_TOKEN": SECRET_ENV_VALUE}
    assert secret.raw["stringData"][rpc._special_sig_key] == rpc._special_secret_sig
    [container] = pods(rec)["blue-deployment"]["containers"]
    [entry] = [e for e in container["env"] if e["name"] == "API_TOKEN"]
    assert entry == {
        "name": "API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "diabetes-blue-env", "key": "API_TOKEN"}},
    }
    # green declared none: no Secret, no reference.
    assert "API_TOKEN" not in json.dumps(pods(rec)["green-deployment"])
    assert not [r for r in rec.of_type(SECRET) if r.name == "green-env"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("1BAD", "not an environment variable name"),
        ("EXTRA", "also in environment_variables"),
        ("WORKER_COUNT", "the server sets or reads it"),
        ("INTERNAL_CREDENTIAL_FILE", "the server sets or reads it"),
    ],
)
def test_secret_environment_variable_names_are_checked(
    assets: dict[str, Path], name: str, problem: str
) -> None:
    raw = stack_raw(assets)
    raw["deployments"][0]["secret_environment_variables"] = {name: SECRET_ENV_VALUE}
    install()

    @pulumi.runtime.test
    def go() -> Any:
        return program.build(cfgmod.parse(raw)).traffic

    with pytest.raises(ValueError) as info:
        go()
    assert f"deployment 'blue' secret_environment_variables.{name}: {problem}" in str(info.value)
    assert SECRET_ENV_VALUE not in str(info.value)


def test_no_secret_value_in_any_plain_place(assets: dict[str, Path]) -> None:
    """Keys, the internal credential, the TLS private key and secret env values appear only in
    Secrets and the generated resources' own secret state: never in a pod spec, ConfigMap,
    Service, NetworkPolicy or plain output."""
    rec, values, secret = build(with_secret_env(assets))
    for reg in rec.regs:
        if reg.type in (SECRET, DYNAMIC):
            continue
        text = json.dumps(reg.inputs, default=str)
        assert FAKE_KEY not in text and SECRET_ENV_VALUE not in text, (reg.type, reg.name)
    for name in ("scoring_uri", "swagger_uri", "ca_certificate"):
        assert secret[name] is False, name
        assert FAKE_KEY not in str(values[name]), name
    assert secret["primary_key"] and secret["secondary_key"]
    # Every Secret's data travels as a Pulumi secret (encrypted in state).
    for reg in rec.of_type(SECRET):
        assert reg.raw["stringData"][rpc._special_sig_key] == rpc._special_secret_sig, reg.name
    # The signing key stays in the cluster: the endpoint has no such output.
    assert "token_signing_key" not in OnlineEndpoint.__annotations__


def test_https_by_default_with_a_generated_certificate(assets: dict[str, Path]) -> None:
    rec, values, _ = build(stack_raw(assets))
    assert values["scoring_uri"] == "https://127.0.0.1:30080/score"
    assert values["swagger_uri"] == "https://127.0.0.1:30080/swagger.json"
    assert values["ca_certificate"] == FAKE_CA
    cert = rec.one(DYNAMIC, "diabetes-certificate")
    assert cert.secret_outputs == ["private_key"]
    assert cert.inputs["version"] == 1
    assert "diabetes-router.mlns.svc" in cert.inputs["dns_names"]
    assert cert.inputs["ip_addresses"] == ["127.0.0.1"]
    tls = rec.one(SECRET, "diabetes-tls")
    assert tls.inputs["type"] == "kubernetes.io/tls"
    assert tls.inputs["metadata"]["name"] == "diabetes-router-tls"
    assert set(tls.inputs["stringData"]) == {"tls.crt", "tls.key", "ca.crt"}
    [router] = pods(rec)["diabetes-router"]["containers"]
    assert router["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    config = json.loads(rec.one(CONFIGMAP, "diabetes-router-config").inputs["data"]["router.json"])
    assert config["tls"] == {
        "cert_file": "/etc/ml-endpoints/tls/tls.crt",
        "key_file": "/etc/ml-endpoints/tls/tls.key",
    }
    assert not rec.of_type(CERTIFICATE)


def test_tls_version_bump_regenerates_only_the_certificate(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets)
    a = {(r.type, r.name): r.inputs for r in build(raw)[0].regs}
    raw["endpoint"]["tls"] = {"version": 2}
    b = {(r.type, r.name): r.inputs for r in build(raw)[0].regs}
    changed = sorted(k for k in a if a[k] != b[k])
    assert changed == [(DEPLOYMENT, "diabetes-router"), (DYNAMIC, "diabetes-certificate")]


def test_own_tls_secret_is_mounted_and_nothing_generated(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets)
    raw["endpoint"]["tls"] = {"secret_name": "my-company-cert"}
    rec, values, _ = build(raw)
    volumes = {v["name"]: v for v in pods(rec)["diabetes-router"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "my-company-cert"
    assert not [r for r in rec.of_type(DYNAMIC) if r.name == "diabetes-certificate"]
    assert values["ca_certificate"] == ""  # the user's CA: clients trust it already
    assert values["scoring_uri"].startswith("https://")


def test_cert_manager_issuer_renders_a_certificate(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets)
    raw["endpoint"]["tls"] = {"issuer": "letsencrypt", "issuer_kind": "ClusterIssuer"}
    raw["endpoint"]["router"]["public_host"] = "models.example.com"
    rec, values, _ = build(raw)
    [cert] = rec.of_type(CERTIFICATE)
    spec = cert.inputs["spec"]
    assert spec["secretName"] == "diabetes-router-tls"
    assert spec["issuerRef"] == {
        "name": "letsencrypt",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert "models.example.com" in spec["dnsNames"]
    assert "diabetes-router.mlns.svc.cluster.local" in spec["dnsNames"]
    router = rec.one(DEPLOYMENT, "diabetes-router")
    assert cert.urn in router.dependencies
    volumes = {v["name"]: v for v in pods(rec)["diabetes-router"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "diabetes-router-tls"
    assert values["scoring_uri"] == "https://models.example.com:30080/score"


def test_tls_secret_and_issuer_together_are_refused(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets)
    raw["endpoint"]["tls"] = {"secret_name": "a", "issuer": "b"}
    install()

    @pulumi.runtime.test
    def go() -> Any:
        return program.build(cfgmod.parse(raw)).traffic

    with pytest.raises(ValueError, match=r"endpoint\.tls: both secret_name"):
        go()


def test_plain_http_only_when_asked_and_preview_warns(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets)
    raw["endpoint"]["tls"] = {"enabled": False}
    rec, values, _ = build(raw)
    assert values["scoring_uri"] == "http://127.0.0.1:30080/score"
    assert values["ca_certificate"] == ""
    assert any("TLS is off" in line for line in rec.logs), rec.logs
    svc = rec.one(SERVICE, "diabetes-router-service")
    assert svc.inputs["spec"]["ports"][0]["port"] == 80
    config = json.loads(rec.one(CONFIGMAP, "diabetes-router-config").inputs["data"]["router.json"])
    assert config["tls"] is None
    assert not [r for r in rec.of_type(SECRET) if r.name == "diabetes-tls"]


def test_generated_certificate_covers_the_names_clients_use() -> None:
    dns, ips = certificate_names("diabetes", "ns", "10.0.0.5", ["models.example.com"])
    created = _CertificateProvider().create(
        {
            "common_name": "diabetes-router",
            "version": 1,
            "dns_names": dns,
            "ip_addresses": ips,
            "valid_days": 825,
        }
    )
    cert = x509.load_pem_x509_certificate(created.outs["certificate"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "diabetes-router",
        "diabetes-router.ns",
        "diabetes-router.ns.svc",
        "diabetes-router.ns.svc.cluster.local",
        "localhost",
        "models.example.com",
    }
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.0.0.5",
    }
    ca = x509.load_pem_x509_certificate(created.outs["ca_certificate"].encode())
    cert.verify_directly_issued_by(ca)
    assert "PRIVATE KEY" in created.outs["private_key"]
