"""Pure rules for endpoint names, traffic and mirror, shared by config validation and components.

Every check returns a list of problems (one readable line each, starting with the key path) instead
of raising, so one preview reports every mistake at once. Nothing here touches Pulumi.

The name, traffic and mirror rules live in `scoring.router.traffic` (the router checks its
config file with them, and the scoring image ships without `components`); they are re-exported
here so preview and the router accept exactly the same names and tables with the same messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scoring.router.traffic import (
    DNS1123_LABEL,
    MAX_NAME,
    check_mirror,
    check_name,
    check_traffic,
)

__all__ = [
    "DNS1123_LABEL",
    "ENVIRONMENT_SOURCES",
    "MAX_NAME",
    "check_environment_source",
    "check_mirror",
    "check_name",
    "check_object_name",
    "check_removal",
    "check_traffic",
    "traffic_plan",
]

#: The fields an environment is built from; `EnvironmentArgs` and the stack config both carry them.
ENVIRONMENT_SOURCES = ("conda_file", "requirements_file", "requirements", "image")


def check_environment_source(path: str, spec: object) -> list[str]:
    """An environment comes from exactly one source, so the image it names is never ambiguous."""
    given = [key for key in ENVIRONMENT_SOURCES if getattr(spec, key) is not None]
    if len(given) == 1:
        return []
    return [
        f"{path}: give exactly one of {', '.join(ENVIRONMENT_SOURCES)} "
        f"(got {', '.join(given) or 'none'})"
    ]


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
