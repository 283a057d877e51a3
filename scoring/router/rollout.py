"""Progressive rollouts judged by the router: the declaration, its rules and the state machine.

``RolloutSpec`` is the one declaration of a rollout (steps, bake time, gates, what to do on a
breach): the router config file carries it as ``rollout`` and the stack config as
``endpoint.rollout``; ``check_rollout`` is the one copy of its cross-field rules, used by the
router and by ``pulumi preview``.

``RolloutController`` runs inside the router. It never touches the request path: a step is a
new ``RouterState`` (same config, another live split) swapped in whole, and the gates are
judged from the counters the router keeps anyway (``DeploymentMetrics`` per deployment,
``MirrorStats`` for the mirrored candidate), by taking a snapshot when a step starts and the
difference when it is judged. One replica decides (it holds the lease); its decisions live in
a ``RolloutStore`` (a file, a Kubernetes ConfigMap, or memory) that every replica follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from scoring.common.logs import get_log
from scoring.common.prometheus import BUCKETS
from scoring.router.traffic import Split, mirror_target

if TYPE_CHECKING:
    from scoring.router.dispatch import Router, RouterState
    from scoring.router.metrics import Metrics

#: Share of requests copied to the candidate while its answers are compared (agreement gate).
AGREEMENT_MIRROR_PERCENT = 50
#: The p99 gate waits for this many requests in the window on both sides (and ``min_requests``).
P99_MIN_SAMPLES = 100
#: A p99 of 100 requests is the slowest one: one scheduling hiccup. Below 1000 requests the gate
#: compares the quantile with this many requests above it instead (p90 at 100, p95 at 200).
TAIL_ABOVE = 10
#: Candidate p99 this close to the baseline's never fails the p99 gate: scheduling noise on a
#: busy node (a good candidate read 4.2 ms against 0.9 ms on loopback under load).
P99_SLACK_S = 0.005
#: How often the decider judges; a breach moves traffic back within this (plus one tick).
TICK_S = 0.2
#: How often a replica that does not decide reads the store and applies its split.
FOLLOW_S = 0.5


class Gates(BaseModel):
    """What a step must show before traffic moves on; a gate left unset is not judged."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    min_requests: int = Field(default=100, ge=1, le=10_000_000)
    """Candidate requests (or compared mirror answers) in the step's window before it is judged."""
    max_error_rate_pct: float | None = Field(default=None, ge=0, le=100)
    """Candidate 5xx answers plus upstream errors (timeouts, refused, ...), percent of its
    requests in the window."""
    max_p99_ratio: float | None = Field(default=None, ge=1, le=100)
    """Candidate p99 latency / baseline p99 over the same window (needs baseline traffic)."""
    min_agreement_pct: float | None = Field(default=None, ge=0, le=100)
    """Mirrored answers equal to the live ones, percent; judged before the first live step
    while the router copies requests to the candidate."""


class RolloutSpec(BaseModel):
    """A progressive traffic shift toward ``traffic`` (the target), judged by gates."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    steps: list[int] = Field(min_length=1, max_length=100)
    """The candidate's live share at each step, increasing, the last equal to its target share."""
    bake_s: int = Field(default=60, ge=1, le=7 * 24 * 3600)
    """Time at each step before the gates can pass it (a breach is acted on at once)."""
    gates: Gates | None = None
    """No gates: the shift happens at once, as without a rollout block."""
    on_failure: Literal["rollback", "pause"] = "rollback"
    """``rollback``: back to the split the rollout started from; ``pause``: back to the last
    split that passed, waiting for ``resume``, ``promote`` or ``abort``."""
    candidate: str | None = None
    """The deployment being rolled out; default: the one with the largest target share."""


def candidate_of(spec: RolloutSpec, traffic: Mapping[str, int]) -> str | None:
    """The deployment the steps are about (None when it cannot be told)."""
    if spec.candidate is not None:
        return spec.candidate
    top = max(traffic.values(), default=0)
    leaders = [n for n, v in traffic.items() if v == top]
    return leaders[0] if top > 0 and len(leaders) == 1 else None


def check_rollout(
    spec: RolloutSpec | None, traffic: Mapping[str, int], deployments: list[str], path: str
) -> list[str]:
    """Steps increasing and ending at the candidate's target share; candidate known."""
    if spec is None:
        return []
    problems: list[str] = []
    candidate = candidate_of(spec, traffic)
    if candidate is None:
        return [
            f"{path}.candidate: cannot tell which deployment is rolled out from traffic "
            f"{dict(traffic)}; name it (one of: {', '.join(deployments)})"
        ]
    if candidate not in deployments:
        return [
            f"{path}.candidate: no deployment named {candidate!r} in this endpoint "
            f"(deployments: {', '.join(deployments)})"
        ]
    for i, step in enumerate(spec.steps):
        if not 1 <= step <= 100:
            problems.append(f"{path}.steps[{i}]: {step} is out of range; use 1..100")
        elif i and step <= spec.steps[i - 1]:
            problems.append(
                f"{path}.steps[{i}]: {step} is not above the step before ({spec.steps[i - 1]}); "
                "steps must increase"
            )
    want = traffic.get(candidate, 0)
    if spec.steps[-1] != want:
        problems.append(
            f"{path}.steps: the last step is {spec.steps[-1]}% but the target gives "
            f"{candidate!r} {want}% (traffic); end the steps at {want}"
        )
    return problems


# --------------------------------------------------------------------------- evidence


def quantile(counts: list[int], q: float) -> float | None:
    """Quantile ``q`` (seconds) of histogram bucket counts, interpolated inside its bucket
    (the bucket's upper bound would make two close latencies look 2x apart)."""
    n = sum(counts)
    if not n:
        return None
    rank, seen = q * n, 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            lo = BUCKETS[i - 1] if i else 0.0
            hi = BUCKETS[i] if i < len(BUCKETS) else BUCKETS[-1] * 2
            return lo + (hi - lo) * (rank - seen) / c
        seen += c
    return BUCKETS[-1] * 2


@dataclass
class Tally:
    """Counts of one or more deployments at one moment (a window is a difference of two)."""

    requests: int = 0
    failed: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    equal: int = 0
    different: int = 0
    mirror_failed: int = 0

    def minus(self, other: Tally) -> Tally:
        return Tally(
            self.requests - other.requests,
            self.failed - other.failed,
            [a - b for a, b in zip(self.latency, other.latency, strict=True)],
            self.equal - other.equal,
            self.different - other.different,
            self.mirror_failed - other.mirror_failed,
        )


def tally(metrics: Metrics, names: list[str]) -> Tally:
    """Sum the live and mirror counters of ``names`` (read only; the hot path is untouched)."""
    t = Tally()
    for name in names:
        m = metrics.deployments.get(name)
        if m is not None:
            answered = sum(m.responses.values())
            errors = sum(m.errors.values())
            t.requests += answered + errors
            t.failed += errors + sum(n for s, n in m.responses.items() if s >= 500)
            t.latency = [a + b for a, b in zip(t.latency, m.latency.counts, strict=True)]
        s = metrics.mirrors.get(name)
        if s is not None:
            t.equal += s.equal
            t.different += s.different
            t.mirror_failed += sum(s.errors.values()) + sum(
                n for k, n in s.statuses.items() if k.isdigit() and int(k) >= 500
            )
    return t


@dataclass
class Verdict:
    """The gates' reading of one window: figures, and the gate that failed (if any)."""

    figures: dict[str, Any]
    failed_gate: str | None = None
    reason: str = ""
    enough: bool = False


def judge(gates: Gates, phase: str, cand: Tally, base: Tally, baseline: bool = True) -> Verdict:
    """Judge one window. ``phase`` is ``mirror`` (agreement, before live traffic) or ``live``;
    ``baseline``: some other deployment takes live traffic at this step, so the p99 gate (when
    set) must have judged before the step can pass."""
    if phase == "mirror":
        compared = cand.equal + cand.different
        agree = 100.0 * cand.equal / compared if compared else None
        figures: dict[str, Any] = {
            "mirrored_compared": compared,
            "agreement_pct": _r(agree),
            "mirror_failed": cand.mirror_failed,
        }
        v = Verdict(figures, enough=compared >= gates.min_requests)
        if not v.enough:
            return v
        if (
            gates.min_agreement_pct is not None
            and agree is not None
            and agree < gates.min_agreement_pct
        ):
            v.failed_gate = "agreement"
            v.reason = (
                f"agreement {agree:.1f}% < {gates.min_agreement_pct:g}% over {compared} "
                "mirrored requests"
            )
        return v
    rate = 100.0 * cand.failed / cand.requests if cand.requests else None
    fewest = min(cand.requests, base.requests)
    q = min(0.99, 1 - TAIL_ABOVE / fewest) if fewest > TAIL_ABOVE else 0.99
    p99_c, p99_b = quantile(cand.latency, q), quantile(base.latency, q)
    ratio = p99_c / p99_b if p99_c is not None and p99_b else None
    figures = {
        "requests": cand.requests,
        "failed": cand.failed,
        "error_rate_pct": _r(rate),
        "p99_ms": _r(p99_c * 1000 if p99_c is not None else None),
        "baseline_requests": base.requests,
        "baseline_p99_ms": _r(p99_b * 1000 if p99_b is not None else None),
        "p99_ratio": _r(ratio),
        "p99_quantile": round(q, 3),
    }
    p99_ready = fewest >= max(gates.min_requests, P99_MIN_SAMPLES)
    v = Verdict(
        figures,
        enough=cand.requests >= gates.min_requests
        and (gates.max_p99_ratio is None or not baseline or p99_ready),
    )
    if cand.requests < gates.min_requests:
        return v
    if (
        gates.max_error_rate_pct is not None
        and rate is not None
        and rate > gates.max_error_rate_pct
    ):
        v.failed_gate = "error_rate"
        v.reason = (
            f"error rate {rate:.2f}% > {gates.max_error_rate_pct:g}% "
            f"({cand.failed} of {cand.requests} requests)"
        )
    elif (
        gates.max_p99_ratio is not None
        and ratio is not None
        and p99_c is not None
        and p99_b is not None
        and p99_ready
        and ratio > gates.max_p99_ratio
        and p99_c - p99_b > P99_SLACK_S
    ):
        v.failed_gate = "p99"
        v.reason = (
            f"p99 {figures['p99_ms']} ms vs baseline {figures['baseline_p99_ms']} ms: ratio "
            f"{ratio:.2f} > {gates.max_p99_ratio:g}"
            + (f" (quantile {q:.3f} of {fewest} requests)" if q < 0.99 else "")
        )
    return v


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --------------------------------------------------------------------------- splits


def step_split(start: Mapping[str, int], candidate: str, share: int) -> dict[str, int]:
    """``candidate`` at ``share``; the others keep their start proportions of the rest, in
    whole percents summing to 100 (largest remainder)."""
    others = {n: v for n, v in start.items() if n != candidate and v > 0}
    total = sum(others.values())
    out = {n: 0 for n in start}
    out[candidate] = share
    if not total:
        out[candidate] = 100
        return out
    rest = 100 - share
    exact = {n: rest * v / total for n, v in others.items()}
    for n, x in exact.items():
        out[n] = int(x)
    left = rest - sum(out[n] for n in others)
    for n in sorted(others, key=lambda n: exact[n] - int(exact[n]), reverse=True)[:left]:
        out[n] += 1
    return out


def rollout_id(
    spec: RolloutSpec | None,
    traffic: Mapping[str, int],
    revisions: Mapping[str, str] | None = None,
) -> str:
    """Names one declared rollout: the same target, spec and revisions resume (or stay as they
    ended: a rolled-back rollout is not retried), anything else is a new rollout.

    The one owner of the name: the router (``RolloutController.configure``) and the Pulumi side
    (``OnlineEndpoint``'s ``RolloutVerdict``, ``preview_evidence``) both call it with the config
    file's ``rollout``, ``traffic`` and each ``deployments[name].revision``.

    ``revisions`` (deployment name → its ``revision``, the content tag of its image) count for
    every deployment with a share in the target: a fixed scoring script or model is a new
    rollout, as in Azure where a traffic shift is retried after the deployment is updated.
    Every target deployment rather than only those whose share changes: the share before the
    rollout is not an input (the router learns it at run time, from its store, its own live
    split or ``rollout_from``), and a baseline that keeps its share still is half of what the
    gates compared. Deployments at 0 % in the target do not count: they serve nothing once the
    rollout ends, so rebuilding a drained one neither restarts a rollout nor retries one that
    rolled back. Empty revisions (old config files, ``python -m scoring router`` by hand) leave
    the name as it was before revisions existed.
    """
    parts: list[Any] = [dict(sorted(traffic.items())), spec.model_dump() if spec else None]
    counted = {
        n: r for n, r in sorted((revisions or {}).items()) if r and int(traffic.get(n, 0)) > 0
    }
    if counted:
        parts.append(counted)
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- stores


class RolloutStore(Protocol):
    """Where the decider writes the rollout record and every replica reads it."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, record: dict[str, Any]) -> None: ...


class MemoryStore:
    """No persistence: a restart starts from the declared split (one replica only)."""

    def __init__(self) -> None:
        self.record: dict[str, Any] | None = None

    def load(self) -> dict[str, Any] | None:
        return self.record

    def save(self, record: dict[str, Any]) -> None:
        self.record = json.loads(json.dumps(record))


class FileStore:
    """A JSON file, replaced atomically (a restart of a single router resumes from it)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def save(self, record: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, sort_keys=True))
        tmp.replace(self.path)


class Lease(Protocol):
    """Who decides: ``hold()`` acquires or renews and says whether this replica decides."""

    def hold(self) -> bool: ...

    def release(self) -> None: ...


class AlwaysLeader:
    """A single router (or a test): it always decides."""

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        return None


def store_for(where: str | None) -> tuple[RolloutStore, Lease]:
    """The store and lease a config's ``rollout_store`` names: ``None`` (memory), a file path,
    or ``kubernetes:NAMESPACE/NAME`` (a ConfigMap and a Lease named NAME)."""
    if not where:
        return MemoryStore(), AlwaysLeader()
    if where.startswith("kubernetes:"):
        from scoring.router.kube import ConfigMapStore, KubeLease

        namespace, _, name = where.removeprefix("kubernetes:").partition("/")
        return ConfigMapStore(namespace, name), KubeLease(namespace, name)
    return FileStore(where), AlwaysLeader()


# --------------------------------------------------------------------------- controller

Clock = Callable[[], float]
ACTIONS = ("pause", "resume", "abort", "promote")
TERMINAL = ("promoted", "rolled_back", "aborted", "none")


class RolloutError(ValueError):
    """A command that does not apply now (400/409 for the admin route)."""

    def __init__(self, message: str, status: int = 409) -> None:
        self.message, self.status = message, status
        super().__init__(message)


class RolloutController:
    """Moves the live split through the declared steps, judging each window.

    The record (persisted, the same on every replica) holds: ``id`` (which declared rollout),
    ``status`` (``mirroring``, ``baking``, ``paused``, ``promoted``, ``rolled_back``,
    ``aborted``, ``none`` when nothing is rolled out), ``start`` / ``target`` / ``live`` /
    ``last_good`` splits, ``step`` (index into ``steps``, -1 while mirroring),
    ``step_started`` (wall time), and ``verdict`` (the last failure or promotion, with figures).
    Windows (counter snapshots) are per process: after a restart a step keeps its elapsed bake
    time but gathers its evidence anew.
    """

    def __init__(
        self,
        router: Router,
        store: RolloutStore,
        lease: Lease,
        wall: Clock = time.time,
    ) -> None:
        self.router = router
        self.store = store
        self.lease = lease
        self.wall = wall
        self.record: dict[str, Any] = {}
        self.leader = isinstance(lease, AlwaysLeader)
        self.window: tuple[Tally, Tally] | None = None
        self.figures: dict[str, Any] = {}
        self.pending_save = False
        self.queued: str | None = None

    # -- configuration

    @property
    def spec(self) -> RolloutSpec | None:
        return self.router.state.config.rollout

    def configure(self, previous_live: Mapping[str, int] | None) -> None:
        """A config was loaded (start, reload, or this replica became the decider): resume its
        rollout, start it, or shift at once; a replica that does not decide follows the store.

        ``previous_live`` is what this process served before (None at start: then the store
        says, else the declared split is taken as is).
        """
        config = self.router.state.config
        spec, target = config.rollout, dict(config.traffic)
        # A new revision of a target deployment is a new id: a new rollout from the live split.
        rid = rollout_id(spec, target, config.revisions())
        if self.leader and self.record.get("id") == rid:  # a reload of the same rollout
            self.apply()
            return
        stored = self.store.load()
        known = stored is not None and _known(stored.get("live"), config.deployments)
        self.window = None
        self.figures = {}
        if known and stored is not None and (stored.get("id") == rid or not self.leader):
            self.record = stored
            self.apply()
            return
        live = dict(stored["live"]) if known and stored is not None else None
        if live is None and previous_live:
            live = dict(previous_live)
        if live is None and config.rollout_from:
            live = dict(config.rollout_from)
        if live is not None:
            live = {n: int(live.get(n, 0)) for n in config.deployments}
        if not self.leader:
            # Nothing decided yet: keep serving what was served (never jump to the target
            # before the decider has judged); ``id`` None makes the decider-to-be decide.
            served = live if live is not None and sum(live.values()) == 100 else target
            self.record = {"id": None, "status": "waiting", "live": served, "target": target}
            self.apply()
            return
        candidate = candidate_of(spec, target) if spec else None
        if (
            spec is None
            or spec.gates is None
            or live is None
            or candidate is None
            or sum(live.values()) == 0
            or live.get(candidate, 0) >= target.get(candidate, 0)
        ):
            self.record = {"id": rid, "status": "none", "live": target, "target": target}
        else:
            self.record = {
                "id": rid,
                "status": "baking",
                "candidate": candidate,
                "start": live,
                "target": target,
                "live": live,
                "last_good": live,
                "step": -1,
                "step_started": self.wall(),
                "verdict": None,
            }
            self._enter(-1 if spec.gates.min_agreement_pct is not None else 0)
            _log(
                f"rollout {rid} of {candidate!r} starts from {live} toward {target} "
                f"in steps {spec.steps}",
                "rollout",
            )
        self.apply()
        self.pending_save = True

    # -- applying

    def apply(self) -> None:
        """Serve the record's live split now (and the agreement mirror while mirroring)."""
        router = self.router
        state = router.state
        live = self.record.get("live") or dict(state.config.traffic)
        mirroring = self.record.get("status") == "mirroring"
        router.state = with_live(state, live, self.record.get("candidate") if mirroring else None)

    def _enter(self, step: int) -> None:
        """Start step ``step`` (-1: the mirror phase) with a fresh window."""
        spec = self.spec
        assert spec is not None
        rec = self.record
        start, candidate = rec["start"], rec["candidate"]
        while 0 <= step < len(spec.steps) - 1 and spec.steps[step] <= start.get(candidate, 0):
            step += 1  # the candidate already has that much
        rec["step"] = step
        rec["step_started"] = self.wall()
        rec["status"] = "mirroring" if step < 0 else "baking"
        if step >= 0:
            share = spec.steps[step]
            rec["live"] = (
                dict(rec["target"])
                if step == len(spec.steps) - 1
                else step_split(start, candidate, share)
            )
        self.window = self._tallies()  # counts from the moment the step's split is served

    # -- deciding

    def tick(self) -> None:
        """Judge the current window (decider only); act on a breach or a passed step."""
        rec, spec = self.record, self.spec
        if rec.get("status") not in ("mirroring", "baking") or spec is None or spec.gates is None:
            return
        now_c, now_b = self._tallies()
        base_names = [n for n, v in rec["live"].items() if v > 0 and n != rec["candidate"]]
        if self.window is None:
            self.window = (now_c, now_b)
            return
        phase = "mirror" if rec["status"] == "mirroring" else "live"
        v = judge(
            spec.gates,
            phase,
            now_c.minus(self.window[0]),
            now_b.minus(self.window[1]),
            baseline=bool(base_names),
        )
        elapsed = self.wall() - float(rec["step_started"])
        self.figures = {**v.figures, "bake_left_s": round(max(0.0, spec.bake_s - elapsed), 1)}
        if v.failed_gate:
            self._fail(v)
        elif v.enough and elapsed >= spec.bake_s:
            self._pass(v)

    def _tallies(self) -> tuple[Tally, Tally]:
        """The candidate's and the baseline's (other live deployments') counters now."""
        rec, metrics = self.record, self.router.metrics
        base = [n for n, v in rec["live"].items() if v > 0 and n != rec["candidate"]]
        return tally(metrics, [rec["candidate"]]), tally(metrics, base)

    def _where(self) -> str:
        spec, step = self.spec, int(self.record["step"])
        if step < 0 or spec is None:
            return "the mirror phase (before live traffic)"
        return f"step {step + 1} of {len(spec.steps)} ({spec.steps[step]}%)"

    def _fail(self, v: Verdict) -> None:
        rec, spec = self.record, self.spec
        assert spec is not None
        where = self._where()
        pause = spec.on_failure == "pause"
        rec["live"] = dict(rec["last_good"] if pause else rec["start"])
        rec["status"] = "paused" if pause else "rolled_back"
        rec["verdict"] = {
            "result": "failed",
            "gate": v.failed_gate,
            "step": rec["step"] + 1,
            "where": where,
            "reason": v.reason,
            "figures": v.figures,
            "at": self.wall(),
        }
        self.apply()  # traffic moves back in this tick, before anything is written
        self.pending_save = True
        _log(
            f"rollout {rec['id']}: gate {v.failed_gate} failed at {where}: {v.reason}; "
            f"{'paused at' if pause else 'rolled back to'} {rec['live']}",
            "rollout",
        )

    def _pass(self, v: Verdict) -> None:
        rec, spec = self.record, self.spec
        assert spec is not None
        rec["last_good"] = dict(rec["live"])
        step = int(rec["step"])
        rec.setdefault("history", []).append(
            {"step": step + 1, "live": dict(rec["live"]), "figures": v.figures, "at": self.wall()}
        )
        _log(f"rollout {rec['id']}: {self._where()} passed {v.figures}", "rollout")
        if step >= len(spec.steps) - 1:
            self._finish("promoted", "passed every step", v.figures)
            return
        self._enter(step + 1)
        self.apply()
        self.pending_save = True

    def _finish(self, status: str, reason: str, figures: dict[str, Any]) -> None:
        rec = self.record
        rec["status"] = status
        rec["live"] = dict(rec["target"]) if status == "promoted" else dict(rec["start"])
        rec["verdict"] = {
            "result": status,
            "gate": None,
            "step": rec.get("step", 0) + 1,
            "reason": reason,
            "figures": figures,
            "at": self.wall(),
        }
        self.apply()
        self.pending_save = True
        _log(f"rollout {rec['id']}: {status} ({reason}); live {rec['live']}", "rollout")

    # -- commands

    def command(self, action: str) -> dict[str, Any]:
        """``pause``, ``resume``, ``abort`` or ``promote`` (decider; others queue it)."""
        if action not in ACTIONS:
            raise RolloutError(
                f"unknown rollout action {action!r}; use one of {', '.join(ACTIONS)}", 404
            )
        rec = self.record
        status = rec.get("status")
        if status in TERMINAL:
            raise RolloutError(f"no rollout in progress (status {status}); nothing to {action}")
        if not self.leader:
            self.queued = action  # written into the store for the decider (run loop)
            return {**self.status(), "queued": action}
        if action == "pause":
            if status == "paused":
                raise RolloutError("the rollout is already paused")
            rec["status"] = "paused"
        elif action == "resume":
            if status != "paused":
                raise RolloutError(f"the rollout is not paused (status {status})")
            self._enter(int(rec["step"]))
        elif action == "abort":
            self._finish("aborted", "aborted by an operator", self.figures)
            return self.status()
        else:
            self._finish("promoted", "promoted by an operator", self.figures)
            return self.status()
        self.apply()
        self.pending_save = True
        return self.status()

    def status(self) -> dict[str, Any]:
        """What ``GET /rollout`` answers: the record, live figures and bake time left."""
        spec = self.spec
        return {
            "endpoint_name": self.router.state.config.endpoint_name,
            **{k: v for k, v in self.record.items() if k != "command"},
            "declared": dict(self.router.state.config.traffic),
            "steps": spec.steps if spec else None,
            "bake_s": spec.bake_s if spec else None,
            "gates": spec.gates.model_dump() if spec and spec.gates else None,
            "on_failure": spec.on_failure if spec else None,
            "window": self.figures,
            "decider": self.leader,
            "totals": {
                name: asdict(tally(self.router.metrics, [name]))
                for name in self.router.state.config.deployments
            },
        }

    # -- the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Hold the lease, decide or follow, persist; until ``stop``."""
        loop = asyncio.get_running_loop()
        last_lease = last_follow = -1e9
        while not stop.is_set():
            now = loop.time()
            try:
                if now - last_lease >= 1.0:
                    last_lease = now
                    was = self.leader
                    self.leader = await asyncio.to_thread(self.lease.hold)
                    if self.leader and not was:
                        self.configure(self.record.get("live"))
                    if self.leader and self._shared():
                        await self._take_command()
                if self.leader:
                    self.tick()
                    if self.pending_save:
                        self.pending_save = False
                        await asyncio.to_thread(self.store.save, dict(self.record))
                elif now - last_follow >= FOLLOW_S:
                    last_follow = now
                    await self._follow()
            except Exception as exc:
                self.pending_save = self.pending_save or self.leader
                _log(
                    f"rollout store or lease: {type(exc).__name__}: {exc}",
                    "rollout_error",
                    "warning",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
        if self.leader:  # the next replica decides at once instead of after the lease expires
            try:
                await asyncio.to_thread(self.lease.release)
            except Exception as exc:
                _log(f"rollout lease release: {exc}", "rollout_error", "warning")

    async def _take_command(self) -> None:
        """Act on a command another replica queued in the store."""
        stored = await asyncio.to_thread(self.store.load)
        if not stored or stored.get("id") != self.record.get("id") or not stored.get("command"):
            return
        self.record.pop("command", None)
        with contextlib.suppress(RolloutError):
            self.command(str(stored["command"]))
        self.pending_save = True

    def _shared(self) -> bool:
        return not isinstance(self.lease, AlwaysLeader)

    async def _follow(self) -> None:
        """Apply the decider's record (a replica that does not decide); queue a command."""
        stored = await asyncio.to_thread(self.store.load)
        if stored is None or not _known(stored.get("live"), self.router.state.config.deployments):
            return
        if self.queued is not None:
            stored["command"], self.queued = self.queued, None
            await asyncio.to_thread(self.store.save, stored)
        self.record = stored
        self.apply()


def with_live(state: RouterState, live: Mapping[str, int], mirror_to: str | None) -> RouterState:
    """``state`` serving ``live`` (and mirroring to ``mirror_to``, if given) instead of its
    declared split: a new immutable state, swapped in by the caller in one assignment."""
    mirror_name, share = mirror_target(state.config.mirror_traffic)  # the declared mirror
    if mirror_to is not None:
        mirror_name, share = mirror_to, AGREEMENT_MIRROR_PERCENT / 100.0
    elif mirror_name is not None and live.get(mirror_name, 0) > 0:
        mirror_name, share = None, 0.0  # never mirror to a deployment taking live traffic
    return replace(
        state,
        split=Split.from_traffic(dict(live)),
        live=dict(live),
        mirror_name=mirror_name,
        mirror_share=share,
    )


def _known(live: object, deployments: Mapping[str, object]) -> bool:
    return (
        isinstance(live, dict)
        and bool(live)
        and all(n in deployments for n, v in live.items() if v)
        and sum(live.values()) == 100
    )


def _log(message: str, event: str, level: str = "info") -> None:
    get_log().event(level, message, event=event)
