"""The real Pulumi CLI through the Automation API, on a local file backend, with no cluster.

Each test gets a throwaway project folder (Pulumi.yaml copied, `infra/` linked to the checkout, the
project's .venv as virtualenv) and a throwaway state folder. The Kubernetes provider renders
manifests to a folder (`cluster.render_yaml_to`), so preview and up need no cluster; `up` still
runs every resource's real provider (manifests, generated keys). Image builds are avoided with
prebuilt `image:` deployments where a test runs `up`; a preview never builds.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

ROOT = Path(__file__).resolve().parents[2]
PULUMI_VERSION = "3.259.0"
PASSPHRASE = "preview-tests-only"


def cache_root() -> Path:
    return Path(os.environ.get("ML_ENDPOINTS_CACHE", "~/.cache/ml-endpoints")).expanduser()


def cli_root() -> Path:
    """Folder with bin/pulumi, as `make setup` (scripts/setup_pulumi.sh) installs it."""
    return cache_root() / "tools" / f"pulumi-{PULUMI_VERSION}"


def default_config() -> dict[str, Any]:
    """The dev stack's `config:` section as shipped."""
    return yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]


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


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    cli = cli_root() / "bin" / "pulumi"
    assert cli.is_file(), f"{cli} missing: run `make setup` (Pulumi CLI and plugins)"
    work = tmp_path / "project"
    work.mkdir()
    pulumi_yaml = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    pulumi_yaml["runtime"]["options"]["virtualenv"] = str(ROOT / ".venv")
    (work / "Pulumi.yaml").write_text(yaml.safe_dump(pulumi_yaml, sort_keys=False))
    (work / "infra").symlink_to(ROOT / "infra")
    state = tmp_path / "state"
    state.mkdir()
    env = {
        "PULUMI_BACKEND_URL": f"file://{state}?metadata=skip",  # see scripts/env.sh
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_HOME": os.environ.get("PULUMI_HOME", str(cache_root() / "pulumi-home")),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_DISABLE_REGISTRY_RESOLVE": "true",
        "ML_ENDPOINTS_CACHE": str(cache_root()),
        "PATH": f"{cli.parent}:{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
    }
    yield Project(work_dir=work, env=env, rendered=tmp_path / "rendered")


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample model trained by the sample's own script (deterministic), outside the repo."""
    out = tmp_path_factory.mktemp("model") / "model"
    subprocess.run(
        [sys.executable, str(ROOT / "samples" / "diabetes" / "train.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def render_config(project: Project, config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` that renders manifests into the project's folder (no cluster)."""
    config = copy.deepcopy(config)
    config["ml-endpoints:cluster"]["render_yaml_to"] = str(project.rendered)
    return config
