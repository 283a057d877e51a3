"""The router's counters, rendered in the Prometheus text format for ``GET /metrics``.

Plain ints and dicts on the hot path (no locks: the router is one thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scoring.common.prometheus import Exposition, Histogram
from scoring.router.mirror import MIRROR_MAX_IN_FLIGHT, MirrorStats

if TYPE_CHECKING:
    from scoring.router.dispatch import Router


@dataclass
class DeploymentMetrics:
    """Live-traffic counters for one deployment."""

    responses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)


class Metrics:
    """Counters rendered in Prometheus text format; plain ints on the hot path (no locks)."""

    def __init__(self) -> None:
        self.deployments: dict[str, DeploymentMetrics] = {}
        self.mirrors: dict[str, MirrorStats] = {}
        self.rejected: dict[tuple[int, str], int] = {}
        self.reloads: dict[str, int] = {"ok": 0, "rejected": 0}

    def deployment(self, name: str) -> DeploymentMetrics:
        m = self.deployments.get(name)
        if m is None:
            m = self.deployments[name] = DeploymentMetrics()
        return m

    def mirror(self, name: str) -> MirrorStats:
        m = self.mirrors.get(name)
        if m is None:
            m = self.mirrors[name] = MirrorStats()
        return m

    def reject(self, status: int, reason: str) -> None:
        key = (status, reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def render(self, router: Router) -> bytes:
        out = Exposition()
        deployments, mirrors = sorted(self.deployments.items()), sorted(self.mirrors.items())
        by_outcome = (
            (
                "router_requests_total",
                "Live requests answered through a deployment, by upstream status.",
                "status",
                lambda m: m.responses,
            ),
            (
                "router_upstream_errors_total",
                "Live requests a deployment gave no response to (connect, timeout, pool, closed).",
                "kind",
                lambda m: m.errors,
            ),
        )
        for name, text, label, counts in by_outcome:
            out.family(name, "counter", text)
            for dep, m in deployments:
                for outcome, n in sorted(counts(m).items()):
                    out.sample(name, n, f'deployment="{dep}",{label}="{outcome}"')
        out.family(
            "router_request_duration_seconds",
            "histogram",
            "Time from routing to the deployment's full response.",
        )
        for dep, m in deployments:
            h = m.latency
            out.histogram(
                "router_request_duration_seconds", f'deployment="{dep}"', h.counts, h.total
            )
        out.family(
            "router_rejected_total",
            "counter",
            "Requests the router answered itself (auth, routing, bad request).",
        )
        for (status, reason), n in sorted(self.rejected.items()):
            out.sample("router_rejected_total", n, f'status="{status}",reason="{reason}"')
        out.family("router_mirror_requests_total", "counter", "Mirrored copies, by mirror status.")
        for dep, s in mirrors:
            for outcome, n in [*sorted(s.statuses.items()), *sorted(s.errors.items())]:
                out.sample(
                    "router_mirror_requests_total", n, f'deployment="{dep}",status="{outcome}"'
                )
        out.family(
            "router_mirror_comparisons_total",
            "counter",
            "Mirror responses compared with the live one: equal, different, not_compared.",
        )
        for dep, s in mirrors:
            for result in ("equal", "different", "not_compared"):
                out.sample(
                    "router_mirror_comparisons_total",
                    getattr(s, result),
                    f'deployment="{dep}",result="{result}"',
                )
        out.family(
            "router_mirror_skipped_total",
            "counter",
            f"Mirror copies skipped because {MIRROR_MAX_IN_FLIGHT} were already in flight.",
        )
        for dep, s in mirrors:
            out.sample("router_mirror_skipped_total", s.skipped, f'deployment="{dep}"')
        out.family("router_mirror_duration_seconds", "histogram", "Mirror call latency.")
        for dep, s in mirrors:
            h = s.latency
            out.histogram(
                "router_mirror_duration_seconds", f'deployment="{dep}"', h.counts, h.total
            )
        out.family("router_in_flight_requests", "gauge", "Requests waiting for a deployment now.")
        out.sample("router_in_flight_requests", router.in_flight)
        out.by_label(
            "router_config_reloads_total",
            "counter",
            "Config reloads by result.",
            "result",
            self.reloads,
        )
        state = router.state
        out.family("router_config_generation", "gauge", "Generation of the config now serving.")
        out.sample("router_config_generation", state.generation)
        out.family("router_traffic_percent", "gauge", "Live traffic percent per deployment.")
        for dep in sorted(state.targets):
            pct = state.live.get(dep, 0)
            out.sample("router_traffic_percent", pct, f'deployment="{dep}"')
        return out.render()
