"""Traffic and mirror: the rules a configuration must meet, and the per-request choice.

The rules (``check_name``, ``check_traffic``, ``check_mirror``) are the one copy used both by
the router loading its config file and by ``pulumi preview`` (``components.rules`` re-exports
them), so the two always accept the same names and tables with the same messages. Each
returns one line per problem, starting with the key path the caller names, instead of raising.

A ``Split`` is built once per checked config (cumulative weights); choosing is one bisect over
a random number the caller passes in, so tests drive it with fixed numbers. Pure functions,
no I/O.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_MIRROR_PERCENT = 50
"""A candidate gets at most half the requests copied to it."""

DNS1123_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
"""Endpoint and deployment names: a DNS-1123 label that starts with a letter (a Service name)."""
MAX_NAME = 63


def name_problem(value: object) -> str | None:
    """Why ``value`` cannot name an endpoint or deployment (None when it can)."""
    if not isinstance(value, str) or not value:
        return f"{value!r} is empty; use lowercase letters, digits and '-'"
    if len(value) > MAX_NAME or not DNS1123_LABEL.match(value):
        return (
            f"{value!r} is not DNS-1123 (lowercase letters, digits, '-', starts with a "
            f"letter, ends with a letter or digit, <= {MAX_NAME} chars)"
        )
    return None


def check_name(path: str, value: object) -> list[str]:
    """A name for Kubernetes objects and Service DNS: a DNS-1123 label starting with a letter."""
    problem = name_problem(value)
    return [f"{path}: {problem}"] if problem else []


def check_traffic(traffic: Mapping[str, int], deployments: Iterable[str], path: str) -> list[str]:
    """Live traffic: every key names a deployment, whole percents, sum 0 (no traffic) or 100."""
    names = list(deployments)
    problems: list[str] = []
    for key, value in traffic.items():
        problems += _unknown(path, key, names) + _percent_problems(f"{path}.{key}", value, 100)
    if problems:
        return problems
    total = sum(traffic.values())
    if total not in (0, 100):
        parts = ", ".join(f"{k}={v}" for k, v in traffic.items())
        problems.append(f"{path}: values sum to {total} ({parts}); must be 0 or 100")
    return problems


def check_mirror(
    mirror: Mapping[str, int], traffic: Mapping[str, int], deployments: Iterable[str], path: str
) -> list[str]:
    """Mirror: one deployment at most, <= 50%, never one that takes live traffic."""
    names = list(deployments)
    problems: list[str] = []
    for key, value in mirror.items():
        bad = _unknown(path, key, names) or _percent_problems(
            f"{path}.{key}", value, MAX_MIRROR_PERCENT
        )
        if bad:
            problems += bad
            continue
        if value > MAX_MIRROR_PERCENT:
            problems.append(
                f"{path}.{key}: {value}% is above the {MAX_MIRROR_PERCENT}% mirror limit; "
                f"use 0..{MAX_MIRROR_PERCENT}"
            )
        live = traffic.get(key, 0)
        if value > 0 and isinstance(live, int) and live > 0:
            problems.append(
                f"{path}.{key}: {key!r} takes live traffic ({live}%); mirror only to a "
                f"deployment at 0%"
            )
    targets = [k for k, v in mirror.items() if isinstance(v, int) and v > 0]
    if len(targets) > 1:
        problems.append(
            f"{path}: mirrors to {len(targets)} deployments ({', '.join(targets)}); "
            f"mirror to one deployment at most"
        )
    return problems


def _unknown(path: str, key: str, names: list[str]) -> list[str]:
    if key in names:
        return []
    return [
        f"{path}.{key}: no deployment named {key!r} in this endpoint "
        f"(deployments: {', '.join(names) or 'none'})"
    ]


def _percent_problems(path: str, value: object, use: int) -> list[str]:
    """An integer 0..100 (bools are not percents); ``use`` is the range the message suggests."""
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{path}: {value!r} is not a whole percent; use an integer 0..{use}"]
    if not 0 <= value <= 100:
        return [f"{path}: {value} is out of range; use an integer 0..{use}"]
    return []


@dataclass(frozen=True)
class Split:
    """Deployments with live traffic and their cumulative percent bounds."""

    names: tuple[str, ...]
    bounds: tuple[float, ...]

    @classmethod
    def from_traffic(cls, traffic: dict[str, int]) -> Split:
        """Keep deployments above 0%, in a stable (sorted) order."""
        names: list[str] = []
        bounds: list[float] = []
        total = 0.0
        for name in sorted(traffic):
            pct = traffic[name]
            if pct > 0:
                total += pct
                names.append(name)
                bounds.append(total)
        if total:
            bounds = [b / total for b in bounds]
        return cls(tuple(names), tuple(bounds))

    @property
    def empty(self) -> bool:
        return not self.names

    def choose(self, r: float) -> str | None:
        """The deployment for a uniform ``r`` in [0, 1); None when no deployment has traffic."""
        if not self.names:
            return None
        i = bisect_right(self.bounds, r)
        return self.names[min(i, len(self.names) - 1)]


def mirror_target(mirror_traffic: dict[str, int]) -> tuple[str | None, float]:
    """The one deployment that receives mirrored copies and its share in [0, 1]."""
    for name, pct in sorted(mirror_traffic.items()):
        if pct > 0:
            return name, pct / 100.0
    return None, 0.0


def should_mirror(share: float, r: float, pinned: bool) -> bool:
    """Mirror an unpinned request when ``r`` (uniform in [0, 1)) falls under ``share``."""
    return not pinned and r < share
