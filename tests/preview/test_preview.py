"""`pulumi preview` and `up` with the real CLI: default stack, traffic shift, plan, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from components import rules
from tests.support.preview import Project, default_config, render_config, steps

pytestmark = pytest.mark.toolchain

CONFIGMAP = "kubernetes:core/v1:ConfigMap"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def blue_green(
    project: Project,
    traffic: dict[str, int],
    mirror: dict[str, int] | None = None,
    names: tuple[str, ...] = ("blue", "green"),
) -> dict[str, Any]:
    """Default stack with prebuilt images (nothing to build), rendering manifests to a folder."""
    config = render_config(project, default_config())
    config["ml-endpoints:deployments"] = [
        {
            "name": name,
            "image": f"127.0.0.1:5000/ml-endpoints/prebuilt-{name}:1",
            "instance_count": 1,
        }
        for name in names
    ]
    config["ml-endpoints:endpoint"]["router"]["image"] = "127.0.0.1:5000/prebuilt/router:1"
    config["ml-endpoints:endpoint"]["traffic"] = traffic
    config["ml-endpoints:endpoint"]["mirror_traffic"] = mirror or {}
    return config


def rendered_router_config(project: Project) -> dict[str, Any]:
    """The router.json inside the ConfigMap manifest the provider rendered."""
    for path in project.rendered.rglob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc and doc.get("kind") == "ConfigMap":
            return json.loads(doc["data"]["router.json"])
    raise AssertionError(f"no ConfigMap rendered under {project.rendered}")


def test_default_stack_previews(project: Project, trained_model: Path) -> None:
    config = render_config(project, default_config())
    config["ml-endpoints:models"]["diabetes"]["path"] = str(trained_model)
    project.write_config(config)
    events: list[auto.EngineEvent] = []
    result = project.stack().preview(on_event=events.append)
    ops = steps(events)
    assert set(ops.values()) == {"create", "read"}, ops  # read: the self StackReference
    for expected in [
        (DEPLOYMENT, "blue-deployment"),
        (DEPLOYMENT, "diabetes-router"),
        (CONFIGMAP, "diabetes-router-config"),
        ("kubernetes:core/v1:Secret", "diabetes-keys"),
        ("mlendpoints:index:OnlineEndpoint", "diabetes"),
    ]:
        assert expected in ops, expected
    assert "traffic plan (first deployment):" in result.stdout
    assert "blue        live - -> 100%     mirror 0% -> 0%" in result.stdout
    # Preview declares images but builds none: nothing was rendered or pushed.
    assert not project.rendered.exists() or not any(project.rendered.rglob("*.yaml"))


def test_traffic_shift_is_an_in_place_router_update(project: Project) -> None:
    project.write_config(blue_green(project, {"blue": 100, "green": 0}))
    stack = project.stack()
    up = stack.up()
    assert up.summary.result == "succeeded"
    assert up.outputs["traffic"].value == {"blue": 100, "green": 0}
    assert up.outputs["primary_key"].secret
    first_key = up.outputs["primary_key"].value
    assert rendered_router_config(project)["traffic"] == {"blue": 100, "green": 0}

    project.write_config(blue_green(project, {"blue": 90, "green": 10}))
    events: list[auto.EngineEvent] = []
    preview = stack.preview(on_event=events.append)
    changed = {k: v for k, v in steps(events).items() if v not in ("same", "read")}
    assert changed == {
        (CONFIGMAP, "diabetes-router-config"): "update",
        (DEPLOYMENT, "diabetes-router"): "update",
    }
    assert "replace" not in preview.change_summary
    assert preview.change_summary.get("update") == 2
    plan = rules.traffic_plan(
        {"blue": 100, "green": 0}, {"blue": 90, "green": 10}, {}, {}, ["blue", "green"]
    )
    for line in plan:
        assert line in preview.stdout, line

    up = stack.up()
    assert up.outputs["traffic"].value == {"blue": 90, "green": 10}
    assert up.outputs["primary_key"].value == first_key  # keys survive updates
    assert rendered_router_config(project)["traffic"] == {"blue": 90, "green": 10}

    # Regenerating the secondary key touches that key alone (and what mounts it).
    rotated = blue_green(project, {"blue": 90, "green": 10})
    rotated["ml-endpoints:endpoint"]["keys"]["secondary_version"] = 2
    project.write_config(rotated)
    events = []
    stack.preview(on_event=events.append)
    changed = {k: v for k, v in steps(events).items() if v not in ("same", "read")}
    # a create-before-delete replacement ends with its "delete-replaced" step
    assert changed == {
        ("pulumi-python:dynamic:Resource", "diabetes-secondary-key"): "delete-replaced",
        ("kubernetes:core/v1:Secret", "diabetes-keys"): "update",
        (DEPLOYMENT, "diabetes-router"): "update",
    }
    second = stack.up()
    assert second.outputs["primary_key"].value == first_key
    assert second.outputs["secondary_key"].value != up.outputs["secondary_key"].value

    # A deployment holding traffic in the deployed stack cannot be removed.
    gone = blue_green(project, {"green": 100}, names=("green",))
    gone["ml-endpoints:endpoint"]["keys"]["secondary_version"] = 2
    project.write_config(gone)
    with pytest.raises(auto.CommandError) as info:
        stack.preview()
    assert (
        "deployments: 'blue' is removed but still takes 90% live traffic in the deployed "
        "stack; set endpoint.traffic.blue to 0, run `pulumi up`, then remove it"
    ) in str(info.value)


@pytest.mark.parametrize(
    ("traffic", "mirror", "names", "message"),
    [
        (
            {"blue": 60, "green": 30},
            {},
            ("blue", "green"),
            "endpoint.traffic: values sum to 90 (blue=60, green=30); must be 0 or 100",
        ),
        (
            {"blue": 90, "red": 10},
            {},
            ("blue", "green"),
            "endpoint.traffic.red: no deployment named 'red' in this endpoint "
            "(deployments: blue, green)",
        ),
        (
            {"blue": 100},
            {"green": 60},
            ("blue", "green"),
            "endpoint.mirror_traffic.green: 60% is above the 50% mirror limit; use 0..50",
        ),
        (
            {"blue": 90, "green": 10},
            {"green": 10},
            ("blue", "green"),
            "endpoint.mirror_traffic.green: 'green' takes live traffic (10%); mirror only to a "
            "deployment at 0%",
        ),
        (
            {"blue": 100},
            {"green": 10, "red": 10},
            ("blue", "green", "red"),
            "endpoint.mirror_traffic: mirrors to 2 deployments (green, red); mirror to one "
            "deployment at most",
        ),
        (
            {"Blue_1": 100},
            {},
            ("Blue_1",),
            "deployments[0].name: 'Blue_1' is not DNS-1123 (lowercase letters, digits, '-', starts "
            "with a letter, ends with a letter or digit, <= 63 chars)",
        ),
    ],
)
def test_validation_errors_fail_preview(
    project: Project,
    traffic: dict[str, int],
    mirror: dict[str, int],
    names: tuple[str, ...],
    message: str,
) -> None:
    project.write_config(blue_green(project, traffic, mirror, names))
    with pytest.raises(auto.CommandError) as info:
        project.stack().preview()
    text = str(info.value)
    assert "invalid stack config:" in text
    assert message in text
    assert "Traceback" not in text


def test_bad_value_names_key_and_accepted_values(project: Project) -> None:
    config = blue_green(project, {"blue": 100, "green": 0})
    config["ml-endpoints:endpoint"]["auth_mode"] = "keys"
    project.write_config(config)
    with pytest.raises(auto.CommandError) as info:
        project.stack().preview()
    assert (
        "endpoint.auth_mode: 'keys' is not accepted; accepted: 'key', 'aml_token' or 'none'"
        in str(info.value)
    )
