"""Pure rules for endpoint names, traffic and mirror, shared by config validation and components.

Every check returns a list of problems (one readable line each, starting with the key path) instead
of raising, so one preview reports every mistake at once. Nothing here touches Pulumi.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

DNS1123_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63
MAX_MIRROR_PERCENT = 50


def check_name(path: str, value: str) -> list[str]:
    """A name for Kubernetes objects and Service DNS: a DNS-1123 label starting with a letter."""
    if not isinstance(value, str) or not value:
        return [f"{path}: {value!r} is empty; use lowercase letters, digits and '-'"]
    if len(value) > MAX_NAME or not DNS1123_LABEL.match(value):
        return [
            f"{path}: {value!r} is not DNS-1123 (lowercase letters, digits, '-', starts with a "
            f"letter, ends with a letter or digit, <= {MAX_NAME} chars)"
        ]
    return []


def check_object_name(path: str, endpoint: str, deployment: str) -> list[str]:
    """`{endpoint}-{deployment}` names the deployment's Kubernetes objects: it must fit a label."""
    combined = f"{endpoint}-{deployment}"
    if len(combined) > MAX_NAME:
        return [
            f"{path}: {deployment!r} with endpoint {endpoint!r} gives object name {combined!r} "
            f"({len(combined)} chars); endpoint and deployment names together must be "
            f"<= {MAX_NAME - 1} chars"
        ]
    return []


def _percent_problems(path: str, value: object, upper: int) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{path}: {value!r} is not a whole percent; use an integer 0..{upper}"]
    if not 0 <= value <= upper:
        return [f"{path}: {value} is out of range; use an integer 0..{upper}"]
    return []


def check_traffic(
    traffic: Mapping[str, int], deployments: Iterable[str], path: str = "endpoint.traffic"
) -> list[str]:
    """Live traffic: every key names a deployment, whole percents, sum 0 (no traffic) or 100."""
    names = list(deployments)
    problems: list[str] = []
    for key, value in traffic.items():
        if key not in names:
            problems.append(
                f"{path}.{key}: no deployment named {key!r} in this endpoint "
                f"(deployments: {', '.join(names) or 'none'})"
            )
        problems += _percent_problems(f"{path}.{key}", value, 100)
    if problems:
        return problems
    total = sum(traffic.values())
    if total not in (0, 100):
        parts = ", ".join(f"{k}={v}" for k, v in traffic.items())
        problems.append(f"{path}: values sum to {total} ({parts}); must be 0 or 100")
    return problems


def check_mirror(
    mirror: Mapping[str, int],
    traffic: Mapping[str, int],
    deployments: Iterable[str],
    path: str = "endpoint.mirror_traffic",
) -> list[str]:
    """Mirror: one deployment at most, <= 50%, never one that takes live traffic."""
    names = list(deployments)
    problems: list[str] = []
    for key, value in mirror.items():
        if key not in names:
            problems.append(
                f"{path}.{key}: no deployment named {key!r} in this endpoint "
                f"(deployments: {', '.join(names) or 'none'})"
            )
            continue
        bad = _percent_problems(f"{path}.{key}", value, 100)
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


def check_removal(
    previous_traffic: Mapping[str, int] | None,
    previous_mirror: Mapping[str, int] | None,
    deployments: Iterable[str],
    path: str = "deployments",
) -> list[str]:
    """A deployment that still takes traffic in the deployed stack cannot be removed in this update.

    Traffic is taken away first (one `pulumi up`), then the deployment is deleted (the next one), so
    the router never points at a Service that is going away.
    """
    names = set(deployments)
    problems: list[str] = []
    for kind, previous in (("live", previous_traffic), ("mirrored", previous_mirror)):
        for key, value in sorted((previous or {}).items()):
            if key not in names and isinstance(value, int) and value > 0:
                field = "traffic" if kind == "live" else "mirror_traffic"
                problems.append(
                    f"{path}: {key!r} is removed but still takes {value}% {kind} traffic in the "
                    f"deployed stack; set endpoint.{field}.{key} to 0, run `pulumi up`, then "
                    f"remove it"
                )
    return problems


def traffic_plan(
    before: Mapping[str, int] | None,
    after: Mapping[str, int],
    mirror_before: Mapping[str, int] | None,
    mirror_after: Mapping[str, int],
    deployments: Iterable[str] = (),
) -> list[str]:
    """Readable per-deployment plan: live % before -> after and mirror % before -> after.

    `before` is None when the stack has never been deployed (nothing routes yet).
    """
    first = before is None
    before = dict(before or {})
    mirror_before = dict(mirror_before or {})
    names: list[str] = []
    for source in (deployments, before, after, mirror_before, mirror_after):
        for name in source:
            if name not in names:
                names.append(name)
    width = max([len(n) for n in names] + [10])
    lines = ["traffic plan" + (" (first deployment)" if first else "") + ":"]
    for name in names:
        lb, la = before.get(name), after.get(name, 0)
        mb, ma = mirror_before.get(name, 0), mirror_after.get(name, 0)
        removed = name not in after and name not in deployments
        live = f"{_pct(lb)} -> " + ("-" if removed else f"{la}%")
        mirror = f"{mb}% -> " + ("-" if removed else f"{ma}%")
        if removed:
            note = "removed"
        elif name not in before:
            note = "" if first else "new"
        elif (lb or 0) == la and mb == ma:
            note = "unchanged"
        else:
            note = "changes"
        lines.append(f"  {name:<{width}}  live {live:<12}  mirror {mirror:<10}  {note}".rstrip())
    if len(names) == 0:
        lines.append("  (no deployments)")
    return lines


def _pct(value: int | None) -> str:
    return "-" if value is None else f"{value}%"
