"""Fixtures for the toolchain tier: the environment `scripts/env.sh` exports, with private state.

Everything here uses what `make setup` installed (the CLI and plugins under
$ML_ENDPOINTS_CACHE/tools, the Docker engine, the local registry); a missing part fails the
test with the command that installs it, rather than skipping.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlendpoints.paths import REPO as ROOT
from mlendpoints.versions import PULUMI_VERSION


def env_sh() -> dict[str, str]:
    """The environment after sourcing scripts/env.sh in a clean-ish shell."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    out = subprocess.run(
        ["bash", "-c", f". {ROOT}/scripts/env.sh && env -0"],
        check=True,
        capture_output=True,
        env=keep,
        timeout=30,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


@pytest.fixture
def toolchain_env(tmp_path: Path) -> dict[str, str]:
    """env.sh's settings with a throwaway file:// backend."""
    env = env_sh()
    cli = Path(env["ML_ENDPOINTS_CACHE"]) / "tools" / f"pulumi-{PULUMI_VERSION}" / "bin" / "pulumi"
    if not cli.is_file():
        pytest.fail(f"{cli} missing: run `make toolchain` (scripts/setup_pulumi.sh)")
    state = tmp_path / "state"
    state.mkdir()
    env["PULUMI_BACKEND_URL"] = f"file://{state}?metadata=skip"  # see scripts/env.sh
    env["PULUMI_CONFIG_PASSPHRASE"] = "toolchain-tests-only"
    return env
