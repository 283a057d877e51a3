"""The rollout's Pulumi side under mocks: config file, RBAC only with a rollout, the verdict
resource `up` waits on, and preview's evidence line when the router cannot be reached."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import _labels
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
        RolloutSpec(**ROLLOUT),
        {"blue": 0, "green": 100},
        parse_config(json.dumps(config)).revisions(),
    )
    assert "key" in verdict.secret_outputs
    # The endpoint is not reachable here: preview says so and goes on.
    evidence = [line for line in rec.logs if "rollout evidence" in line]
    assert evidence and "rollout evidence unavailable" in evidence[0], rec.logs


def test_no_rollout_is_todays_router_and_role(assets: dict[str, Path]) -> None:
    rec = build(stack_raw(assets, traffic={"blue": 0, "green": 100}), ({"blue": 100}, None, None))
    config = router_file(rec)
    assert not {"rollout", "rollout_from", "rollout_store"} & set(config)
    # No revisions either: without a rollout a new image never touches the router.
    assert not [d for d in config["deployments"].values() if "revision" in d]
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


def content_tags(rec: Recorder) -> dict[str, str]:
    """Each scoring Deployment's `mlendpoints/content-tag` pod annotation, by deployment."""
    tags = {}
    for r in rec.regs:
        template = r.inputs.get("spec", {}).get("template", {}).get("metadata", {})
        labels = template.get("labels", {})
        if r.type == "kubernetes:apps/v1:Deployment" and labels.get(_labels.DEPLOYMENT):
            tags[labels[_labels.DEPLOYMENT]] = template["annotations"]["mlendpoints/content-tag"]
    return tags


def test_a_fixed_candidate_is_a_new_rollout(assets: dict[str, Path], tmp_path: Path) -> None:
    """The router file carries each deployment's content tag as its `revision`, and the verdict
    `up` waits on is named by it: after a rollback, fixing green's scoring script is a new
    rollout (a new id) with no change to `endpoint.traffic` or `endpoint.rollout`; rebuilding
    blue, which the target gives 0 %, is not."""
    green_code = tmp_path / "green-code"
    shutil.copytree(assets["code"], green_code)
    raw = stack_raw(assets, traffic={"blue": 0, "green": 100})
    raw["endpoint"]["rollout"] = ROLLOUT
    raw["deployments"][1]["code"] = {"path": str(green_code), "scoring_script": "score.py"}
    previous = ({"blue": 100, "green": 0}, None, UNREACHABLE)

    def declare() -> tuple[dict[str, str], str]:
        rec = build(raw, previous)
        config = router_file(rec)
        revisions = {n: d["revision"] for n, d in config["deployments"].items()}
        verdict = next(r for r in rec.regs if r.name == "diabetes-rollout")
        assert revisions == content_tags(rec)  # the image tag the pods carry, nothing else
        assert verdict.inputs["rollout_id"] == rollout_id(
            RolloutSpec(**ROLLOUT), config["traffic"], parse_config(json.dumps(config)).revisions()
        )  # the id the router computes from this very file
        return revisions, verdict.inputs["rollout_id"]

    revisions, first = declare()
    assert all(revisions.values()) and revisions["blue"] != revisions["green"]
    assert not any("score.py" in r or "/" in r for r in revisions.values())
    assert declare()[1] == first  # the same declaration of the same images: the same rollout

    (green_code / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return 1\n")
    fixed, second = declare()
    assert fixed["green"] != revisions["green"] and fixed["blue"] == revisions["blue"]
    assert second != first

    (assets["code"] / "score.py").write_text(
        "def init():\n    pass\n\ndef run(raw):\n    return 2\n"
    )
    rebuilt, third = declare()
    assert rebuilt["blue"] != fixed["blue"] and rebuilt["green"] == fixed["green"]
    assert third == second  # blue has no share in the target: not part of the rollout
