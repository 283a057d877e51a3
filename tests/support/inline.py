"""Inline Pulumi programs for the toolchain tier: the real CLI through the Automation API, with
the environment the `toolchain_env` fixture gives (scripts/env.sh plus a throwaway backend)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pulumi import automation as auto

from mlendpoints.stack import cli_root


def inline_stack(
    env: dict[str, str], project: str, program: Callable[[], None], stack: str = "test"
) -> auto.Stack:
    """Stack `stack` of the inline project `project`, run by the CLI `make setup` installed."""
    return auto.create_or_select_stack(
        stack,
        project_name=project,
        program=program,
        opts=auto.LocalWorkspaceOptions(
            env_vars=env,
            pulumi_command=auto.PulumiCommand(root=str(cli_root(env))),
            project_settings=auto.ProjectSettings(name=project, runtime="python"),
        ),
    )


def summary(changes: dict[Any, int]) -> dict[str, int]:
    """A change summary as plain `{"create": 3}` (op names, zero counts dropped)."""
    return {getattr(k, "value", k): v for k, v in changes.items() if v}
