"""Weighted choice of a deployment and the mirror decision: pure functions, no I/O.

A ``Split`` is built once per config (cumulative weights); choosing is one bisect over a
random number the caller passes in, so tests drive it with fixed numbers.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass


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
