"""Fixtures of the Pulumi-mock tier: the toolchain's image component replaced by a stand-in,
a private cache, an event loop per test, and tiny assets. The recording mocks themselves
(install, Recorder, stack_raw): tests/support/pulumi_mocks.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pulumi_mocks import fake_images_module


@pytest.fixture(autouse=True)
def _images_and_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Always the stand-in: these tests pin our graph, not the toolchain's image internals
    # (the real components._images runs in tests/preview with the real CLI).
    monkeypatch.setitem(sys.modules, "components._images", fake_images_module())
    monkeypatch.setenv("ML_ENDPOINTS_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _event_loop() -> Iterator[None]:
    # Pulumi's mocks run on the thread's current event loop; an asyncio.run() in an earlier
    # test (the scoring and router unit tiers) leaves the main thread with none.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def assets(tmp_path: Path) -> dict[str, Path]:
    """A tiny model, a second model version, a conda file and a scoring script."""
    code = tmp_path / "code"
    (code / "model").mkdir(parents=True)
    (code / "model" / "model.pkl").write_bytes(b"model-v1")
    (code / "model-v2").mkdir()
    (code / "model-v2" / "model.pkl").write_bytes(b"model-v2")
    (code / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    conda = tmp_path / "conda.yaml"
    conda.write_text(
        "dependencies:\n  - python=3.11\n  - scikit-learn=1.9.1\n  - pip:\n    - joblib==1.6.0\n"
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    return {
        "code": code,
        "model": code / "model",
        "model2": code / "model-v2",
        "conda": conda,
        "kubeconfig": kubeconfig,
    }
