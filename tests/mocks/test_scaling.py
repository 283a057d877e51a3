"""scale_settings under Pulumi mocks: the HPA and PDB specs, no `replicas` fighting the
autoscaler, the spread across nodes, the preview line, and the preview-time refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra import config as cfgmod
from infra import program
from scoring.router.config import RouterConfig
from tests.support.pulumi_mocks import Recorder, install, stack_raw

pytestmark = pytest.mark.components

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"

AUTOSCALE = {
    "type": "target_utilization",
    "min_instances": 1,
    "max_instances": 3,
    "target_utilization_percentage": 60,
    "polling_interval": 10,
    "scale_down_delay": 30,
}


def autoscaled_raw(assets: dict[str, Path], **scale: Any) -> dict[str, Any]:
    """blue autoscaled (no instance_count), green fixed at 1."""
    raw = stack_raw(assets)
    blue = {k: v for k, v in raw["deployments"][0].items() if k != "instance_count"}
    blue["scale_settings"] = {**AUTOSCALE, **scale}
    raw["deployments"][0] = blue
    return raw


def build(raw: dict[str, Any]) -> Recorder:
    rec = install()

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        return program.build(cfgmod.parse(raw)).traffic

    go()
    return rec


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(cfgmod.StackConfigError) as exc:
        cfgmod.parse(raw)
    return exc.value.problems


def test_autoscaled_deployment_gets_an_hpa_and_no_replicas(assets: dict[str, Path]) -> None:
    rec = build(autoscaled_raw(assets))
    blue = rec.one(DEPLOYMENT, "blue-deployment").inputs["spec"]
    # No replicas: `pulumi up` never resets what the autoscaler chose.
    assert "replicas" not in blue
    assert rec.one(DEPLOYMENT, "green-deployment").inputs["spec"]["replicas"] == 1
    hpa = rec.one(HPA, "blue-hpa").inputs
    assert hpa["metadata"]["name"] == "diabetes-blue"
    assert hpa["metadata"]["namespace"] == "mlns"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "diabetes-blue",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 3)
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60},
            },
        }
    ]
    assert spec["behavior"] == {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 10},
                {"type": "Pods", "value": 4, "periodSeconds": 10},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 30,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 10}],
        },
    }
    # A fixed deployment has no autoscaler.
    assert [r.name for r in rec.of_type(HPA)] == ["blue-hpa"]


def test_every_deployment_has_a_pdb_and_spreads_across_nodes(assets: dict[str, Path]) -> None:
    rec = build(autoscaled_raw(assets, min_instances=2))
    selector = {
        "app.kubernetes.io/name": "ml-endpoints-scoring",
        "mlendpoints/endpoint": "diabetes",
    }
    for name, keep in (("blue", 2), ("green", 1)):
        pdb = rec.one(PDB, f"{name}-pdb").inputs
        assert pdb["spec"]["minAvailable"] == keep
        assert pdb["spec"]["selector"] == {
            "matchLabels": {**selector, "mlendpoints/deployment": name}
        }
        pod = rec.one(DEPLOYMENT, f"{name}-deployment").inputs["spec"]["template"]["spec"]
        assert pod["topologySpreadConstraints"] == [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {**selector, "mlendpoints/deployment": name}},
            }
        ]


def test_zero_instances_has_no_pdb(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets)
    raw["deployments"][1]["instance_count"] = 0
    rec = build(raw)
    assert [r.name for r in rec.of_type(PDB)] == ["blue-pdb"]


def test_preview_shows_the_range(assets: dict[str, Path]) -> None:
    rec = build(autoscaled_raw(assets))
    lines = sorted(line for line in rec.logs if line.startswith("scale "))  # async order
    assert lines == [
        "scale blue: 1..3 replicas, target 60% CPU, scale-down delay 30s",
        "scale green: 1 replica (fixed)",
    ]


def test_bad_scale_settings_name_the_field(assets: dict[str, Path]) -> None:
    assert problems(autoscaled_raw(assets, min_instances=4)) == [
        "deployments[0].scale_settings.min_instances: 4 is more than max_instances 3"
    ]
    [line] = problems(autoscaled_raw(assets, target_utilization_percentage=150))
    assert line.startswith("deployments[0].scale_settings.target_utilization_percentage: ")
    assert "150" in line
    [line] = problems(autoscaled_raw(assets, target_concurrent_requests_per_instance=4))
    assert line.startswith(
        "deployments[0].scale_settings.target_concurrent_requests_per_instance: not supported yet"
    )
    assert "KEDA" in line
    [line] = problems(autoscaled_raw(assets, type="sideways"))
    assert line.startswith("deployments[0].scale_settings.type: 'sideways' is not accepted")


def test_autoscaling_with_fixed_count_or_no_cpu_request_is_refused(
    assets: dict[str, Path],
) -> None:
    raw = autoscaled_raw(assets)
    raw["deployments"][0]["instance_count"] = 2
    raw["deployments"][0]["resources"] = {"requests": {"memory": "300Mi"}}
    assert problems(raw) == [
        "deployments[0].instance_count: a fixed count conflicts with scale_settings.type "
        "target_utilization; remove it (min_instances is the starting count)",
        "deployments[0].resources.requests.cpu: required by scale_settings.type "
        "target_utilization (CPU utilisation is a percentage of the request)",
    ]
    # type default keeps instance_count as before, with or without a CPU request.
    raw["deployments"][0]["scale_settings"] = {"type": "default"}
    assert cfgmod.parse(raw).deployments[0].instance_count == 2


def test_component_refuses_the_same_combinations(assets: dict[str, Path]) -> None:
    from components import OnlineDeploymentArgs, Resources, ScaleSettings
    from components.online_deployment import _validate

    args = OnlineDeploymentArgs(
        endpoint_name="diabetes",
        image="example/scoring:1",
        instance_count=2,
        scale_settings=ScaleSettings(type="target_utilization", min_instances=3, max_instances=2),
        resources=Resources(requests={"memory": "1Gi"}),
    )
    with pytest.raises(ValueError) as exc:
        _validate("blue", args)
    assert str(exc.value).splitlines() == [
        "deployment 'blue'.scale_settings.min_instances: 3 is more than max_instances 2",
        "deployment 'blue'.instance_count: a fixed count conflicts with scale_settings.type "
        "target_utilization; remove it (min_instances is the starting count)",
        "deployment 'blue'.resources.requests.cpu: required by scale_settings.type "
        "target_utilization (CPU utilisation is a percentage of the request)",
    ]


def test_router_reads_endpointslices_with_its_own_account_only(assets: dict[str, Path]) -> None:
    """The router's ServiceAccount may only read EndpointSlices in its namespace; its token is
    mounted into the router container alone (no automount anywhere), where the router's
    config says discovery reads it."""
    rec = build(stack_raw(assets))
    [role] = rec.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
    assert role.inputs["metadata"]["name"] == "diabetes-router"
    assert role.inputs["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    [binding] = rec.of_type("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
    assert binding.inputs["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "diabetes-router",
    }
    assert binding.inputs["subjects"] == [
        {"kind": "ServiceAccount", "name": "diabetes-router", "namespace": "mlns"}
    ]
    [account] = rec.of_type("kubernetes:core/v1:ServiceAccount")
    assert account.inputs["automountServiceAccountToken"] is False
    router = rec.one(DEPLOYMENT, "diabetes-router")
    pod = router.inputs["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "diabetes-router"
    assert pod["automountServiceAccountToken"] is False
    [volume] = [v for v in pod["volumes"] if "projected" in v]
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert volume["projected"]["defaultMode"] == 0o440
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert {router.urn, binding.urn} <= {router.urn, *router.dependencies}
    for name in ("blue-deployment", "green-deployment"):
        scoring = rec.one(DEPLOYMENT, name).inputs["spec"]["template"]["spec"]
        assert (
            "serviceAccountName" not in scoring and scoring["automountServiceAccountToken"] is False
        )
        assert not any("projected" in v for v in scoring.get("volumes", []))
    config = json.loads(rec.one(CONFIGMAP, "diabetes-router-config").inputs["data"]["router.json"])
    discovery = RouterConfig.model_validate(config).discovery
    assert discovery is not None and discovery.namespace == "mlns"
    assert discovery.token_file == f"{mount['mountPath']}/token"
    assert discovery.ca_file == f"{mount['mountPath']}/ca.crt"


def test_traffic_plan_says_when_an_autoscaled_deployment_gets_more(assets: dict[str, Path]) -> None:
    """Blue (autoscaled 1..3) goes 50% -> 90%: the plan says it may be at its minimum and how it
    catches up; green (fixed) losing traffic, and a first deployment, get no such note."""
    raw = autoscaled_raw(assets)
    raw["endpoint"]["traffic"] = {"blue": 90, "green": 10}
    rec = install()

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        previous = ({"blue": 50, "green": 50}, {})
        return program.build(cfgmod.parse(raw), previous).traffic

    go()
    [plan] = [line for line in rec.logs if "traffic plan" in line]
    assert (
        "  blue: live 50% -> 90% onto a deployment that may be at its minimum (1 replica); the "
        "autoscaler adds replicas (up to 3) once CPU passes 60%, one step per 10 s plus pod "
        "start-up: raise min_instances first for a large shift"
    ) in plan.splitlines()
    assert "green:" not in plan
    first = build(raw)
    [plan] = [line for line in first.logs if "traffic plan" in line]
    assert "minimum" not in plan
