"""Fixtures of the preview tier: the real Pulumi CLI through the Automation API, on a local
file backend, with no cluster. Helpers (Project, default_config, steps): tests/support/preview.py.

Each test gets a throwaway project folder and a throwaway state folder. Image builds are avoided
with prebuilt `image:` deployments where a test runs `up`; a preview never builds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlendpoints.paths import REPO, SAMPLE, cache_root
from mlendpoints.stack import cli_root
from tests.support.preview import Project

PASSPHRASE = "preview-tests-only"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    cli = cli_root() / "bin" / "pulumi"
    assert cli.is_file(), f"{cli} missing: run `make setup` (Pulumi CLI and plugins)"
    work = tmp_path / "project"
    work.mkdir()
    pulumi_yaml = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    pulumi_yaml["runtime"]["options"]["virtualenv"] = str(REPO / ".venv")
    (work / "Pulumi.yaml").write_text(yaml.safe_dump(pulumi_yaml, sort_keys=False))
    (work / "infra").symlink_to(REPO / "infra")
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
        "PATH": f"{cli.parent}:{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
    }
    yield Project(work_dir=work, env=env, rendered=tmp_path / "rendered")


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample model trained by the sample's own script (deterministic), outside the repo."""
    out = tmp_path_factory.mktemp("model") / "model"
    subprocess.run(
        [sys.executable, str(SAMPLE / "train.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out
