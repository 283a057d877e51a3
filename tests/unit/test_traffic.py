"""Weighted choice and mirror decision: pure functions driven with fixed numbers."""

from __future__ import annotations

import random
from collections import Counter

from scoring.traffic import Split, mirror_target, should_mirror


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
