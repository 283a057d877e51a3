"""What mirrored requests tell about a candidate deployment: counts, statuses, latency, equality.

The client only ever sees the live response; the mirror's copy is compared with it and
counted here, so ``GET /mirror/summary`` and ``/metrics`` show whether the candidate
answers like the live deployment before it takes real traffic.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from scoring.common.prometheus import Histogram

#: Mirror calls in flight at once; above it copies are skipped (counted) to protect live traffic.
MIRROR_MAX_IN_FLIGHT = 128


def same_answer(a: bytes, b: bytes) -> bool:
    """Equal bytes, or equal JSON values (key order and spacing do not count)."""
    if a == b:
        return True
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


@dataclass
class MirrorStats:
    """Counters for one mirror deployment."""

    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    equal: int = 0
    different: int = 0
    not_compared: int = 0
    skipped: int = 0
    latency: Histogram = field(default_factory=Histogram)

    def record(
        self,
        status: int | None,
        seconds: float,
        error: str | None,
        live: tuple[int, bytes] | None,
        body: bytes = b"",
    ) -> None:
        """One finished mirror call; ``live`` is the live (status, body) or None if it failed."""
        self.sent += 1
        self.latency.observe(seconds)
        if status is None:
            self.errors[error or "error"] = self.errors.get(error or "error", 0) + 1
            self.not_compared += 1
            return
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if live is None:
            self.not_compared += 1
        elif live[0] == status and same_answer(live[1], body):
            self.equal += 1
        else:
            self.different += 1

    def summary(self) -> dict[str, object]:
        compared = self.equal + self.different
        return {
            "sent": self.sent,
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(sorted(self.errors.items())),
            "equal": self.equal,
            "different": self.different,
            "not_compared": self.not_compared,
            "skipped_overload": self.skipped,
            "equal_ratio": round(self.equal / compared, 4) if compared else None,
            "latency_ms": {
                "mean": round(self.latency.total / self.latency.n * 1000, 3)
                if self.latency.n
                else None,
                "p50_le": _ms(self.latency.quantile(0.5)),
                "p99_le": _ms(self.latency.quantile(0.99)),
            },
        }


def _ms(seconds: float | None) -> float | None:
    """Milliseconds, or None for no value or the +Inf bucket (JSON has no Infinity)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return round(seconds * 1000, 3)
