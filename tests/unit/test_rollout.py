"""The rollout's rules and state machine, driven with the router's own counters and a fake clock.

The controller is the real one on a real ``Router`` (no sockets: its upstream client is never
called); requests are entered in the counters the proxy path fills (``DeploymentMetrics``,
``MirrorStats``), so the gates read exactly what they read in production.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from scoring.router.config import ConfigError, Secrets, parse_config
from scoring.router.dispatch import Router, RouterState
from scoring.router.rollout import (
    FileStore,
    MemoryStore,
    RolloutController,
    RolloutError,
    RolloutSpec,
    quantile,
    rollout_id,
    step_split,
)
from scoring.router.upstream import UpstreamClient

pytestmark = pytest.mark.router

GATES = {"min_requests": 100, "max_error_rate_pct": 1.0, "max_p99_ratio": 1.5}


def config(
    rollout: dict[str, Any] | None,
    traffic: dict[str, int] | None = None,
    revisions: dict[str, str] | None = None,
) -> dict:
    data: dict[str, Any] = {
        "endpoint_name": "diabetes",
        "auth_mode": "none",
        "deployments": {
            n: {"url": f"http://{n}:5001", **({"revision": revisions[n]} if revisions else {})}
            for n in ("blue", "green")
        },
        "traffic": traffic or {"blue": 0, "green": 100},
    }
    if rollout is not None:
        data["rollout"] = rollout
    return data


def problems(rollout: dict[str, Any], traffic: dict[str, int] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(config(rollout, traffic)), "router.json")
    return info.value.problems


# ------------------------------------------------------------------------------ validation


def test_steps_must_increase_and_end_at_the_target_share() -> None:
    assert problems({"steps": [5, 25, 25, 100], "gates": GATES}) == [
        "rollout.steps[2]: 25 is not above the step before (25); steps must increase"
    ]
    assert problems({"steps": [5, 50], "gates": GATES}) == [
        "rollout.steps: the last step is 50% but the target gives 'green' 100% (traffic); "
        "end the steps at 100"
    ]
    assert problems({"steps": [0, 100]}) == ["rollout.steps[0]: 0 is out of range; use 1..100"]


def test_candidate_is_named_when_the_target_cannot_tell() -> None:
    assert problems({"steps": [10, 50]}, {"blue": 50, "green": 50}) == [
        "rollout.candidate: cannot tell which deployment is rolled out from traffic "
        "{'blue': 50, 'green': 50}; name it (one of: blue, green)"
    ]
    ok = parse_config(
        json.dumps(config({"steps": [10, 50], "candidate": "green"}, {"blue": 50, "green": 50}))
    )
    assert ok.rollout is not None and ok.rollout.candidate == "green"
    assert problems({"steps": [100], "candidate": "red"}) == [
        "rollout.candidate: no deployment named 'red' in this endpoint (deployments: blue, green)"
    ]


def test_gates_out_of_range_name_the_field() -> None:
    bad = problems({"steps": [100], "gates": {"max_error_rate_pct": 101, "min_requests": 0}})
    assert bad == [
        "rollout.gates.min_requests: Input should be greater than or equal to 1 (got 0)",
        "rollout.gates.max_error_rate_pct: Input should be less than or equal to 100 (got 101)",
    ]
    assert problems({"steps": [100], "on_failure": "retry"})[0].startswith(
        "rollout.on_failure: Input should be 'rollback' or 'pause'"
    )
    assert problems({"steps": [100], "bake": 3}) == [
        "rollout.bake: unknown field (got 3); check its spelling"
    ]


def test_step_split_keeps_the_baseline_proportions() -> None:
    assert step_split({"blue": 100, "green": 0}, "green", 5) == {"blue": 95, "green": 5}
    assert step_split({"a": 50, "b": 50, "green": 0}, "green", 25) == {
        "a": 38,
        "b": 37,
        "green": 25,
    }
    assert sum(step_split({"a": 33, "b": 67, "green": 0}, "green", 7).values()) == 100


def test_quantile_interpolates_inside_the_bucket() -> None:
    counts = [0] * 15
    counts[3] = 100  # (2.5 ms, 5 ms]
    assert quantile(counts, 0.5) == pytest.approx(0.00375)
    assert quantile([0] * 15, 0.99) is None


# ------------------------------------------------------------------------------ controller


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def controller(
    rollout: dict[str, Any] | None,
    store: Any = None,
    previous: dict[str, int] | None = None,
    revisions: dict[str, str] | None = None,
) -> tuple[RolloutController, Router, Clock]:
    cfg = parse_config(json.dumps(config(rollout, revisions=revisions)))
    router = Router(
        RouterState.build(cfg, Secrets(None, None, None)), cast(UpstreamClient, object())
    )
    clock = Clock()
    from scoring.router.rollout import AlwaysLeader

    ctl = RolloutController(router, store or MemoryStore(), AlwaysLeader(), wall=clock)
    router.rollout = ctl
    ctl.configure(previous if previous is not None else {"blue": 100, "green": 0})
    return ctl, router, clock


def serve(
    router: Router,
    name: str,
    n: int,
    *,
    status: int = 200,
    seconds: float = 0.004,
    fail_every: int = 0,
) -> None:
    """``n`` answered requests for ``name``, as the proxy path counts them."""
    m = router.metrics.deployment(name)
    for i in range(n):
        code = 500 if fail_every and i % fail_every == 0 else status
        m.responses[code] = m.responses.get(code, 0) + 1
        m.latency.observe(seconds)


def mirrored(router: Router, name: str, equal: int, different: int) -> None:
    s = router.metrics.mirror(name)
    for _ in range(equal):
        s.record(200, 0.004, None, (200, b"[1]"), b"[1]")
    for _ in range(different):
        s.record(200, 0.004, None, (200, b"[1]"), b"[2]")


def step_through(ctl: RolloutController, router: Router, clock: Clock, **green: Any) -> None:
    """One step's worth of traffic at the current split, then past the bake time."""
    ctl.tick()  # opens the window
    live = router.state.live
    serve(router, "green", 200, **green)
    serve(router, "blue", 200 if live["blue"] else 0)
    clock.t += 11
    ctl.tick()


ROLLOUT = {"steps": [5, 25, 50, 100], "bake_s": 10, "gates": GATES}


def test_good_candidate_promotes_through_every_step() -> None:
    ctl, router, clock = controller(ROLLOUT)
    seen = [dict(router.state.live)]
    for _ in range(4):
        step_through(ctl, router, clock)
        seen.append(dict(router.state.live))
    assert [s["green"] for s in seen] == [5, 25, 50, 100, 100]
    assert ctl.record["status"] == "promoted"
    assert ctl.record["verdict"]["result"] == "promoted"
    assert router.state.split.names == ("green",)


def test_no_bake_no_pass_and_no_evidence_no_pass() -> None:
    ctl, router, clock = controller(ROLLOUT)
    ctl.tick()
    serve(router, "green", 50)
    clock.t += 60
    ctl.tick()
    assert ctl.record["step"] == 0 and ctl.status()["window"]["requests"] == 50
    serve(router, "green", 100)
    ctl.tick()
    assert ctl.record["step"] == 0  # the p99 gate has no baseline window yet
    serve(router, "blue", 100)
    ctl.tick()
    assert ctl.record["step"] == 1  # enough evidence on both sides and baked: next step


def test_error_gate_rolls_back_at_the_first_step_before_the_bake_ends() -> None:
    ctl, router, _clock = controller(ROLLOUT)
    ctl.tick()
    serve(router, "green", 200, fail_every=20)  # 5% 500s
    serve(router, "blue", 2000)
    ctl.tick()  # no time has passed: a breach does not wait for the bake
    rec = ctl.record
    assert rec["status"] == "rolled_back"
    assert router.state.live == {"blue": 100, "green": 0}
    verdict = rec["verdict"]
    assert (verdict["gate"], verdict["step"]) == ("error_rate", 1)
    assert verdict["reason"] == "error rate 5.00% > 1% (10 of 200 requests)"


def test_slow_candidate_rolls_back_on_p99() -> None:
    ctl, router, _clock = controller(ROLLOUT)
    ctl.tick()
    serve(router, "green", 200, seconds=0.2)
    serve(router, "blue", 2000, seconds=0.004)
    ctl.tick()
    assert ctl.record["status"] == "rolled_back"
    assert ctl.record["verdict"]["gate"] == "p99"


def test_pause_on_failure_holds_the_last_good_split() -> None:
    ctl, router, clock = controller({**ROLLOUT, "on_failure": "pause"})
    step_through(ctl, router, clock)  # 5% passes → 25%
    ctl.tick()
    serve(router, "green", 200, fail_every=10)
    ctl.tick()
    assert ctl.record["status"] == "paused"
    assert router.state.live == {"blue": 95, "green": 5}
    ctl.command("resume")
    assert router.state.live == {"blue": 75, "green": 25}
    ctl.command("promote")
    assert ctl.record["status"] == "promoted" and router.state.live == {"blue": 0, "green": 100}
    with pytest.raises(RolloutError, match="no rollout in progress"):
        ctl.command("abort")


def test_disagreeing_candidate_is_refused_before_live_traffic() -> None:
    gates = {**GATES, "min_agreement_pct": 98}
    ctl, router, _clock = controller({**ROLLOUT, "gates": gates})
    assert ctl.record["status"] == "mirroring"
    assert router.state.live == {"blue": 100, "green": 0}
    assert router.state.mirror_name == "green" and router.state.mirror_share == 0.5
    ctl.tick()
    mirrored(router, "green", 90, 10)
    ctl.tick()
    assert ctl.record["status"] == "rolled_back"
    assert ctl.record["verdict"]["gate"] == "agreement"
    assert router.state.mirror_name is None and router.state.live["green"] == 0


def test_agreeing_candidate_goes_live_after_the_mirror_phase() -> None:
    ctl, router, clock = controller({**ROLLOUT, "gates": {**GATES, "min_agreement_pct": 98}})
    ctl.tick()
    mirrored(router, "green", 150, 0)
    clock.t += 11
    ctl.tick()
    assert ctl.record["status"] == "baking" and router.state.live == {"blue": 95, "green": 5}
    assert router.state.mirror_name is None


def test_no_gates_or_no_rollout_is_the_one_shot_shift() -> None:
    for spec in (None, {"steps": [5, 100]}):
        ctl, router, _ = controller(spec)
        assert ctl.record["status"] == "none"
        assert router.state.live == {"blue": 0, "green": 100}


def test_a_restart_resumes_from_the_store(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "rollout.json"))
    ctl, router, clock = controller(ROLLOUT, store)
    step_through(ctl, router, clock)
    store.save(ctl.record)
    # A new process: nothing in memory, the same config; the file says step 2 (25%).
    again, router2, _ = controller(ROLLOUT, FileStore(str(tmp_path / "rollout.json")), previous={})
    assert again.record["step"] == 1 and router2.state.live == {"blue": 75, "green": 25}


class Lease:
    """A lease another replica holds until ``held`` is set."""

    held = False

    def hold(self) -> bool:
        return self.held

    def release(self) -> None:
        self.held = False


def test_a_replica_that_does_not_decide_never_jumps_to_the_target() -> None:
    """A new router pod starts while the old one still decides (a config change rolls the
    router pods): it keeps serving the split it starts from and decides only once it holds
    the lease, from that split (seen on the cluster: it served the target at once)."""
    data = config(ROLLOUT)
    data["rollout_from"] = {"blue": 100, "green": 0}
    cfg = parse_config(json.dumps(data))
    router = Router(
        RouterState.build(cfg, Secrets(None, None, None)), cast(UpstreamClient, object())
    )
    lease, store = Lease(), MemoryStore()
    ctl = RolloutController(router, store, lease, wall=Clock())
    ctl.configure(None)
    assert ctl.record["status"] == "waiting" and router.state.live == {"blue": 100, "green": 0}
    assert store.load() is None  # a follower writes nothing
    lease.held = ctl.leader = True  # what run() does when the lease comes
    ctl.configure(ctl.record["live"])
    assert ctl.record["status"] == "baking" and router.state.live == {"blue": 95, "green": 5}


def test_one_slow_request_is_not_a_slow_candidate() -> None:
    """Under 1000 requests the p99 gate reads the quantile with 10 requests above it: one
    hiccup among 150 (seen on loopback: 1 of 105 at 100+ ms) does not roll a good one back."""
    ctl, router, _clock = controller(ROLLOUT)
    serve(router, "green", 149)
    serve(router, "green", 1, seconds=0.2)
    serve(router, "blue", 2000)
    ctl.tick()
    assert ctl.record["status"] == "baking", ctl.record["verdict"]
    assert ctl.status()["window"]["p99_quantile"] == pytest.approx(0.933, abs=0.001)


# ------------------------------------------------------------------------------ rollout id


def test_a_new_revision_of_a_target_deployment_is_a_new_rollout() -> None:
    spec = RolloutSpec(**ROLLOUT)
    target = {"blue": 0, "green": 100}
    first = rollout_id(spec, target, {"blue": "b1", "green": "g1"})
    assert rollout_id(spec, target, {"green": "g1", "blue": "b1"}) == first  # order: no
    assert rollout_id(spec, target, {"blue": "b1", "green": "g2"}) != first  # fixed green
    # Blue has no share in the target: rebuilding it neither restarts nor retries the rollout.
    assert rollout_id(spec, target, {"blue": "b2", "green": "g1"}) == first
    # A baseline that keeps a share is part of what the gates compared.
    canary = {"blue": 50, "green": 50}
    half = RolloutSpec(**{**ROLLOUT, "steps": [5, 50], "candidate": "green"})
    assert rollout_id(half, canary, {"blue": "b1", "green": "g1"}) != rollout_id(
        half, canary, {"blue": "b2", "green": "g1"}
    )
    # No revisions (an old file, a router run by hand): the id rollouts always had, so a router
    # upgraded mid-rollout still recognises its record.
    assert rollout_id(spec, target, {"blue": "", "green": ""}) == rollout_id(spec, target)
    assert rollout_id(spec, target, {"blue": "", "green": "g1"}) != rollout_id(spec, target)
    # The declaration still counts.
    assert rollout_id(spec, {"blue": 10, "green": 90}, {"green": "g1"}) != rollout_id(
        spec, target, {"green": "g1"}
    )


def test_fields_that_do_not_declare_the_rollout_leave_its_id() -> None:
    """The router computes the id from the parsed file: urls, routing policy, limits, mirror,
    ``rollout_from`` and the store are not the rollout."""
    base = config(ROLLOUT, revisions={"blue": "b1", "green": "g1"})
    other = json.loads(json.dumps(base))
    other["deployments"]["green"].update(url="http://green.ns:6000/x", idempotent=True)
    other.update(
        request_timeout_ms=1234,
        mirror_traffic={"blue": 10},
        rollout_from={"blue": 100, "green": 0},
        rollout_store="/tmp/elsewhere.json",
    )

    def rid(data: dict[str, Any]) -> str:
        cfg = parse_config(json.dumps(data))
        return rollout_id(cfg.rollout, cfg.traffic, cfg.revisions())

    assert rid(other) == rid(base)
    other["deployments"]["green"]["revision"] = "g2"
    assert rid(other) != rid(base)


def test_a_bad_revision_names_the_field() -> None:
    data = config(None, revisions={"blue": "b1", "green": "has space"})
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(data), "router.json")
    assert info.value.problems[0].startswith("deployments.green.revision: "), info.value.problems
    data["deployments"]["green"]["revision"] = "x" * 65
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(data), "router.json")
    assert info.value.problems[0].startswith("deployments.green.revision: "), info.value.problems
    plain = parse_config(json.dumps(config(None)))  # no revision: a file written by hand
    assert plain.revisions() == {"blue": "", "green": ""}


def reload(router: Router, ctl: RolloutController, data: dict[str, Any]) -> None:
    """What ``RouterServer.reload`` does with a new file: swap the state, configure."""
    old = router.state
    router.swap(RouterState.build(parse_config(json.dumps(data)), Secrets(None, None, None), 2))
    ctl.configure(old.live)


def test_a_new_candidate_revision_while_baking_starts_from_the_live_split() -> None:
    """A reload where only green's revision changed, at step 2 (25 %): a new rollout (new id,
    fresh window, no history) from the split served now; the steps the new revision already
    has are skipped, as for any declaration that changes mid-rollout, and a breach goes back
    to that split."""
    revisions = {"blue": "b1", "green": "g1"}
    ctl, router, clock = controller(ROLLOUT, revisions=revisions)
    first = ctl.record["id"]
    step_through(ctl, router, clock)
    assert ctl.record["step"] == 1 and router.state.live == {"blue": 75, "green": 25}
    reload(router, ctl, config(ROLLOUT, revisions=revisions))  # unchanged: the same rollout
    assert ctl.record["id"] == first and ctl.record["step"] == 1 and ctl.record["history"]
    reload(router, ctl, config(ROLLOUT, revisions={**revisions, "green": "g2"}))
    rec = ctl.record
    assert rec["id"] != first and rec["status"] == "baking" and "history" not in rec
    assert rec["start"] == {"blue": 75, "green": 25} and rec["step"] == 2
    assert router.state.live == {"blue": 50, "green": 50}
    ctl.tick()
    serve(router, "green", 200, fail_every=10)
    serve(router, "blue", 2000)
    ctl.tick()
    assert rec["status"] == "rolled_back" and router.state.live == {"blue": 75, "green": 25}


def test_after_a_rollback_only_a_new_revision_retries() -> None:
    revisions = {"blue": "b1", "green": "g1"}
    ctl, router, _clock = controller(ROLLOUT, revisions=revisions)
    ctl.tick()
    serve(router, "green", 200, fail_every=10)
    serve(router, "blue", 2000)
    ctl.tick()
    assert ctl.record["status"] == "rolled_back"
    failed = ctl.record["id"]
    reload(router, ctl, config(ROLLOUT, revisions=revisions))
    assert (ctl.record["id"], ctl.record["status"]) == (failed, "rolled_back")
    assert router.state.live == {"blue": 100, "green": 0}
    reload(router, ctl, config(ROLLOUT, revisions={**revisions, "blue": "b2"}))  # 0 % target
    assert (ctl.record["id"], ctl.record["status"]) == (failed, "rolled_back")
    reload(router, ctl, config(ROLLOUT, revisions={**revisions, "green": "g2"}))
    assert ctl.record["id"] != failed and ctl.record["status"] == "baking"
    assert ctl.record["start"] == {"blue": 100, "green": 0}
    assert router.state.live == {"blue": 95, "green": 5}
