"""Preview and the router accept the same endpoint and deployment names (one DNS-1123 rule)."""

from __future__ import annotations

import json

import pytest

from components import rules
from scoring.router import traffic
from scoring.router.config import ConfigError, parse_config

RULE = (
    "is not DNS-1123 (lowercase letters, digits, '-', starts with a letter, ends with a letter "
    "or digit, <= 63 chars)"
)


def router_problems(endpoint: str, deployment: str) -> list[str]:
    config = {"endpoint_name": endpoint, "deployments": {deployment: {"url": "http://d:1"}}}
    try:
        parse_config(json.dumps(config))
    except ConfigError as exc:
        return exc.problems
    return []


def test_preview_uses_the_router_rule() -> None:
    assert rules.check_name is traffic.check_name


@pytest.mark.parametrize("name", ["1blue", "9", "blue-", "Blue", "a" * 64, "b_1"])
def test_both_refuse(name: str) -> None:
    assert rules.check_name("deployments[0].name", name) == [
        f"deployments[0].name: {name!r} {RULE}"
    ]
    assert router_problems(name, "blue") == [f"endpoint_name: {name!r} {RULE}"]
    assert router_problems("diabetes", name) == [f"deployments: {name!r} {RULE}"]


@pytest.mark.parametrize("name", ["blue", "b", "green-2", "a" * 63])
def test_both_accept(name: str) -> None:
    assert rules.check_name("deployments[0].name", name) == []
    assert router_problems(name, name) == []
