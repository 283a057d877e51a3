"""Content hashes: the same files always give the same digest, so previews show no diff."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

IGNORED_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints", ".pytest_cache"}
IGNORED_SUFFIXES = {".pyc", ".pyo"}


def files_under(root: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Files of a folder (or the file itself), sorted by relative path, caches left out.

    `exclude` lists folders inside `root` to leave out (a model folder inside a code folder).
    """
    if root.is_file():
        return [root]
    skipped = [e.resolve() for e in exclude]
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part in IGNORED_DIRS for part in rel.parts) or path.suffix in IGNORED_SUFFIXES:
            continue
        if any(path.resolve().is_relative_to(e) for e in skipped):
            continue
        if path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def hash_tree(root: Path, exclude: Iterable[Path] = ()) -> str:
    """sha256 over sorted relative paths and contents (names matter, timestamps do not)."""
    digest = hashlib.sha256()
    base = root if root.is_dir() else root.parent
    for path in files_under(root, exclude):
        rel = path.relative_to(base).as_posix().encode()
        data = path.read_bytes()
        digest.update(len(rel).to_bytes(8, "big") + rel)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def hash_parts(parts: Iterable[str]) -> str:
    """sha256 of a sequence of strings, unambiguous about boundaries."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode()
        digest.update(len(raw).to_bytes(8, "big") + raw)
    return digest.hexdigest()


def project_sources_hash(root: Path) -> str:
    """What an image runs from the project wheel: pyproject.toml, constraints.txt and the
    `scoring` package under ROOT (`components` never runs in an image). The one copy: image
    content keys (components._images) and wheelhouse keys (scripts/wheelhouse.sh, which runs
    this file: `python components/_hashing.py project-sources ROOT`) both use it."""
    h = hashlib.sha256((root / "pyproject.toml").read_bytes())
    h.update((root / "constraints.txt").read_bytes())
    for path in sorted((root / "scoring").rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


if __name__ == "__main__":  # for shell scripts: no package import (and no Pulumi) needed
    import sys

    match sys.argv[1:]:
        case ["project-sources", root]:
            print(project_sources_hash(Path(root)))
        case _:
            sys.exit(f"usage: {sys.argv[0]} project-sources ROOT")
