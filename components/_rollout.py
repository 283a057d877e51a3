"""The Pulumi side of a progressive rollout: `up` waits for the router's verdict; `preview`
prints the evidence so far.

The rollout itself runs in the router (`scoring.router.rollout`); nothing here moves traffic.
`RolloutVerdict` is a small dynamic resource whose create/update polls the router's
`GET /rollout` until the declared rollout (named by `rollout_id`) is promoted (success) or
rolled back (failure naming the gate, step and figures). Closing the terminal loses only the
wait: the rollout goes on in the cluster, and the next `up` waits again or reports its verdict.
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

from scoring.router.rollout import RolloutSpec, Tally, candidate_of, judge

DONE_OK = ("promoted", "none")
DONE_BAD = ("rolled_back", "aborted")


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
    """`rolled back at step 1 of 4 (5%): gate error_rate: error rate 5.00% > 1% (...)`."""
    verdict = status.get("verdict") or {}
    word = str(status.get("status", "")).replace("_", " ")
    if verdict.get("gate"):
        return (
            f"rollout of {status.get('candidate')!r} {word} at {verdict.get('where')}: gate "
            f"{verdict['gate']}: {verdict.get('reason')}; figures {verdict.get('figures')}; "
            f"live split now {status.get('live')} (declared {status.get('declared')}). Fix the "
            "candidate (or change endpoint.traffic / endpoint.rollout) and run `pulumi up` again"
        )
    return f"rollout of {status.get('candidate')!r} {word}: {verdict.get('reason')}"


class _VerdictProvider(ResourceProvider):
    """Waits for the router's verdict on rollout `rollout_id`."""

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
            elif status.get("status") in DONE_OK:
                return {**props, **_observed(status)}
            elif status.get("status") in DONE_BAD:
                raise RuntimeError(failure_message(status))
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
        changed = olds.get("rollout_id") != news.get("rollout_id")
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """`pulumi refresh`: the router's status and live split now (kept if it is unreachable)."""
        try:
            status = fetch_status(props["base_url"], props["key"], props["ca"])
        except (OSError, ValueError, KeyError):
            return ReadResult(id_=id_, outs=props)
        return ReadResult(id_=id_, outs={**props, **_observed(status)})


def _observed(status: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "status": status.get("status"),
        "verdict": status.get("verdict"),
        "live": status.get("live"),
    }


class RolloutVerdict(Resource):
    """`pulumi up` returns when the router promoted rollout `rollout_id`, fails when it rolled
    it back."""

    status: pulumi.Output[str]
    live: pulumi.Output[dict[str, int]]
    """The router's live split when `up` returned, or at the last `pulumi refresh`."""

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
                "status": None,
                "verdict": None,
                "live": None,
            },
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["key"])
            ),
        )


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
) -> str:
    """The evidence line, or `evidence unavailable (why)`: never an error."""
    endpoint = endpoint or {}
    uri, key = endpoint.get("scoring_uri"), endpoint.get("primary_key")
    if not uri or not key:
        return "rollout evidence unavailable (the endpoint is not deployed yet)"
    try:
        status = fetch_status(
            str(uri).removesuffix("/score"), str(key), str(endpoint.get("ca_certificate") or ""), 3
        )
    except Exception as exc:
        return f"rollout evidence unavailable ({type(exc).__name__}: {exc})"
    return "rollout evidence: " + evidence_line(
        spec, traffic, live or status.get("live") or {}, status
    )
