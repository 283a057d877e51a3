"""Latency histograms and the Prometheus text exposition format, for both programs.

``BUCKETS`` are the ``le`` bounds (seconds) of every latency histogram. ``Exposition``
builds the text ``GET /metrics`` returns: a ``# HELP``/``# TYPE`` head per family, then its
samples; whole numbers print without a decimal point.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Latency histogram bounds in seconds (Prometheus ``le`` buckets); a last slot counts +Inf.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BOUNDS = (*(repr(b) for b in BUCKETS), "+Inf")


@dataclass
class Histogram:
    """Latency histogram: counts per bucket (cumulated when rendered), sum, count."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` (None when empty)."""
        if not self.n:
            return None
        rank, seen = q * self.n, 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return BUCKETS[i] if i < len(BUCKETS) else float("inf")
        return float("inf")


def number(value: float) -> str:
    """A sample value: ``3`` for whole numbers, else the float's repr."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Exposition:
    """The lines of one ``/metrics`` answer, built family by family."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, text: str) -> None:
        """Start a metric family: its help text and type (counter, gauge, histogram)."""
        self.lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, labels: str = "") -> None:
        """One sample; ``labels`` is the inside of the braces (``a="x",b="y"``)."""
        if labels:
            self.lines.append(f"{name}{{{labels}}} {number(value)}")
        else:
            self.lines.append(f"{name} {number(value)}")

    def by_label(
        self, name: str, kind: str, text: str, label: str, values: Mapping[str, float]
    ) -> None:
        """A family with one sample per value of one label, in sorted order."""
        self.family(name, kind, text)
        for key, value in sorted(values.items()):
            self.sample(name, value, f'{label}="{key}"')

    def histogram(
        self,
        name: str,
        labels: str,
        counts: Sequence[float],
        total: float,
        bounds: Sequence[float] = BUCKETS,
    ) -> None:
        """A histogram's cumulative buckets, sum and count; ``counts`` has one slot per
        bucket of ``bounds`` (default ``BUCKETS``) and one for +Inf; ``labels`` may be empty."""
        les = _BOUNDS if bounds is BUCKETS else (*(number(b) for b in bounds), "+Inf")
        head = f"{labels}," if labels else ""
        tail = f"{{{labels}}}" if labels else ""
        cumulative = 0.0
        for le, n in zip(les, counts, strict=True):
            cumulative += n
            self.lines.append(f'{name}_bucket{{{head}le="{le}"}} {number(cumulative)}')
        self.lines.append(f"{name}_sum{tail} {number(total)}")
        self.lines.append(f"{name}_count{tail} {number(cumulative)}")

    def render(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()
