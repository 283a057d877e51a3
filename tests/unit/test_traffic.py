"""Traffic and mirror rules (exact messages: users act on them), weighted choice and mirror
decision: pure functions driven with fixed numbers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from scoring.router.traffic import Split, check_mirror, check_traffic, mirror_target, should_mirror

pytestmark = pytest.mark.router

DEPLOYMENTS = ["blue", "green"]
T, M = "endpoint.traffic", "endpoint.mirror_traffic"  # the paths preview names


@pytest.mark.parametrize(
    "traffic",
    [{"blue": 100}, {"blue": 90, "green": 10}, {}, {"blue": 0}, {"blue": 0, "green": 100}],
)
def test_traffic_sums_to_0_or_100(traffic: dict[str, int]) -> None:
    assert check_traffic(traffic, DEPLOYMENTS, T) == []


def test_traffic_bad_sum() -> None:
    assert check_traffic({"blue": 60, "green": 30}, DEPLOYMENTS, T) == [
        "endpoint.traffic: values sum to 90 (blue=60, green=30); must be 0 or 100"
    ]


def test_traffic_unknown_deployment() -> None:
    assert check_traffic({"blue": 50, "red": 50}, DEPLOYMENTS, T) == [
        "endpoint.traffic.red: no deployment named 'red' in this endpoint "
        "(deployments: blue, green)"
    ]
    assert check_traffic({"blue": 100}, [], "traffic") == [
        "traffic.blue: no deployment named 'blue' in this endpoint (deployments: none)"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-5, "endpoint.traffic.blue: -5 is out of range; use an integer 0..100"),
        (101, "endpoint.traffic.blue: 101 is out of range; use an integer 0..100"),
        (50.5, "endpoint.traffic.blue: 50.5 is not a whole percent; use an integer 0..100"),
        (True, "endpoint.traffic.blue: True is not a whole percent; use an integer 0..100"),
    ],
)
def test_traffic_bad_values(value: object, message: str) -> None:
    assert check_traffic({"blue": value}, DEPLOYMENTS, T) == [message]  # type: ignore[dict-item]


def test_mirror_ok() -> None:
    assert check_mirror({"green": 10}, {"blue": 100}, DEPLOYMENTS, M) == []
    assert check_mirror({"green": 50, "blue": 0}, {"blue": 100}, DEPLOYMENTS, M) == []


def test_mirror_above_limit() -> None:
    assert check_mirror({"green": 60}, {"blue": 100}, DEPLOYMENTS, M) == [
        "endpoint.mirror_traffic.green: 60% is above the 50% mirror limit; use 0..50"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-5, "mirror_traffic.green: -5 is out of range; use an integer 0..50"),
        (150, "mirror_traffic.green: 150 is out of range; use an integer 0..50"),
        (12.5, "mirror_traffic.green: 12.5 is not a whole percent; use an integer 0..50"),
    ],
)
def test_mirror_bad_values_suggest_the_mirror_range(value: object, message: str) -> None:
    mirror: dict = {"green": value}
    assert check_mirror(mirror, {"blue": 100}, DEPLOYMENTS, "mirror_traffic") == [message]


def test_mirror_to_live_deployment() -> None:
    assert check_mirror({"green": 10}, {"blue": 70, "green": 30}, DEPLOYMENTS, M) == [
        "endpoint.mirror_traffic.green: 'green' takes live traffic (30%); mirror only to a "
        "deployment at 0%"
    ]


def test_mirror_to_two_deployments() -> None:
    names = ["blue", "green", "red"]
    assert check_mirror({"green": 10, "red": 5}, {"blue": 100}, names, M) == [
        "endpoint.mirror_traffic: mirrors to 2 deployments (green, red); mirror to one "
        "deployment at most"
    ]


def test_mirror_unknown_deployment() -> None:
    assert check_mirror({"red": 10}, {"blue": 100}, DEPLOYMENTS, M) == [
        "endpoint.mirror_traffic.red: no deployment named 'red' in this endpoint "
        "(deployments: blue, green)"
    ]


def test_preview_uses_these_rules() -> None:
    """One copy: components.rules (preview, infra config) re-exports the router's rules."""
    from components import rules

    assert (rules.check_traffic, rules.check_mirror) == (check_traffic, check_mirror)


def test_choose_by_cumulative_bounds() -> None:
    split = Split.from_traffic({"green": 10, "blue": 90, "idle": 0})
    assert split.names == ("blue", "green")  # 0% left out, sorted
    assert split.choose(0.0) == "blue"
    assert split.choose(0.8999) == "blue"
    assert split.choose(0.9) == "green"
    assert split.choose(0.99999) == "green"


def test_no_traffic_chooses_nothing() -> None:
    assert Split.from_traffic({}).choose(0.5) is None
    assert Split.from_traffic({"blue": 0}).empty


def test_split_frequencies_match_weights() -> None:
    split = Split.from_traffic({"a": 50, "b": 30, "c": 20})
    rng = random.Random(7)
    seen = Counter(split.choose(rng.random()) for _ in range(20_000))
    for name, pct in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(seen[name] / 20_000 - pct) < 0.015, seen


def test_mirror_target_and_decision() -> None:
    assert mirror_target({}) == (None, 0.0)
    assert mirror_target({"green": 0}) == (None, 0.0)
    assert mirror_target({"blue": 0, "green": 20}) == ("green", 0.2)
    assert should_mirror(0.2, 0.19, pinned=False)
    assert not should_mirror(0.2, 0.2, pinned=False)
    assert not should_mirror(0.2, 0.0, pinned=True)
    assert not should_mirror(0.0, 0.0, pinned=False)


# The router's split and mirror path through an injected in-process client (no sockets).


def test_router_split_and_mirror_with_an_in_process_client() -> None:
    import asyncio
    import json

    from scoring.router.config import load_secrets, parse_config
    from scoring.router.dispatch import MIRROR_MAX_IN_FLIGHT, Request, Router, RouterState
    from scoring.router.upstream import UpstreamError, UpstreamResponse

    class FakeClient:
        """Answers like a deployment would; some mirror copies find green down."""

        def __init__(self) -> None:
            self.calls: list[tuple[str, bytes]] = []

        def send(self, target, method, path, headers, body, timeout, on_done):
            self.calls.append((target.name, path))
            n = len(self.calls)
            # Pinned requests are tagged by the test; some mirror copies find green down.
            copy = target.name == "green" and (b"x-test", b"pinned") not in headers
            if copy and n % 3 == 0:
                result = (None, UpstreamError("connect", target, "Connection refused"))
            else:
                result = (
                    UpstreamResponse(
                        200,
                        [(b"content-type", b"application/json")],
                        b'{"y": 1}' if target.name == "green" else b'{"y":1}',
                    ),
                    None,
                )
            asyncio.get_running_loop().call_soon(on_done, *result)

        async def aclose(self) -> None:
            return None

    cfg = parse_config(
        json.dumps(
            {
                "endpoint_name": "diabetes",
                "auth_mode": "key",
                "deployments": {"blue": {"url": "http://b:1"}, "green": {"url": "http://g:1"}},
                "traffic": {"blue": 100},
                "mirror_traffic": {"green": 50},
            }
        )
    )
    secrets = load_secrets(cfg, env={"ML_ENDPOINTS_PRIMARY_KEY": "k"})

    async def run() -> tuple[list[tuple[int, dict[bytes, bytes], bytes]], Router, FakeClient]:
        client = FakeClient()
        router = Router(RouterState.build(cfg, secrets), client=client)
        rng = random.Random(3)
        router._rand = rng.random
        answers: list[tuple[int, dict[bytes, bytes], bytes]] = []
        for i in range(400):
            pin = b"green" if i % 10 == 0 else None
            tag = [(b"x-test", b"pinned")] if pin else []
            req = Request(b"POST", b"/score", b"", tag, b"{}", True, b"Bearer k", pin)
            router.handle(req, lambda s, h, b: answers.append((s, dict(h), b)))
        for _ in range(10):
            await asyncio.sleep(0)
        return answers, router, client

    answers, router, client = asyncio.run(run())
    assert len(answers) == 400 and {s for s, _, _ in answers} == {200}
    assert Counter(h[b"azureml-model-deployment"] for _, h, _ in answers) == {
        b"blue": 360,
        b"green": 40,
    }
    mirrored = [c for c in client.calls if c[0] == "green"]
    stats = router.metrics.mirrors["green"]
    assert stats.sent == len(mirrored) - 40  # pinned requests to green are not mirrored
    # All 400 were dispatched before any answer: copies beyond the in-flight cap are skipped.
    assert stats.sent == MIRROR_MAX_IN_FLIGHT
    assert 180 - 45 <= stats.sent + stats.skipped <= 180 + 45  # 50% of 360 unpinned
    # Equal as JSON values though the bytes differ; failed copies are not compared.
    assert stats.equal + stats.not_compared == stats.sent and stats.different == 0
    assert stats.errors == {"connect": stats.not_compared} and stats.not_compared > 0
    assert router.in_flight == 0 and router.mirrors_in_flight == 0
