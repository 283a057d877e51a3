"""The rollout verdict after the router decided: `up` records it, the next `preview` proposes
nothing and warns of the divergence, the next `up` fails naming it, `pulumi refresh` reads the
live split back, and rendered manifests wait for no router.

The provider's methods are called directly against a real HTTP server on loopback answering
`GET /rollout` with statuses the real controller produced (tests/support/rollout_api.py); the
component tests run the stack program under the recording mocks, the verdict resource's outputs
being what the real provider's `create` returned against that server.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import _naming
from components._rollout import _VerdictProvider, failure_message, preview_evidence
from infra import config as cfgmod
from infra import program
from scoring.router.config import parse_config
from scoring.router.rollout import RolloutSpec, rollout_id
from tests.support.pulumi_mocks import FAKE_KEY, Recorder, install, stack_raw
from tests.support.rollout_api import (
    ROLLOUT,
    TRAFFIC,
    FakeRolloutApi,
    fake_rollout_api,
    router_status,
)

pytestmark = pytest.mark.components

KEY = FAKE_KEY + _naming.child("diabetes", "primary-key")  # the mocks' generated primary key
SPEC = RolloutSpec(**ROLLOUT)
ROLLED_BACK = router_status("rolled_back")
DIVERGENCE = (
    "rollout of 'green' rolled back at step 1 of 3 (5%): gate error_rate: error rate 5.00% > 1% "
    "(10 of 200 requests); figures "
)
SPLIT = "live split now {'blue': 100, 'green': 0} (declared {'blue': 0, 'green': 100})"


@pytest.fixture
def api() -> Any:
    with fake_rollout_api(KEY) as running:
        yield running


def props(api: FakeRolloutApi, rid: str, timeout_s: int = 10) -> dict[str, Any]:
    """The verdict resource's inputs, as `OnlineEndpoint` registers them."""
    return {
        "base_url": api.url,
        "key": KEY,
        "ca": "",
        "rollout_id": rid,
        "timeout_s": timeout_s,
        **dict.fromkeys(("status", "step", "live", "declared", "candidate", "verdict")),
    }


# ------------------------------------------------------------------------------ the provider


def test_a_rollback_is_recorded_and_the_same_rollout_then_diffs_to_nothing(
    api: FakeRolloutApi,
) -> None:
    api.status = ROLLED_BACK
    provider = _VerdictProvider()
    news = props(api, ROLLED_BACK["id"])
    state = provider.create(news).outs  # `up` got the verdict (and failed with it: below)
    assert state["status"] == "rolled_back" and state["step"] == 1
    assert state["live"] == {"blue": 100, "green": 0} and state["declared"] == TRAFFIC
    assert state["candidate"] == "green" and state["verdict"] == ROLLED_BACK["verdict"]
    message = failure_message(state)
    assert message.startswith(DIVERGENCE) and SPLIT in message, message
    # Same declaration: nothing to propose, however often preview runs.
    assert provider.diff(ROLLED_BACK["id"], state, news).changes is False
    # A new declaration (or a router that moved) is a change: `up` waits for that rollout.
    assert provider.diff(ROLLED_BACK["id"], state, props(api, "another-rollout")).changes is True
    moved = {**news, "base_url": "http://127.0.0.1:1"}
    assert provider.diff(ROLLED_BACK["id"], state, moved).changes is True
    # An `up` that lost its wait (timeout, closed terminal) left the previous rollout recorded.
    before = {**state, "rollout_id": "the-previous-rollout", "status": "promoted"}
    assert provider.diff(ROLLED_BACK["id"], before, news).changes is True
    # ... and that `up` then reports the verdict at once instead of waiting.
    t0 = time.monotonic()
    again = provider.update(ROLLED_BACK["id"], before, news).outs
    assert time.monotonic() - t0 < 2 and again["status"] == "rolled_back"


def test_an_abort_is_a_verdict_too(api: FakeRolloutApi) -> None:
    api.status = router_status("aborted")
    state = _VerdictProvider().create(props(api, api.status["id"])).outs
    assert state["status"] == "aborted"
    message = failure_message(state)
    assert message.startswith("rollout of 'green' aborted at step 1: aborted by an operator; ")
    assert SPLIT in message, message


def test_up_waits_through_the_steps_for_the_verdict(api: FakeRolloutApi) -> None:
    baking, promoted = router_status("baking"), router_status("promoted")
    assert baking["id"] == promoted["id"]
    api.status = baking
    later = threading.Timer(1.5, lambda: setattr(api, "status", promoted))
    later.start()
    t0 = time.monotonic()
    try:
        state = _VerdictProvider().create(props(api, promoted["id"])).outs
    finally:
        later.cancel()
    assert time.monotonic() - t0 >= 1.4  # it waited while baking
    assert state["status"] == "promoted" and state["live"] == TRAFFIC
    assert api.requests >= 2


def test_no_verdict_in_time_fails_and_records_nothing(api: FakeRolloutApi) -> None:
    api.status = router_status("baking")
    with pytest.raises(RuntimeError) as info:
        _VerdictProvider().create(props(api, api.status["id"], timeout_s=1))
    assert str(info.value).startswith(f"rollout {api.status['id']} has no verdict after 1 s ")
    assert "ml-endpoints rollout status" in str(info.value)


def test_refresh_reads_the_live_split_and_status_from_the_router(api: FakeRolloutApi) -> None:
    provider = _VerdictProvider()
    recorded = {**props(api, ROLLED_BACK["id"]), "status": "baking", "step": 1}
    api.status = ROLLED_BACK
    outs = provider.read(ROLLED_BACK["id"], recorded).outs
    assert (outs["status"], outs["step"]) == ("rolled_back", ROLLED_BACK["verdict"]["step"])
    assert outs["live"] == ROLLED_BACK["live"] == {"blue": 100, "green": 0}
    assert outs["declared"] == TRAFFIC and outs["verdict"]["gate"] == "error_rate"
    assert outs["rollout_id"] == ROLLED_BACK["id"] and outs["key"] == KEY  # inputs kept
    # The router serves another rollout: only the split is news about this one.
    other = router_status(
        "promoted", traffic={"blue": 10, "green": 90}, rollout={**ROLLOUT, "steps": [5, 25, 90]}
    )
    api.status = other
    outs = provider.read(ROLLED_BACK["id"], recorded).outs
    assert outs["live"] == {"blue": 10, "green": 90} and outs["status"] == "baking"
    # Unreachable: the record stays as it was.
    gone = {**recorded, "base_url": "http://127.0.0.1:1"}
    assert provider.read(ROLLED_BACK["id"], gone).outs == gone


# ------------------------------------------------------------------------------ preview's line


def endpoint(api: FakeRolloutApi) -> dict[str, str]:
    return {"scoring_uri": f"{api.url}/score", "primary_key": KEY, "ca_certificate": ""}


def test_preview_warns_of_the_divergence_of_the_declared_rollout(api: FakeRolloutApi) -> None:
    api.status = ROLLED_BACK
    warn, text = preview_evidence(SPEC, TRAFFIC, None, endpoint(api))
    assert warn, text
    assert text.startswith("the live split differs from the declaration: " + DIVERGENCE), text
    assert SPLIT in text, text
    # Another declaration is a new rollout: the evidence line, no warning.
    other = RolloutSpec(**{**ROLLOUT, "bake_s": 20})
    assert rollout_id(other, TRAFFIC) != ROLLED_BACK["id"]
    warn, text = preview_evidence(other, TRAFFIC, None, endpoint(api))
    assert not warn and text.startswith("rollout evidence: green  live 0% -> 100% in 3 steps")
    assert "last rollout rolled_back: error rate 5.00% > 1%" in text, text


def test_preview_without_the_router_says_evidence_unavailable(api: FakeRolloutApi) -> None:
    gone = {**endpoint(api), "scoring_uri": "http://127.0.0.1:1/score"}
    warn, text = preview_evidence(SPEC, TRAFFIC, None, gone)
    assert not warn and text.startswith("rollout evidence unavailable (URLError"), text
    api.status = None  # up but not ready: 503
    warn, text = preview_evidence(SPEC, TRAFFIC, None, endpoint(api))
    assert not warn and text.startswith("rollout evidence unavailable (HTTPError"), text


# ------------------------------------------------------------------------------ the stack


def rollout_raw(assets: dict[str, Path]) -> dict[str, Any]:
    raw = stack_raw(assets, traffic=dict(TRAFFIC))
    raw["endpoint"]["rollout"] = ROLLOUT
    return raw


def render(raw: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The verdict's rollout id and the revisions (content tags) of the router file this stack
    writes: a preview with no router to ask."""
    rec = install()

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        return program.build(cfgmod.parse(raw), ({"blue": 100, "green": 0}, None, None)).traffic

    go()
    config = rec.one("kubernetes:core/v1:ConfigMap", "diabetes-router-config")
    revisions = parse_config(config.inputs["data"]["router.json"]).revisions()
    assert all(revisions.values()), revisions
    verdict = rec.one("pulumi-python:dynamic:Resource", "diabetes-rollout")
    return verdict.inputs["rollout_id"], revisions


def stack_status(raw: dict[str, Any], outcome: str) -> dict[str, Any]:
    """What the stack's router answers after `outcome`: the controller run on the revisions
    of the router file this stack writes."""
    return router_status(outcome, revisions=render(raw)[1])


def unwrap(value: Any) -> Any:
    """A secret input's value (the mocks hand secrets over wrapped)."""
    return value.get("value") if isinstance(value, dict) else value


def run(raw: dict[str, Any], api: FakeRolloutApi, preview: bool) -> tuple[Recorder, dict[str, Any]]:
    """The program, with the verdict's outputs those of the real provider against `api` (what
    an `up` recorded; after a diff without changes the engine hands the program the same)."""

    def engine(_name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        # The stack's router answers at api.url (plain HTTP here), with the key it was given.
        reachable = {**inputs, "base_url": api.url, "ca": "", "key": unwrap(inputs["key"])}
        state = _VerdictProvider().create(reachable).outs
        return {**state, **{k: inputs[k] for k in ("base_url", "ca", "key")}}

    rec = install(preview=preview, engine={"diabetes-rollout": engine})
    seen: dict[str, Any] = {}

    @pulumi.runtime.test
    def go() -> pulumi.Output[Any]:
        ep = program.build(cfgmod.parse(raw), ({"blue": 100, "green": 0}, None, endpoint(api)))
        return ep.rollout.apply(lambda r: seen.update(rollout=r))

    go()
    return rec, seen


def test_preview_after_a_rollback_proposes_nothing_and_warns(
    assets: dict[str, Path], api: FakeRolloutApi
) -> None:
    raw = rollout_raw(assets)
    api.status = stack_status(raw, "rolled_back")
    rec, seen = run(raw, api, preview=True)  # no error
    verdict = rec.one("pulumi-python:dynamic:Resource", "diabetes-rollout")
    assert verdict.inputs["rollout_id"] == api.status["id"]  # the rollout the router judged
    recorded = {**verdict.inputs, **seen["rollout"]}
    assert _VerdictProvider().diff("id", recorded, verdict.inputs).changes is False
    warnings = [m for level, m in rec.levels if level == "WARNING" and "rollout" in m]
    assert len(warnings) == 1, rec.levels
    assert warnings[0].startswith(
        "endpoint 'diabetes' the live split differs from the declaration: " + DIVERGENCE
    )
    assert SPLIT in warnings[0]
    assert not [m for level, m in rec.levels if level == "ERROR"], rec.levels
    # The stack's `rollout` output: the recorded verdict, plain.
    assert seen["rollout"]["status"] == "rolled_back"
    assert seen["rollout"]["live"] == {"blue": 100, "green": 0}
    assert "key" not in seen["rollout"]


def test_up_after_a_rollback_fails_naming_the_divergence(
    assets: dict[str, Path], api: FakeRolloutApi
) -> None:
    raw = rollout_raw(assets)
    api.status = stack_status(raw, "rolled_back")
    with pytest.raises(pulumi.RunError) as info:
        run(raw, api, preview=False)
    assert str(info.value).startswith(DIVERGENCE) and SPLIT in str(info.value), info.value
    assert "`preview` proposes nothing and `up` fails" in str(info.value)
    assert "Fix the candidate (its scoring script, model or environment" in str(info.value)


def test_a_fixed_candidate_after_a_rollback_is_a_new_rollout(
    assets: dict[str, Path], api: FakeRolloutApi, tmp_path: Path
) -> None:
    """Green's scoring script fixed, nothing else: its content tag, so the verdict's id, is new;
    `preview` shows evidence instead of the divergence, and `up` waits for (and records) the
    new rollout's verdict instead of failing with the old one."""
    green_code = tmp_path / "green-code"
    shutil.copytree(assets["code"], green_code)
    raw = rollout_raw(assets)
    raw["deployments"][1]["code"] = {"path": str(green_code), "scoring_script": "score.py"}
    failed_id, before = render(raw)
    failed = router_status("rolled_back", revisions=before)
    assert failed_id == failed["id"]  # the same stack: the rollout that rolled back
    api.status = failed
    assert preview_evidence(SPEC, TRAFFIC, None, endpoint(api), before)[0]  # it warns
    (green_code / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return 1\n")
    fixed_id, revisions = render(raw)
    assert fixed_id != failed["id"]
    # The router still serves the old rollout's verdict: preview now shows evidence.
    warn, text = preview_evidence(SPEC, TRAFFIC, None, endpoint(api), revisions)
    assert not warn and text.startswith("rollout evidence: green  live 0% -> 100%"), text
    assert "last rollout rolled_back" in text, text
    api.status = promoted = stack_status(raw, "promoted")  # the new pods' router, promoted
    assert promoted["id"] == fixed_id
    _, seen = run(raw, api, preview=False)  # no error
    assert seen["rollout"]["status"] == "promoted"
    assert seen["rollout"]["rollout_id"] == promoted["id"]


def test_up_after_a_promotion_succeeds_and_exports_the_split(
    assets: dict[str, Path], api: FakeRolloutApi
) -> None:
    raw = rollout_raw(assets)
    api.status = stack_status(raw, "promoted")
    _, seen = run(raw, api, preview=False)
    assert seen["rollout"]["status"] == "promoted"
    assert seen["rollout"]["live"] == TRAFFIC and seen["rollout"]["rollout_id"] == api.status["id"]


@pytest.mark.parametrize("preview", [True, False])
def test_rendered_manifests_wait_for_no_router(
    assets: dict[str, Path], api: FakeRolloutApi, tmp_path: Path, preview: bool
) -> None:
    raw = rollout_raw(assets)
    raw["cluster"]["render_yaml_to"] = str(tmp_path / "rendered")
    api.status = ROLLED_BACK  # it would fail `up` if anything asked it
    rec, seen = run(raw, api, preview=preview)
    assert not [r for r in rec.regs if r.name == "diabetes-rollout"]
    assert api.requests == 0 and seen["rollout"] is None
    config = next(r for r in rec.regs if r.name == "diabetes-router-config")
    assert '"rollout"' in config.inputs["data"]["router.json"]  # the router still gets it
    if preview:
        assert any(
            "rollout evidence unavailable (manifests are only rendered" in m for m in rec.logs
        ), rec.logs
