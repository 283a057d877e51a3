"""The pinned tool versions, read from `versions.env` beside this file (the one copy).

Shell scripts source that file (through scripts/versions.sh) and make includes it, so a version
changes in one place. tests/unit/test_versions.py checks the copies that other formats must
keep (constraints.txt, pyproject.toml, go.mod files) against it.
"""

from __future__ import annotations

import functools
from pathlib import Path

VERSIONS_FILE = Path(__file__).with_name("versions.env")


@functools.cache
def versions() -> dict[str, str]:
    """Every KEY=VALUE of versions.env (comments and blank lines skipped)."""
    found: dict[str, str] = {}
    for number, raw in enumerate(VERSIONS_FILE.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier() or not value or value != value.strip():
            raise ValueError(f"{VERSIONS_FILE}:{number}: expected KEY=VALUE, got {raw!r}")
        found[key] = value
    return found


PULUMI_VERSION = versions()["PULUMI_VERSION"]
PULUMI_KUBERNETES_VERSION = versions()["PULUMI_KUBERNETES_VERSION"]
KUBERNETES_VERSION = versions()["KUBERNETES_VERSION"]
COREDNS_VERSION = versions()["COREDNS_VERSION"]
PAUSE_VERSION = versions()["PAUSE_VERSION"]
KIND_REGISTRY_IMAGE = versions()["KIND_REGISTRY_IMAGE"]
PULUMI_DOCKER_BUILD_VERSION = versions()["PULUMI_DOCKER_BUILD_VERSION"]
BUILDKIT_VERSION = versions()["BUILDKIT_VERSION"]
BUILDX_VERSION = versions()["BUILDX_VERSION"]
