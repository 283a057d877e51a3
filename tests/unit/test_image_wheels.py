"""The wheels an image build reads stay put: components._images keeps a hard-linked copy of each
wheelhouse, out of reach of scripts/wheelhouse.sh's pruning (other runs prune between a
preview, which hashes the named context, and the `up` that builds from it)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from components import _images

pytestmark = pytest.mark.components


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ML_ENDPOINTS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _wheelhouse(root: Path, key: str, stamped: bool = True) -> Path:
    folder = root / "wheelhouse" / key
    folder.mkdir(parents=True)
    (folder / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    if stamped:
        (folder / ".stamp").write_text(key + "\n")
    return folder


def test_the_kept_copy_outlives_the_wheelhouse(cache: Path) -> None:
    source = _wheelhouse(cache, "abc123")
    kept = _images._kept(source)
    assert kept == cache / "build" / "wheels-abc123"
    assert (kept / ".complete").read_text() == "abc123\n"
    for name in (source / "demo-1.0-py3-none-any.whl").name, ".stamp":
        assert (kept / name).read_bytes() == (source / name).read_bytes()
    for path in source.iterdir():  # wheelhouse.sh prunes it
        path.unlink()
    source.rmdir()
    assert _images._kept(source) == kept  # already complete: not copied again
    assert (kept / "demo-1.0-py3-none-any.whl").read_bytes() == b"wheel"


def test_a_wheelhouse_removed_while_copied_is_not_kept(cache: Path) -> None:
    source = _wheelhouse(cache, "def456", stamped=False)  # as if pruned mid-copy
    with pytest.raises(FileNotFoundError):
        _images._kept(source)
    assert not (cache / "build" / "wheels-def456").exists()
    assert not list((cache / "build").glob("wheels-def456.tmp*"))


def test_copies_unused_for_days_are_removed(cache: Path) -> None:
    old = _images._kept(_wheelhouse(cache, "old"))
    recent = _images._kept(_wheelhouse(cache, "recent"))
    days_ago = time.time() - (_images._KEPT_DAYS + 1) * 86400
    os.utime(old, (days_ago, days_ago))
    _images._kept(_wheelhouse(cache, "new"))
    assert not old.exists()
    assert recent.is_dir()
