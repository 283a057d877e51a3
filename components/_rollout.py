"""The Pulumi side of a progressive rollout: `up` waits for the router's verdict; `preview`
prints the evidence so far; `pulumi refresh` reads the live split back.

The rollout itself runs in the router (`scoring.router.rollout`); nothing here moves traffic.
`RolloutVerdict` is a small dynamic resource whose create/update polls the router's
`GET /rollout` until the declared rollout (named by `rollout_id`) has a verdict, and records it
in its outputs (`status`, `step`, `live`, `declared`, `candidate`, `verdict`). A rolled-back or
aborted rollout is a verdict too: the resource succeeds, and `OnlineEndpoint` turns it into the
`up` failure (`fail_on_verdict`). That keeps the verdict in the state, so the next `preview`
with the same declaration proposes nothing (`diff`: same rollout, same router) and only warns,
while the next `up` fails again with the divergence. A new declaration is a new rollout, and so
is a new revision of a deployment the target gives a share (its image's content tag: a fixed
scoring script, model or environment; `rollout_id`), so fixing the candidate is enough. Closing
the terminal loses only the wait: the rollout goes on in the cluster, and the next `up` waits
again (the state still holds the previous rollout) or reports its verdict.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from scoring.router.rollout import RolloutSpec, Tally, candidate_of, judge, rollout_id

DONE_OK = ("promoted", "none")
DONE_BAD = ("rolled_back", "aborted")
OBSERVED = ("status", "step", "live", "declared", "candidate", "verdict")
"""The router's answer as the resource records it (and the `rollout` stack output shows)."""
CONNECTION = ("rollout_id", "base_url", "key", "ca")
"""Inputs whose change is a change of the resource; anything else is the router's to report."""


def fetch_status(base_url: str, key: str, ca_pem: str, timeout: float = 5.0) -> dict[str, Any]:
    """The router's `GET /rollout` (raises on no answer or a non-200)."""
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else None
    req = urllib.request.Request(
        base_url.rstrip("/") + "/rollout", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
        data = json.loads(resp.read())
    if not isinstance(data, dict):
        raise ValueError("GET /rollout did not answer a JSON object")
    return data


def failure_message(status: Mapping[str, Any]) -> str:
    """`rollout of 'green' rolled back at step 1 of 4 (5%): gate error_rate: error rate 5.00% >
    1% (...); figures {...}; live split now {...} (declared {...}). ...`: what `up` fails with
    and what `preview` warns of, from the router's status or the resource's outputs."""
    status = _whole(status)
    verdict = status.get("verdict") or {}
    word = str(status.get("status", "")).replace("_", " ")
    split = (
        f"live split now {_sorted(status.get('live'))} (declared "
        f"{_sorted(status.get('declared'))}). Fix the candidate (its scoring script, model or "
        "environment: a new image is a new rollout) or change endpoint.traffic or "
        "endpoint.rollout; the same declaration of the same images is the same rollout, and it "
        "stays as it ended: until then `preview` proposes nothing and `up` fails with this"
    )
    if verdict.get("gate"):
        return (
            f"rollout of {status.get('candidate')!r} {word} at {verdict.get('where')}: gate "
            f"{verdict['gate']}: {verdict.get('reason')}; figures {verdict.get('figures')}; "
            + split
        )
    return (
        f"rollout of {status.get('candidate')!r} {word} at step {verdict.get('step')}: "
        f"{verdict.get('reason')}; " + split
    )


def _whole(value: Any) -> Any:
    """Whole numbers as ints again: the state (protobuf) hands every number back as a float,
    and `{'blue': 100.0}` is not how a split reads."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def _sorted(split: Any) -> Any:
    """A split by deployment name: the state does not keep a map's order."""
    return dict(sorted(split.items())) if isinstance(split, Mapping) else split


def _observed(status: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded part of a `GET /rollout` answer; `step` counts from 1 (0: the mirror
    phase), as the verdict's does."""
    step = status.get("step")
    return {
        "status": status.get("status"),
        "step": int(step) + 1 if isinstance(step, int) else None,
        "live": status.get("live"),
        "declared": status.get("declared"),
        "candidate": status.get("candidate"),
        "verdict": status.get("verdict"),
    }


class _VerdictProvider(ResourceProvider):
    """Waits for the router's verdict on rollout `rollout_id` and records it."""

    def _wait(self, props: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + float(props["timeout_s"])
        last: str = "no answer yet"
        while time.monotonic() < deadline:
            try:
                status = fetch_status(props["base_url"], props["key"], props["ca"])
            except (OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                time.sleep(1)
                continue
            if status.get("id") != props["rollout_id"]:
                last = f"router still serves rollout {status.get('id')} (old pods rolling)"
            elif status.get("status") in DONE_OK + DONE_BAD:
                # A rollback is recorded, not raised: `OnlineEndpoint` fails `up` with it, and
                # the state keeps which rollout it was (so `preview` proposes nothing after it).
                return {**props, **_observed(status)}
            else:
                last = f"status {status.get('status')} at step {status.get('step')}"
            time.sleep(1)
        raise RuntimeError(
            f"rollout {props['rollout_id']} has no verdict after {props['timeout_s']} s ({last}); "
            "it goes on in the cluster: `ml-endpoints rollout status`"
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=str(props["rollout_id"]), outs=self._wait(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._wait(news))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A change only when another rollout is declared (or the router moved): the state holds
        the verdict on this one, promoted or rolled back, so there is nothing to wait for.

        `olds` are the recorded outputs: a rollout `up` recorded a verdict on. (One that never
        got one — a timeout, a closed terminal — left the previous rollout in the state, so the
        next `up` waits again.)
        """
        changed = [k for k in CONNECTION if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """`pulumi refresh`: the router's live split, and this rollout's status now (all kept
        when the router cannot be reached; only the split when it serves another rollout)."""
        try:
            status = fetch_status(props["base_url"], props["key"], props["ca"])
        except (OSError, ValueError, KeyError):
            return ReadResult(id_=id_, outs=props)
        observed = _observed(status)
        if status.get("id") != props.get("rollout_id"):
            observed = {"live": observed["live"], "declared": observed["declared"]}
        return ReadResult(id_=id_, outs={**props, **observed})


class RolloutVerdict(Resource):
    """`pulumi up` returns when the router has a verdict on rollout `rollout_id`: promoted, or
    rolled back / aborted (then `OnlineEndpoint` fails `up` with `failure_message`)."""

    rollout_id: pulumi.Output[str]
    status: pulumi.Output[str]
    step: pulumi.Output[int | None]
    live: pulumi.Output[dict[str, int]]
    """The router's live split when `up` returned, or at the last `pulumi refresh`."""
    declared: pulumi.Output[dict[str, int]]
    candidate: pulumi.Output[str | None]
    verdict: pulumi.Output[dict[str, Any] | None]

    def __init__(
        self,
        name: str,
        base_url: pulumi.Input[str],
        key: pulumi.Input[str],
        ca: pulumi.Input[str],
        rollout_id: str,
        timeout_s: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            _VerdictProvider(),
            name,
            {
                "base_url": base_url,
                "key": key,
                "ca": ca,
                "rollout_id": rollout_id,
                "timeout_s": timeout_s,
                **{k: None for k in OBSERVED},
            },
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["key"])
            ),
        )

    def observed(self) -> pulumi.Output[dict[str, Any]]:
        """`rollout_id` and the recorded router status (no key: a plain output)."""
        return pulumi.Output.all(
            rollout_id=self.rollout_id,
            **{k: getattr(self, k) for k in OBSERVED},
        )


def fail_on_verdict(observed: Mapping[str, Any]) -> Mapping[str, Any]:
    """`up`: a rolled-back or aborted rollout fails it with the divergence, every `up` until
    the declaration or a target deployment's revision changes (`preview` only warns:
    `preview_evidence`)."""
    if observed.get("status") in DONE_BAD:
        raise pulumi.RunError(failure_message(observed))
    return observed


def verdict_timeout_s(spec: RolloutSpec) -> int:
    """Long enough for every step's bake plus slow evidence; bounded."""
    return min(24 * 3600, (len(spec.steps) + 1) * spec.bake_s * 3 + 600)


# --------------------------------------------------------------------------- preview


def evidence_line(
    spec: RolloutSpec, traffic: Mapping[str, int], live: Mapping[str, int], status: dict[str, Any]
) -> str:
    """`green  live 0% -> 100% in 4 steps · mirrored 4812 · agree 97.1% (gate 98%) · p99 41 ms vs
    38 ms · WOULD FAIL agreement`: what the router has seen so far, judged by the declared gates."""
    candidate = candidate_of(spec, traffic) or "?"
    parts = [
        f"{candidate}  live {live.get(candidate, 0)}% -> {traffic.get(candidate, 0)}% "
        f"in {len(spec.steps)} steps"
    ]
    totals = status.get("totals") or {}
    cand = _tally(totals.get(candidate))
    base = Tally()
    for name, raw in totals.items():
        if name != candidate and live.get(name, 0) > 0:
            base = _add(base, _tally(raw))
    failed: list[str] = []
    gates = spec.gates
    compared = cand.equal + cand.different
    if compared:
        agree = 100.0 * cand.equal / compared
        gate = f" (gate {gates.min_agreement_pct:g}%)" if gates and gates.min_agreement_pct else ""
        parts.append(f"mirrored {compared:,} · agree {agree:.1f}%{gate}")
    if gates is not None:
        mirror = judge(gates, "mirror", cand, base)
        if mirror.failed_gate:
            failed.append(mirror.failed_gate)
    if cand.requests:
        v = judge(gates, "live", cand, base) if gates else None
        figures = v.figures if v else {}
        parts.append(
            f"live requests {cand.requests:,} · errors {figures.get('error_rate_pct')}% · "
            f"p99 {figures.get('p99_ms')} ms vs {figures.get('baseline_p99_ms')} ms"
        )
        if v is not None and v.failed_gate:
            failed.append(v.failed_gate)
    if status.get("verdict") and status.get("status") in DONE_BAD:
        parts.append(f"last rollout {status['status']}: {status['verdict'].get('reason')}")
    served, declared = status.get("live"), status.get("declared")
    if served and declared and served != declared:
        parts.append(f"live split {served} differs from the deployed declaration {declared}")
    if gates is None:
        parts.append("no gates: one-shot shift")
    elif failed:
        parts.append("WOULD FAIL " + ", ".join(failed))
    elif not compared and not cand.requests:
        parts.append("no evidence yet")
    else:
        parts.append("gates pass so far")
    return " · ".join(parts)


def _tally(raw: object) -> Tally:
    if not isinstance(raw, dict):
        return Tally()
    t = Tally()
    for key in ("requests", "failed", "equal", "different", "mirror_failed"):
        setattr(t, key, int(raw.get(key, 0)))
    latency = raw.get("latency")
    if isinstance(latency, list) and len(latency) == len(t.latency):
        t.latency = [int(x) for x in latency]
    return t


def _add(a: Tally, b: Tally) -> Tally:
    return Tally(
        a.requests + b.requests,
        a.failed + b.failed,
        [x + y for x, y in zip(a.latency, b.latency, strict=True)],
        a.equal + b.equal,
        a.different + b.different,
        a.mirror_failed + b.mirror_failed,
    )


def preview_evidence(
    spec: RolloutSpec,
    traffic: Mapping[str, int],
    live: Mapping[str, int] | None,
    endpoint: Mapping[str, Any] | None,
    revisions: Mapping[str, str] | None = None,
) -> tuple[bool, str]:
    """What `preview` logs: (warn, text). The evidence line, or `rollout evidence unavailable
    (why)`; a warning naming the divergence when the router rolled back (or an operator
    aborted) the very rollout declared (`rollout_id` of `spec`, `traffic` and the deployments'
    `revisions`) — `preview` then proposes nothing and `up` would fail. Never an error."""
    endpoint = endpoint or {}
    uri, key = endpoint.get("scoring_uri"), endpoint.get("primary_key")
    if not uri or not key:
        return False, "rollout evidence unavailable (the endpoint is not deployed yet)"
    try:
        status = fetch_status(
            str(uri).removesuffix("/score"), str(key), str(endpoint.get("ca_certificate") or ""), 3
        )
    except Exception as exc:
        return False, f"rollout evidence unavailable ({type(exc).__name__}: {exc})"
    declared = rollout_id(spec, traffic, revisions)
    if status.get("id") == declared and status.get("status") in DONE_BAD:
        observed = _observed(status)
        return True, "the live split differs from the declaration: " + failure_message(observed)
    return False, "rollout evidence: " + evidence_line(
        spec, traffic, live or status.get("live") or {}, status
    )
