"""The components under Pulumi mocks: graph, specs, secrets, dependencies, in-place changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import rpc

from components import rules
from infra import config as cfgmod
from infra import program
from scoring.router.config import RouterConfig
from tests.support.pulumi_mocks import FAKE_KEY, Recorder, install, stack_raw

pytestmark = pytest.mark.components

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
SECRET = "kubernetes:core/v1:Secret"
KEY = "pulumi-python:dynamic:Resource"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
ACCOUNT = "kubernetes:core/v1:ServiceAccount"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"


def run_stack(
    raw: dict[str, Any],
    previous: tuple[Any, Any] = (None, None),
    stack_outputs: dict[str, Any] | None = None,
) -> tuple[Recorder, dict[str, Any]]:
    """Build the whole program from raw config under mocks; return the recorder and outputs."""
    recorder = install(stack_outputs)
    seen: dict[str, Any] = {}

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        endpoint = program.build(cfgmod.parse(raw), previous)
        return pulumi.Output.all(
            endpoint.scoring_uri,
            endpoint.swagger_uri,
            endpoint.traffic,
            endpoint.primary_key,
            endpoint.secondary_key,
        ).apply(
            lambda v: seen.update(
                scoring_uri=v[0],
                swagger_uri=v[1],
                traffic=v[2],
                primary_key=v[3],
                secondary_key=v[4],
            )
        )

    go()
    return recorder, seen


def k8s_name(reg: Any) -> str:
    return reg.inputs["metadata"]["name"]


def test_component_types_and_parents(assets: dict[str, Path]) -> None:
    rec, _ = run_stack(stack_raw(assets))
    components = {
        r.type: r
        for r in rec.regs
        if r.type.startswith("mlendpoints:index:") and r.type != "mlendpoints:index:Image"
    }
    assert {r.type for r in rec.regs if not r.custom} >= {
        "mlendpoints:index:ModelAsset",
        "mlendpoints:index:Environment",
        "mlendpoints:index:OnlineDeployment",
        "mlendpoints:index:OnlineEndpoint",
    }
    assert len(rec.of_type("mlendpoints:index:OnlineDeployment")) == 2
    assert len(rec.of_type("mlendpoints:index:ModelAsset")) == 2
    endpoint = components["mlendpoints:index:OnlineEndpoint"]
    blue = rec.one("mlendpoints:index:OnlineDeployment", "blue")
    green = rec.one("mlendpoints:index:OnlineDeployment", "green")
    env = rec.one("mlendpoints:index:Environment", "sklearn")
    expected_parent = {
        (DEPLOYMENT, "blue-deployment"): blue.urn,
        (SERVICE, "blue-service"): blue.urn,
        (DEPLOYMENT, "green-deployment"): green.urn,
        (SERVICE, "green-service"): green.urn,
        ("mlendpoints:index:Image", "blue-image"): blue.urn,
        ("mlendpoints:index:Image", "green-image"): green.urn,
        ("mlendpoints:index:Image", "sklearn-image"): env.urn,
        ("mlendpoints:index:Image", "diabetes-router-image"): endpoint.urn,
        (DEPLOYMENT, "diabetes-router"): endpoint.urn,
        (SERVICE, "diabetes-router-service"): endpoint.urn,
        (CONFIGMAP, "diabetes-router-config"): endpoint.urn,
        (SECRET, "diabetes-keys"): endpoint.urn,
        (KEY, "diabetes-primary-key"): endpoint.urn,
        (KEY, "diabetes-secondary-key"): endpoint.urn,
        (KEY, "diabetes-token-signing-key"): endpoint.urn,
        (KEY, "diabetes-certificate"): endpoint.urn,
        (SECRET, "diabetes-tls"): endpoint.urn,
        (NETPOL, "blue-network-policy"): blue.urn,
        (NETPOL, "green-network-policy"): green.urn,
        (ACCOUNT, "diabetes-router-account"): endpoint.urn,
        (ROLE, "diabetes-router-role"): endpoint.urn,
        (BINDING, "diabetes-router-role-binding"): endpoint.urn,
    }
    credential = rec.one("mlendpoints:index:InternalCredential", "diabetes")
    expected_parent[(SECRET, "diabetes-internal")] = credential.urn
    expected_parent[(KEY, "diabetes-internal-credential")] = credential.urn
    for (typ, name), parent in expected_parent.items():
        assert rec.one(typ, name).parent == parent, f"{typ} {name} parent"
    # Every Kubernetes object uses the explicit provider built from stack config.
    for reg in rec.regs:
        if reg.type.startswith("kubernetes:") and reg.custom:
            assert "pulumi:providers:kubernetes::k8s::" in reg.provider, reg.name
    # Keys (and the real images, also dynamic) use one explicit dynamic provider, not the
    # default one, which gets the whole stack config as inputs and would show an update on
    # every traffic change.
    for reg in rec.of_type(KEY):
        assert "pulumi:providers:pulumi-python::dynamic::" in reg.provider, reg.name
    # Nothing but these objects exists: no stray resource created inside an apply.
    k8s_objects = sorted(
        (r.type, k8s_name(r)) for r in rec.regs if r.type.startswith("kubernetes:") and r.custom
    )
    assert k8s_objects == sorted(
        [
            (DEPLOYMENT, "diabetes-blue"),
            (DEPLOYMENT, "diabetes-green"),
            (DEPLOYMENT, "diabetes-router"),
            (SERVICE, "diabetes-blue"),
            (SERVICE, "diabetes-green"),
            (SERVICE, "diabetes-router"),
            ("kubernetes:policy/v1:PodDisruptionBudget", "diabetes-blue"),
            ("kubernetes:policy/v1:PodDisruptionBudget", "diabetes-green"),
            (CONFIGMAP, "diabetes-router-config"),
            (SECRET, "diabetes-router-keys"),
            (SECRET, "diabetes-router-tls"),
            (SECRET, "diabetes-internal"),
            (NETPOL, "diabetes-blue"),
            (NETPOL, "diabetes-green"),
            (ACCOUNT, "diabetes-router"),
            (ROLE, "diabetes-router"),
            (BINDING, "diabetes-router"),
            ("kubernetes:core/v1:Namespace", "mlns"),
        ]
    )


def test_provider_uses_content_and_stable_cluster_id(assets: dict[str, Path]) -> None:
    rec, _ = run_stack(stack_raw(assets))
    [prov] = rec.of_type("pulumi:providers:kubernetes")
    assert prov.inputs["clusterIdentifier"] == "test-cluster"
    assert prov.inputs["kubeconfig"] == assets["kubeconfig"].read_text()
    assert prov.inputs["enableConfigMapMutable"] == "true"
    assert prov.inputs["enableSecretMutable"] == "true"
    assert prov.inputs["namespace"] == "mlns"


def test_scoring_deployment_spec(assets: dict[str, Path]) -> None:
    rec, _ = run_stack(stack_raw(assets))
    dep = rec.one(DEPLOYMENT, "blue-deployment")
    spec = dep.inputs["spec"]
    selector = {
        "app.kubernetes.io/name": "ml-endpoints-scoring",
        "mlendpoints/endpoint": "diabetes",
        "mlendpoints/deployment": "blue",
    }
    assert spec["selector"] == {"matchLabels": selector}
    template_labels = spec["template"]["metadata"]["labels"]
    assert {k: template_labels[k] for k in selector} == selector
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    [container] = spec["template"]["spec"]["containers"]
    assert container["image"] == "127.0.0.1:5000/mlendpoints/diabetes-blue:content-key"
    assert len(spec["template"]["metadata"]["annotations"]["mlendpoints/content-tag"]) == 16
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/", "port": "http"}
    assert container["livenessProbe"]["failureThreshold"] == 30
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "300Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "WORKER_COUNT": "3",
        "REQUEST_TIMEOUT_MS": "7000",
        "MAX_CONCURRENT_REQUESTS_PER_INSTANCE": "4",
        "MAX_QUEUE_WAIT_MS": "500",
        "MAX_REQUEST_BODY_BYTES": "104857600",
        "MAX_REQUEST_BYTES_IN_FLIGHT": "0",
        "MAX_REQUEST_HEADER_BYTES": "65536",
        "MAX_CONNECTIONS": "2048",
        "REQUEST_READ_TIMEOUT_MS": "30000",
        "MAX_BATCH_SIZE": "32",
        "MAX_BATCH_WAIT_MS": "2.0",
        "DATA_COLLECTION_ENABLED": "false",
        "DATA_COLLECTION_SAMPLING_RATE": "1.0",
        "DATA_COLLECTION_MAX_FILE_BYTES": "10485760",
        "DATA_COLLECTION_ROLLING_RATE": "hour",
        "DATA_COLLECTION_PAYLOAD_MAX_BYTES": "4194304",
        "DATA_COLLECTION_DESTINATION": "",
        "DATA_COLLECTION_SPOOL_MAX_BYTES": "1073741824",
        "DATA_COLLECTION_COLLECTIONS": "both",
        "AZUREML_MODEL_DIR": "/var/azureml-app/model",
        "AZUREML_ENTRY_SCRIPT": "/var/azureml-app/code/score.py",
        "DATA_COLLECTION_DIR": "/var/azureml-app/data-collection",
        "ML_ENDPOINTS_ENDPOINT": "diabetes",
        "ML_ENDPOINTS_DEPLOYMENT": "blue",
        "INTERNAL_CREDENTIAL_FILE": "/var/run/secrets/ml-endpoints-internal/credential",
        "EXTRA": "1",
    }
    assert container["command"] == ["python", "-m", "scoring", "serve"]
    assert container["args"] == [
        "--entry-script",
        "/var/azureml-app/code/score.py",
        "--model-dir",
        "/var/azureml-app/model",
        "--port",
        "5001",
    ]
    assert dep.custom_timeouts.create == "120s"
    assert dep.custom_timeouts.update == "120s"
    svc = rec.one(SERVICE, "blue-service")
    assert svc.inputs["spec"]["selector"] == selector
    assert svc.inputs["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    assert svc.inputs["spec"]["ports"] == [{"name": "http", "port": 5001, "targetPort": "http"}]
    # Selectors carry no version, image or hash: a new model rolls pods, never replaces.
    for reg in (dep, svc):
        sel = reg.inputs["spec"].get("selector")
        assert "mlendpoints/model-version" not in json.dumps(sel)


def test_pods_wait_before_stopping_so_rollouts_drop_nothing(assets: dict[str, Path]) -> None:
    rec, _ = run_stack(stack_raw(assets))
    for dep in (rec.one(DEPLOYMENT, "blue-deployment"), rec.one(DEPLOYMENT, "diabetes-router")):
        pod = dep.inputs["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 6}}}, dep.name
        assert pod["terminationGracePeriodSeconds"] == 30, dep.name


def test_router_config_matches_router_schema(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets, traffic={"blue": 90, "green": 10})
    raw["deployments"][0]["idempotent"] = True  # stack key `deployments[0].idempotent: true`
    rec, _ = run_stack(raw)
    cm = rec.one(CONFIGMAP, "diabetes-router-config")
    config = json.loads(cm.inputs["data"]["router.json"])
    assert config == {
        "endpoint_name": "diabetes",
        "auth_mode": "key",
        "deployments": {
            "blue": {"url": "http://diabetes-blue.mlns.svc:5001", "idempotent": True},
            "green": {"url": "http://diabetes-green.mlns.svc:5001", "idempotent": False},
        },
        "traffic": {"blue": 90, "green": 10},
        "mirror_traffic": {},
        "secrets_dir": "/var/run/secrets/ml-endpoints",
        "tls": {
            "cert_file": "/etc/ml-endpoints/tls/tls.crt",
            "key_file": "/etc/ml-endpoints/tls/tls.key",
        },
        "metrics_port": 9090,
        "max_token_lifetime_s": 3600,
        "internal_credential_file": "/var/run/secrets/ml-endpoints-internal/credential",
        "discovery": {"namespace": "mlns"},
        "request_timeout_ms": 5000,
        "connect_timeout_ms": 2000,
        "max_connections_per_deployment": 256,
        "max_body_bytes": 10485760,
        "max_header_bytes": 65536,
        "max_url_bytes": 8192,
        "max_response_bytes": 16777216,
        "max_buffered_bytes": 134217728,
        "max_connections": 4096,
        "header_timeout_ms": 10000,
        "body_timeout_ms": 30000,
        "keep_alive_timeout_ms": 60000,
        "upstream_connection_max_age_ms": 1000,
    }
    RouterConfig.model_validate(config)  # the router accepts exactly what we generate
    router = rec.one(DEPLOYMENT, "diabetes-router")
    pod = router.inputs["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {
        "config": "/etc/ml-endpoints",
        "keys": "/var/run/secrets/ml-endpoints",
        "tls": "/etc/ml-endpoints/tls",
        "internal": "/var/run/secrets/ml-endpoints-internal",
        "tmp": "/tmp",
        "kube-api": "/var/run/secrets/kubernetes.io/serviceaccount",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "diabetes-router-config"
    assert volumes["keys"]["secret"]["secretName"] == "diabetes-router-keys"
    assert volumes["tls"]["secret"]["secretName"] == "diabetes-router-tls"
    assert volumes["internal"]["secret"]["secretName"] == "diabetes-internal"
    # /metrics is on its own container port, which the public Service does not expose.
    ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert ports == {"https": 8080, "metrics": 9090}
    assert pod["containers"][0]["args"][:2] == ["--config", "/etc/ml-endpoints/router.json"]
    assert router.inputs["spec"]["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/name": "ml-endpoints-router",
            "mlendpoints/endpoint": "diabetes",
        }
    }
    svc = rec.one(SERVICE, "diabetes-router-service")
    assert svc.inputs["spec"]["type"] == "NodePort"
    assert svc.inputs["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "nodePort": 30080}
    ]


def test_router_depends_on_the_deployments_it_routes_to(assets: dict[str, Path]) -> None:
    rec, _ = run_stack(stack_raw(assets))
    blue = rec.one(DEPLOYMENT, "blue-deployment").urn
    green = rec.one(DEPLOYMENT, "green-deployment").urn
    for name in ("diabetes-router-config",):
        deps = rec.one(CONFIGMAP, name).dependencies
        assert blue in deps and green in deps
    router = rec.one(DEPLOYMENT, "diabetes-router")
    assert {
        blue,
        green,
        rec.one(CONFIGMAP, "diabetes-router-config").urn,
        rec.one(SECRET, "diabetes-keys").urn,
    } <= set(router.dependencies)
    router_image = rec.one("mlendpoints:index:Image", "diabetes-router-image")
    assert {
        rec.one("mlendpoints:index:Image", "blue-image").urn,
        rec.one("mlendpoints:index:Image", "green-image").urn,
    } <= set(router_image.dependencies)
    # and the model Deployments do not depend on the router (no cycle, no coupling)
    assert router.urn not in rec.one(DEPLOYMENT, "blue-deployment").dependencies


def test_up_waits_until_every_router_pod_runs_the_new_config(assets: dict[str, Path]) -> None:
    """The router's rollout is awaited with generation-aware waitFor conditions, not the
    provider's built-in Deployment await (see components.online_endpoint.rollout_done)."""
    raw = stack_raw(assets)
    raw["endpoint"]["router"]["replicas"] = 2
    rec, _ = run_stack(raw)
    router = rec.one(DEPLOYMENT, "diabetes-router")
    wait_for = json.loads(router.inputs["metadata"]["annotations"]["pulumi.com/waitFor"])
    assert wait_for == [
        "jsonpath={.status.updatedReplicas}=2",
        "jsonpath={.status.replicas}=2",
        "jsonpath={.status.availableReplicas}=2",
    ]
    assert router.inputs["spec"]["replicas"] == 2
    # The scoring Deployments keep the built-in await: it reports a failing init()'s log tail.
    blue = rec.one(DEPLOYMENT, "blue-deployment").inputs["metadata"]
    assert "pulumi.com/waitFor" not in blue.get("annotations", {})


def test_keys_are_secrets_everywhere(assets: dict[str, Path]) -> None:
    rec, out = run_stack(stack_raw(assets))
    keys = [k for k in rec.of_type(KEY) if "purpose" in k.inputs]
    assert sorted(k.inputs["purpose"] for k in keys) == [
        "internal_credential",
        "primary_key",
        "secondary_key",
        "token_signing_key",
    ]
    for key in keys:
        assert key.secret_outputs == ["value"]
    secret = rec.one(SECRET, "diabetes-keys")
    wrapped = secret.raw["stringData"]
    assert wrapped.get(rpc._special_sig_key) == rpc._special_secret_sig
    assert sorted(secret.inputs["stringData"]) == [
        "primary_key",
        "secondary_key",
        "token_signing_key",
    ]
    assert out["primary_key"] == FAKE_KEY + "diabetes-primary-key"
    assert out["secondary_key"] == FAKE_KEY + "diabetes-secondary-key"
    # No key value in any plain input: ConfigMap, Deployments, Services, annotations.
    for reg in rec.regs:
        if reg.type == SECRET or reg.type == KEY:
            continue
        assert FAKE_KEY not in json.dumps(reg.inputs, default=str), reg.name


def test_key_outputs_are_secret(assets: dict[str, Path]) -> None:
    install()
    flags: dict[str, bool] = {}

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        endpoint = program.build(cfgmod.parse(stack_raw(assets)))

        async def check() -> None:
            flags["primary"] = await endpoint.primary_key._is_secret
            flags["secondary"] = await endpoint.secondary_key._is_secret
            flags["traffic"] = await endpoint.traffic._is_secret

        return pulumi.Output.from_input(check())

    go()
    assert flags == {"primary": True, "secondary": True, "traffic": False}


def inputs_by_name(rec: Recorder) -> dict[tuple[str, str], Any]:
    return {(r.type, r.name): r.inputs for r in rec.regs}


def test_traffic_change_touches_only_router_config(assets: dict[str, Path]) -> None:
    before, _ = run_stack(stack_raw(assets, traffic={"blue": 100, "green": 0}))
    after, out = run_stack(stack_raw(assets, traffic={"blue": 90, "green": 10}))
    a, b = inputs_by_name(before), inputs_by_name(after)
    assert a.keys() == b.keys()
    changed = sorted(k for k in a if a[k] != b[k])
    assert changed == [(DEPLOYMENT, "diabetes-router"), (CONFIGMAP, "diabetes-router-config")]
    # The router Deployment changes only in its pod-template config hash annotation.
    ra, rb = a[(DEPLOYMENT, "diabetes-router")], b[(DEPLOYMENT, "diabetes-router")]
    ann_a = ra["spec"]["template"]["metadata"].pop("annotations")
    ann_b = rb["spec"]["template"]["metadata"].pop("annotations")
    assert ra == rb
    assert ann_a["mlendpoints/config-hash"] != ann_b["mlendpoints/config-hash"]
    assert out["traffic"] == {"blue": 90, "green": 10}


def test_hot_reload_mode_changes_configmap_only(assets: dict[str, Path]) -> None:
    raws = [stack_raw(assets, traffic=t) for t in ({"blue": 100}, {"blue": 0, "green": 100})]
    for raw in raws:
        raw["endpoint"]["router"]["reload"] = "hot"
    a = inputs_by_name(run_stack(raws[0])[0])
    b = inputs_by_name(run_stack(raws[1])[0])
    assert sorted(k for k in a if a[k] != b[k]) == [(CONFIGMAP, "diabetes-router-config")]


def test_new_model_rebuilds_only_its_deployment(assets: dict[str, Path]) -> None:
    a = inputs_by_name(run_stack(stack_raw(assets))[0])
    (assets["model2"] / "model.pkl").write_bytes(b"model-v2-retrained")
    b = inputs_by_name(run_stack(stack_raw(assets))[0])
    changed = sorted(k for k in a if a[k] != b[k])
    assert changed == [(DEPLOYMENT, "green-deployment"), ("mlendpoints:index:Image", "green-image")]


def test_same_files_same_tags(assets: dict[str, Path]) -> None:
    a = inputs_by_name(run_stack(stack_raw(assets))[0])
    (assets["code"] / "__pycache__").mkdir()
    (assets["code"] / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"junk")
    b = inputs_by_name(run_stack(stack_raw(assets))[0])
    assert a == b


def test_key_version_bump_touches_one_key(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets)
    a = inputs_by_name(run_stack(raw)[0])
    raw["endpoint"]["keys"] = {"secondary_version": 2}
    b = inputs_by_name(run_stack(raw)[0])
    changed = sorted(k for k in a if a[k] != b[k])
    assert changed == [(DEPLOYMENT, "diabetes-router"), (KEY, "diabetes-secondary-key")]


def test_traffic_plan_logged_from_previous_outputs(assets: dict[str, Path]) -> None:
    # Stack outputs come back from the engine as JSON numbers (floats).
    previous = {"traffic": {"blue": 100.0, "green": 0.0}, "mirror_traffic": {}}
    rec = install(previous)

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        endpoint = program.build(
            cfgmod.parse(stack_raw(assets, traffic={"blue": 90, "green": 10})),
            program.previous_routing(),
        )
        return endpoint.traffic

    go()
    plan = [line for line in rec.logs if "traffic plan" in line]
    assert plan == [
        "endpoint 'diabetes' "
        + "\n".join(
            rules.traffic_plan(
                {"blue": 100, "green": 0}, {"blue": 90, "green": 10}, {}, {}, ["blue", "green"]
            )
        )
    ]
    [ref] = rec.of_type("pulumi:pulumi:StackReference")
    assert ref.inputs["name"] == "organization/ml-endpoints/dev"


def test_removing_deployment_with_traffic_is_refused(assets: dict[str, Path]) -> None:
    install()
    raw = stack_raw(assets, traffic={"green": 100}, green=True)
    raw["deployments"] = [d for d in raw["deployments"] if d["name"] == "green"]

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        previous = (
            pulumi.Output.from_input({"blue": 100, "green": 0}),
            pulumi.Output.from_input({}),
        )
        return program.build(cfgmod.parse(raw), previous).traffic

    with pytest.raises(pulumi.RunError) as info:
        go()
    assert str(info.value) == (
        "deployments: 'blue' is removed but still takes 100% live traffic in the deployed "
        "stack; set endpoint.traffic.blue to 0, run `pulumi up`, then remove it"
    )


def test_endpoint_validates_before_any_child(assets: dict[str, Path]) -> None:
    from components import OnlineEndpoint, OnlineEndpointArgs

    rec = install()
    with pytest.raises(ValueError) as info:
        OnlineEndpoint("diabetes", OnlineEndpointArgs(deployments=[], traffic={"blue": 100}))
    assert str(info.value) == (
        "endpoint.traffic.blue: no deployment named 'blue' in this endpoint (deployments: none)"
    )
    assert rec.regs == []


def test_conda_only_package_fails_the_program(assets: dict[str, Path]) -> None:
    assets["conda"].write_text("dependencies:\n  - cudatoolkit=11.8\n")
    install()
    with pytest.raises(ValueError) as info:
        program.build(cfgmod.parse(stack_raw(assets)))
    assert str(info.value) == (
        "environment 'sklearn': 'cudatoolkit' in conda.yaml is conda-only; "
        "drop it or pick a base_image with it"
    )
