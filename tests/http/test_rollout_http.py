"""Progressive rollouts through a real router process and real upstreams on loopback.

Each test starts blue and a green candidate (``tests/assets/echo_upstream.py``; a bad green
fails or slows by its own flags), a router serving blue 100% with a file store, then rewrites
the config to green 100% with a ``rollout`` block, as `pulumi up` would, while a bounded
background load runs. The router's own ``GET /rollout`` must then say promoted, or rolled back
naming the gate, with traffic back on blue.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pulumi
import pytest

from components._rollout import _VerdictProvider, fail_on_verdict, preview_evidence
from mlendpoints._procs import Proc
from mlendpoints.cli import main
from scoring.router.rollout import Gates, RolloutSpec
from tests.support.load import Load
from tests.support.router import AUTH1, KEY1, cfg, metric, router, upstream, wait_for

pytestmark = pytest.mark.router

GATES = {"min_requests": 20, "max_error_rate_pct": 1.0, "max_p99_ratio": 1.5}
SAME = {**AUTH1, "x-test-same": "1"}  # blue and green answer alike (agreement)


def rollout_config(ups: dict[str, Proc], store: Path, **rollout: Any) -> dict:
    spec = {"steps": [5, 50, 100], "bake_s": 1, "gates": GATES, **rollout}
    return cfg(
        {n: p.url for n, p in ups.items()},
        {"blue": 0, "green": 100},
        rollout=spec,
        rollout_store=str(store),
    )


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def run_rollout(
    tmp_path: Path,
    green_flags: tuple[str, ...],
    headers: dict[str, str],
    while_up: Callable[[Proc, dict[str, Any]], None] | None = None,
    **rollout: Any,
) -> tuple[dict[str, Any], Load]:
    """Start blue 100%, declare the rollout, load until the verdict; the final status."""
    store = tmp_path / "rollout.json"
    with (
        upstream("blue") as blue,
        upstream("green", *green_flags) as green,
        httpx.Client(timeout=30) as c,
    ):
        ups = {"blue": blue, "green": green}
        start = cfg({n: p.url for n, p in ups.items()}, {"blue": 100, "green": 0})
        start["rollout_store"] = str(store)
        with router(tmp_path, start) as (proc, path):

            def ask() -> tuple[int, str]:
                r = c.post(f"{proc.url}/score", json={"data": [[1]]}, headers=headers)
                return r.status_code, r.headers.get("azureml-model-deployment", "")

            with Load(ask, threads=2, pause=0.002, max_seconds=120) as load:
                path.write_text(json.dumps(rollout_config(ups, store, **rollout)))

                def verdict() -> dict[str, Any] | None:
                    status = c.get(f"{proc.url}/rollout", headers=AUTH1).json()
                    done = status["status"] in ("promoted", "rolled_back", "paused")
                    return status if done and status.get("verdict") else None

                final = wait_for(verdict, "the rollout's verdict", timeout=90)
            after = [c.post(f"{proc.url}/score", json={}, headers=headers) for _ in range(20)]
            final["after"] = {r.headers["azureml-model-deployment"] for r in after}
            final["store"] = json.loads(store.read_text())
            if while_up is not None:
                while_up(proc, final)
    return final, load


def test_good_candidate_promotes_through_every_step(tmp_path: Path) -> None:
    gates = {**GATES, "min_agreement_pct": 98}
    said: list[str] = []
    final, load = run_rollout(
        tmp_path,
        (),
        SAME,
        while_up=lambda proc, status: said.append(verdict_of(proc, status)),
        gates=gates,
        steps=[25, 50, 100],
    )
    assert said == ["promoted"]  # `pulumi up` returns
    assert final["status"] == "promoted", json.dumps({**final, "after": None})
    assert [h["live"]["green"] for h in final["history"]] == [0, 25, 50, 100]
    assert final["after"] == {"green"} and final["live"] == {"blue": 0, "green": 100}
    assert final["store"]["status"] == "promoted"  # persisted for a restart
    assert load.failures == []


def verdict_of(proc: Proc, status: dict[str, Any]) -> str:
    """What `pulumi up` reports: the verdict resource's provider, against this router."""
    props = {
        "base_url": proc.url,
        "key": KEY1,
        "ca": "",
        "rollout_id": status["id"],
        "timeout_s": 30,
    }
    provider = _VerdictProvider()
    refreshed = provider.read(status["id"], props).outs  # `pulumi refresh`
    assert (refreshed["status"], refreshed["live"]) == (status["status"], status["live"])
    recorded = provider.create(props).outs
    try:
        fail_on_verdict(recorded)  # what `OnlineEndpoint` does with it in `up`
    except pulumi.RunError as exc:
        return str(exc)
    return str(recorded["status"])


def test_five_percent_500s_roll_back_at_the_first_step(tmp_path: Path) -> None:
    said: list[str] = []
    final, load = run_rollout(
        tmp_path,
        ("--fail-every", "20"),
        AUTH1,
        while_up=lambda proc, status: said.append(verdict_of(proc, status)),
    )
    assert said[0].startswith(
        "rollout of 'green' rolled back at step 1 of 3 (5%): gate error_rate: error rate "
    ), said
    assert "live split now {'blue': 100, 'green': 0}" in said[0], said
    assert final["status"] == "rolled_back", final
    verdict = final["verdict"]
    assert (verdict["gate"], verdict["step"]) == ("error_rate", 1), verdict
    assert verdict["reason"].startswith("error rate "), verdict
    assert final["after"] == {"blue"} and final["live"] == {"blue": 100, "green": 0}
    # Only green failed, and only while it had its 5%: each failure is a 500 green answered.
    assert load.failures and all(f.label.startswith("HTTP 500") for f in load.failures)
    assert len(load.failures) <= verdict["figures"]["failed"] + 2, load.report()


def test_slow_candidate_rolls_back_on_p99(tmp_path: Path) -> None:
    final, _ = run_rollout(tmp_path, ("--delay-ms", "60"), AUTH1)
    assert final["status"] == "rolled_back", final
    assert final["verdict"]["gate"] == "p99", final["verdict"]
    assert final["after"] == {"blue"}


def test_disagreeing_candidate_is_refused_before_live_traffic(tmp_path: Path) -> None:
    gates = {**GATES, "min_agreement_pct": 98}
    final, load = run_rollout(tmp_path, (), AUTH1, gates=gates)  # answers name the deployment
    assert final["status"] == "rolled_back", final
    verdict = final["verdict"]
    assert (verdict["gate"], verdict["step"]) == ("agreement", 0), verdict
    assert "before live traffic" in verdict["where"]
    assert {a.label for a in load.answers} == {"blue"}  # green never answered a client


def test_admin_routes_need_the_key_and_act(tmp_path: Path, client: httpx.Client) -> None:
    with upstream("blue") as blue, upstream("green") as green:
        ups = {"blue": blue, "green": green}
        start = cfg({n: p.url for n, p in ups.items()}, {"blue": 100, "green": 0})
        start["rollout_store"] = str(tmp_path / "store.json")
        with router(tmp_path, start) as (proc, path):
            assert client.get(f"{proc.url}/rollout").status_code == 401
            assert client.post(f"{proc.url}/rollout/pause").status_code == 401
            idle = client.post(f"{proc.url}/rollout/pause", headers=AUTH1)
            assert idle.status_code == 409, idle.text
            assert "no rollout in progress" in idle.json()["error"]
            path.write_text(json.dumps(rollout_config(ups, tmp_path / "store.json", bake_s=600)))
            wait_for(
                lambda: (
                    client.get(f"{proc.url}/rollout", headers=AUTH1).json()["status"] == "baking"
                ),
                "the rollout to start",
            )
            assert client.get(f"{proc.url}/rollout/pause", headers=AUTH1).status_code == 405
            # The CLI, with the outputs a deployed stack has, pauses and shows it.
            outputs = {"scoring_uri": f"{proc.url}/score", "primary_key": KEY1, "auth_mode": "key"}
            out, err = io.StringIO(), io.StringIO()
            code = main(["rollout", "pause"], outputs=lambda _s: outputs, out=out, err=err)
            assert code == 0, err.getvalue()
            assert "rollout paused" in out.getvalue()
            assert "step 1 of 3 (5%)" in out.getvalue(), out.getvalue()
            assert "live split  blue 95%, green 5%" in out.getvalue()
            paused = client.get(f"{proc.url}/rollout", headers=AUTH1).json()
            assert paused["status"] == "paused" and paused["live"] == {"blue": 95, "green": 5}
            again = main(["rollout", "pause"], outputs=lambda _s: outputs, out=out, err=err)
            assert again == 1 and "answered 409: " in err.getvalue()
            assert "the rollout is already paused" in err.getvalue()
            promoted = client.post(f"{proc.url}/rollout/promote", headers=AUTH1).json()
            assert promoted["status"] == "promoted"
            who = {
                client.post(f"{proc.url}/score", json={}, headers=AUTH1).headers[
                    "azureml-model-deployment"
                ]
                for _ in range(10)
            }
            assert who == {"green"}


def test_preview_evidence_from_a_live_router(tmp_path: Path, client: httpx.Client) -> None:
    """What `pulumi preview` prints: the router's figures judged by the declared gates."""
    spec = RolloutSpec(steps=[5, 100], gates=Gates(min_requests=50, min_agreement_pct=98))
    with upstream("blue") as blue, upstream("green") as green:
        start = cfg({"blue": blue.url, "green": green.url}, {"blue": 100, "green": 0})
        start["mirror_traffic"] = {"green": 50}
        with router(tmp_path, start) as (proc, _):
            for _ in range(200):  # answers name the deployment: green never agrees
                assert client.post(f"{proc.url}/score", json={}, headers=AUTH1).status_code == 200
            ep = {"scoring_uri": f"{proc.url}/score", "primary_key": KEY1, "ca_certificate": ""}
            line = wait_for(
                lambda: (
                    (t := preview_evidence(spec, {"blue": 0, "green": 100}, None, ep)[1])
                    and "mirrored" in t
                    and t
                ),
                "mirror counts",
            )
    assert line.startswith("rollout evidence: green  live 0% -> 100% in 2 steps · mirrored "), line
    assert "agree 0.0% (gate 98%)" in line and line.endswith("WOULD FAIL agreement"), line
    warn, gone = preview_evidence(spec, {"blue": 0, "green": 100}, None, ep)
    assert not warn and gone.startswith("rollout evidence unavailable (URLError"), gone


def test_a_fixed_candidate_is_a_new_rollout_the_same_one_is_not(
    tmp_path: Path, client: httpx.Client
) -> None:
    """After a rollback, the file `pulumi up` writes again with nothing changed keeps the
    verdict (traffic stays on blue); the same declaration with green's new revision (its image's
    content tag: the fixed scoring script, in new pods) is a new rollout, and it promotes."""
    store = tmp_path / "rollout.json"
    with (
        upstream("blue") as blue,
        upstream("green", "--fail-every", "10") as bad,
        upstream("green") as fixed,
    ):
        start = cfg({"blue": blue.url, "green": bad.url}, {"blue": 100, "green": 0})
        start["rollout_store"] = str(store)
        with router(tmp_path, start) as (proc, path):

            def ask() -> tuple[int, str]:
                r = client.post(f"{proc.url}/score", json={"data": [[1]]}, headers=AUTH1)
                return r.status_code, r.headers.get("azureml-model-deployment", "")

            def status() -> dict[str, Any]:
                return dict(client.get(f"{proc.url}/rollout", headers=AUTH1).json())

            def declare(green_url: str, revision: str, indent: int | None = None) -> float:
                """Write the file as the components do; wait until the router serves it."""
                before = metric(client.get(f"{proc.url}/metrics").text, "router_config_generation")
                config = rollout_config({"blue": blue, "green": fixed}, store)
                config["deployments"] = {
                    "blue": {"url": blue.url, "revision": "b1"},
                    "green": {"url": green_url, "revision": revision},
                }
                path.write_text(json.dumps(config, indent=indent))
                return wait_for(
                    lambda: (
                        (
                            g := metric(
                                client.get(f"{proc.url}/metrics").text, "router_config_generation"
                            )
                        )
                        > before
                        and g
                    ),
                    "the router to reload",
                )

            def verdict() -> dict[str, Any] | None:
                now = status()
                return now if now["status"] in ("promoted", "rolled_back") else None

            with Load(ask, threads=2, pause=0.002, max_seconds=120) as load:
                declare(bad.url, "g1")
                failed = wait_for(verdict, "the rollback", timeout=90)
                assert failed["status"] == "rolled_back", failed
                said = verdict_of(proc, failed)
                assert "Fix the candidate (its scoring script, model or environment" in said
                # `pulumi up` again with nothing changed: the same rollout, as it ended.
                declare(bad.url, "g1", indent=1)
                again = status()
                assert (again["id"], again["status"]) == (failed["id"], "rolled_back"), again
                assert again["live"] == {"blue": 100, "green": 0}
                # Green's scoring script fixed: new pods, a new content tag, nothing else.
                declare(fixed.url, "g2")
                retried = status()
                assert retried["id"] != failed["id"], retried
                assert retried["status"] in ("baking", "promoted"), retried
                assert retried["start"] == {"blue": 100, "green": 0}, retried
                promoted = wait_for(verdict, "the retried rollout's verdict", timeout=90)
            assert promoted["status"] == "promoted", json.dumps(promoted)
            assert promoted["id"] == retried["id"]
            assert verdict_of(proc, promoted) == "promoted"  # `pulumi up` returns
            assert json.loads(store.read_text())["id"] == promoted["id"]
    # Only the bad green failed requests (a 500 it answered); the fixed one promoted.
    assert load.failures and all(f.label.startswith("HTTP 500") for f in load.failures)
