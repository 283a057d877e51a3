"""The rollout's Pulumi side under mocks: config file, RBAC only with a rollout, the verdict
resource `up` waits on, and preview's evidence line when the router cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra import config as cfgmod
from infra import program
from scoring.router.config import parse_config
from scoring.router.rollout import RolloutSpec, rollout_id
from tests.support.pulumi_mocks import Recorder, install, stack_raw

pytestmark = pytest.mark.components

ROLLOUT = {
    "steps": [5, 25, 100],
    "bake_s": 30,
    "gates": {"min_requests": 200, "max_error_rate_pct": 1.0, "max_p99_ratio": 1.5},
}
UNREACHABLE = {
    "scoring_uri": "https://127.0.0.1:1/score",
    "primary_key": "k",
    "ca_certificate": "",
}


def build(raw: dict[str, Any], previous: tuple[Any, ...]) -> Recorder:
    recorder = install()

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        return program.build(cfgmod.parse(raw), previous).traffic

    go()
    return recorder


def router_file(rec: Recorder) -> dict[str, Any]:
    cm = next(r for r in rec.regs if r.name == "diabetes-router-config")
    return json.loads(cm.inputs["data"]["router.json"])


def test_rollout_reaches_the_router_with_its_start_store_and_rules(
    assets: dict[str, Path],
) -> None:
    raw = stack_raw(assets, traffic={"blue": 0, "green": 100})
    raw["endpoint"]["rollout"] = ROLLOUT
    rec = build(raw, ({"blue": 100, "green": 0}, None, UNREACHABLE))
    config = router_file(rec)
    assert config["rollout"] == RolloutSpec(**ROLLOUT).model_dump()
    assert config["rollout_from"] == {"blue": 100, "green": 0}
    assert config["rollout_store"] == "kubernetes:mlns/diabetes-router-rollout"
    parse_config(json.dumps(config))  # the router accepts it
    role = next(r for r in rec.regs if r.type.endswith(":Role"))
    assert {tuple(rule["resources"]) for rule in role.inputs["rules"]} == {
        ("endpointslices",),  # discovery's
        ("configmaps",),
        ("leases",),
    }
    verdict = next(r for r in rec.regs if r.name == "diabetes-rollout")
    assert verdict.inputs["rollout_id"] == rollout_id(
        RolloutSpec(**ROLLOUT), {"blue": 0, "green": 100}
    )
    assert "key" in verdict.secret_outputs
    # The endpoint is not reachable here: preview says so and goes on.
    evidence = [line for line in rec.logs if "rollout evidence" in line]
    assert evidence and "rollout evidence unavailable" in evidence[0], rec.logs


def test_no_rollout_is_todays_router_and_role(assets: dict[str, Path]) -> None:
    rec = build(stack_raw(assets, traffic={"blue": 0, "green": 100}), ({"blue": 100}, None, None))
    config = router_file(rec)
    assert not {"rollout", "rollout_from", "rollout_store"} & set(config)
    role = next(r for r in rec.regs if r.type.endswith(":Role"))
    assert {tuple(rule["resources"]) for rule in role.inputs["rules"]} == {("endpointslices",)}
    assert not [r for r in rec.regs if r.name == "diabetes-rollout"]


def test_bad_rollout_fails_preview_naming_the_field(assets: dict[str, Path]) -> None:
    raw = stack_raw(assets, traffic={"blue": 0, "green": 100})
    raw["endpoint"]["rollout"] = {**ROLLOUT, "steps": [50, 25]}
    with pytest.raises(cfgmod.StackConfigError) as info:
        cfgmod.parse(raw)
    assert info.value.problems == [
        "endpoint.rollout.steps[1]: 25 is not above the step before (50); steps must increase",
        "endpoint.rollout.steps: the last step is 25% but the target gives 'green' 100% "
        "(traffic); end the steps at 100",
    ]
