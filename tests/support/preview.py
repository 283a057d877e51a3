"""Helpers of the preview tier (tests/preview): the real Pulumi CLI through the Automation API,
on a local file backend, with no cluster.

`Project` is a throwaway project folder (Pulumi.yaml copied, `infra/` linked to the checkout, the
project's .venv as virtualenv) with a throwaway state folder (the `project` fixture in
tests/preview/conftest.py makes one). The Kubernetes provider renders manifests to a folder
(`cluster.render_yaml_to`), so preview and up need no cluster.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from mlendpoints._project import without_secure
from mlendpoints.paths import REPO
from mlendpoints.stack import cli_root


def default_config() -> dict[str, Any]:
    """The dev stack's `config:` section as shipped (no `secure:` value: those need the user's
    passphrase, not this copy's)."""
    return without_secure(yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"])


@dataclass
class Project:
    """A throwaway copy of the project and its stack `dev`."""

    work_dir: Path
    env: dict[str, str]
    rendered: Path
    events: list[Any] = field(default_factory=list)

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the stack file's config (keeping the passphrase salt Pulumi wrote)."""
        path = self.work_dir / "Pulumi.dev.yaml"
        doc = yaml.safe_load(path.read_text()) if path.exists() else {}
        doc = doc or {}
        doc["config"] = config
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def stack(self) -> auto.Stack:
        return auto.create_or_select_stack(
            "dev",
            work_dir=str(self.work_dir),
            opts=auto.LocalWorkspaceOptions(
                env_vars=self.env,
                pulumi_command=auto.PulumiCommand(root=str(cli_root())),
            ),
        )


def render_config(project: Project, config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` that renders manifests into the project's folder (no cluster)."""
    config = copy.deepcopy(config)
    config["ml-endpoints:cluster"]["render_yaml_to"] = str(project.rendered)
    return config


def steps(events: list[auto.EngineEvent]) -> dict[tuple[str, str], str]:
    """(type, name) -> op for every resource step of a preview or update."""
    found: dict[tuple[str, str], str] = {}
    for event in events:
        pre = event.resource_pre_event
        if pre is None:
            continue
        meta = pre.metadata
        found[(meta.type, meta.urn.rsplit("::", 1)[-1])] = str(meta.op.value)
    return found
