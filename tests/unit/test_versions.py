"""mlendpoints/versions.env is the one copy of every pinned tool version; the formats that cannot
read it (pip's constraints.txt, pyproject.toml, go.mod) keep copies that must agree with it."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from mlendpoints import versions
from mlendpoints.paths import REPO


def test_versions_file_parses_and_has_every_key() -> None:
    assert set(versions.versions()) >= {
        "PULUMI_VERSION",
        "PULUMI_KUBERNETES_VERSION",
        "KUBERNETES_VERSION",
        "COREDNS_VERSION",
        "PAUSE_VERSION",
        "KIND_REGISTRY_IMAGE",
        "PULUMI_DOCKER_BUILD_VERSION",
        "BUILDKIT_VERSION",
        "BUILDX_VERSION",
    }


def test_shell_reads_the_same_values(tmp_path: Path) -> None:
    """What `. scripts/lib.sh` defines is what Python reads."""
    names = sorted(versions.versions())
    script = ". scripts/lib.sh >/dev/null && " + " && ".join(f'echo "${n}"' for n in names)
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env={**os.environ, "ML_ENDPOINTS_CACHE": str(tmp_path)},  # lib.sh makes its logs folder
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert dict(zip(names, out, strict=True)) == versions.versions()


def test_make_reads_the_same_values() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "-s", "versions"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert dict(line.split("=", 1) for line in out.split()) == versions.versions()


def _pins(text: str) -> dict[str, str]:
    """name -> version of every `name==version` (names normalised as pip does)."""
    found = re.findall(r"^\s*\"?([A-Za-z0-9_.-]+)==([^\s\",#]+)", text, re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


@pytest.mark.parametrize("path", ["constraints.txt", "pyproject.toml"])
def test_python_pins_equal_the_versions_file(path: str) -> None:
    pins = _pins((REPO / path).read_text())
    assert pins["pulumi"] == versions.PULUMI_VERSION, f"{path} vs mlendpoints/versions.env"
    assert pins["pulumi-kubernetes"] == versions.PULUMI_KUBERNETES_VERSION, (
        f"{path} vs mlendpoints/versions.env"
    )
    assert pins["pulumi-docker-build"] == versions.PULUMI_DOCKER_BUILD_VERSION, (
        f"{path} vs mlendpoints/versions.env"
    )


def test_pyproject_pins_are_in_the_infra_extra() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"pulumi=={versions.PULUMI_VERSION}" in extra["infra"]
    assert f"pulumi-kubernetes=={versions.PULUMI_KUBERNETES_VERSION}" in extra["infra"]
    assert f"pulumi-docker-build=={versions.PULUMI_DOCKER_BUILD_VERSION}" in extra["infra"]


def test_go_modules_equal_the_versions_file() -> None:
    cli = (REPO / "tools" / "pulumi" / "go.mod").read_text()
    for module in ("github.com/pulumi/pulumi/pkg/v3", "github.com/pulumi/pulumi/sdk/v3"):
        assert re.search(rf"^\s*{re.escape(module)} v{versions.PULUMI_VERSION}\b", cli, re.M), (
            f"tools/pulumi/go.mod: {module} is not v{versions.PULUMI_VERSION} "
            "(mlendpoints/versions.env PULUMI_VERSION)"
        )
    docker_build = (REPO / "tools" / "docker-build" / "go.mod").read_text()
    assert re.search(
        rf"^require github.com/pulumi/pulumi-docker-build v{versions.PULUMI_DOCKER_BUILD_VERSION}$",
        docker_build,
        re.M,
    ), "tools/docker-build/go.mod: pulumi-docker-build is not PULUMI_DOCKER_BUILD_VERSION"
    coredns = (REPO / "images" / "coredns" / "go.mod").read_text()
    assert re.search(
        rf"^require github.com/coredns/coredns {versions.COREDNS_VERSION}$", coredns, re.M
    ), f"images/coredns/go.mod: coredns is not {versions.COREDNS_VERSION}"
