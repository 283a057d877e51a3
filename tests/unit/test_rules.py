"""Name and removal rules and the traffic plan: exact messages, since users act on them.

The traffic and mirror rules are `scoring.router.traffic`'s (re-exported by `components.rules`):
tests/unit/test_traffic.py."""

from __future__ import annotations

import pytest

from components import rules

pytestmark = pytest.mark.components


@pytest.mark.parametrize("name", ["blue", "green-v2", "a", "b" * 63, "x1-2y"])
def test_valid_names_pass(name: str) -> None:
    assert rules.check_name("deployments[0].name", name) == []


@pytest.mark.parametrize("name", ["Green_v2", "-blue", "blue-", "1blue", "b" * 64, "blue.v2"])
def test_bad_names_name_the_field_and_value(name: str) -> None:
    assert rules.check_name("deployments[1].name", name) == [
        f"deployments[1].name: {name!r} is not DNS-1123 (lowercase letters, digits, '-', starts "
        f"with a letter, ends with a letter or digit, <= 63 chars)"
    ]


def test_empty_name() -> None:
    assert rules.check_name("endpoint.name", "") == [
        "endpoint.name: '' is empty; use lowercase letters, digits and '-'"
    ]


def test_object_name_too_long_names_both_parts() -> None:
    [msg] = rules.check_object_name("deployments[0].name", "e" * 40, "d" * 30)
    assert msg.startswith("deployments[0].name: 'dddddddddddddddddddddddddddddd' with endpoint ")
    assert "(71 chars)" in msg


def test_removal_of_deployment_with_live_traffic_refused() -> None:
    assert rules.check_removal({"blue": 100, "green": 0}, {}, ["green"]) == [
        "deployments: 'blue' is removed but still takes 100% live traffic in the deployed "
        "stack; set endpoint.traffic.blue to 0, run `pulumi up`, then remove it"
    ]


def test_removal_of_mirror_target_refused_and_drained_one_allowed() -> None:
    assert rules.check_removal({"blue": 100, "green": 0}, {"green": 10}, ["blue"]) == [
        "deployments: 'green' is removed but still takes 10% mirrored traffic in the deployed "
        "stack; set endpoint.mirror_traffic.green to 0, run `pulumi up`, then remove it"
    ]
    assert rules.check_removal({"blue": 0, "green": 100}, {}, ["green"]) == []
    assert rules.check_removal(None, None, ["green"]) == []


def test_traffic_plan_shift() -> None:
    plan = rules.traffic_plan(
        {"blue": 100, "green": 0}, {"blue": 90, "green": 10}, {}, {}, ["blue", "green"]
    )
    assert plan == [
        "traffic plan:",
        "  blue        live 100% -> 90%   mirror 0% -> 0%    changes",
        "  green       live 0% -> 10%     mirror 0% -> 0%    changes",
    ]


def test_traffic_plan_first_deployment_new_and_removed() -> None:
    assert rules.traffic_plan(None, {"blue": 100}, None, {}, ["blue"]) == [
        "traffic plan (first deployment):",
        "  blue        live - -> 100%     mirror 0% -> 0%",
    ]
    plan = rules.traffic_plan(
        {"blue": 100, "old": 0},
        {"blue": 100, "green": 0},
        {"old": 0},
        {"green": 10},
        ["blue", "green"],
    )
    assert plan == [
        "traffic plan:",
        "  blue        live 100% -> 100%  mirror 0% -> 0%    unchanged",
        "  green       live - -> 0%       mirror 0% -> 10%   new",
        "  old         live 0% -> -       mirror 0% -> -     removed",
    ]
