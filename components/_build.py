"""Build contexts for images, staged under the cache so the checkout stays clean.

A context folder is named by its content hash and written once; writing it is cheap and happens at
program time, but nothing is built here: images are built by `components._images` only on `up`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from components._hashing import files_under
from mlendpoints.paths import REPO as REPO_ROOT
from mlendpoints.paths import cache_root

IMAGES_DIR = REPO_ROOT / "images"
ENVIRONMENT_DOCKERFILE = IMAGES_DIR / "environment.Dockerfile"
SCORING_DOCKERFILE = IMAGES_DIR / "scoring.Dockerfile"
ROUTER_DOCKERFILE = IMAGES_DIR / "router.Dockerfile"
APP_ROOT = "/var/azureml-app"
MODEL_DIR = f"{APP_ROOT}/model"
CODE_DIR = f"{APP_ROOT}/code"


def tree(dest: str, root: Path, exclude: list[Path] | None = None) -> dict[str, Path]:
    """`dest/relative path -> file` for every file under `root` (see `files_under`)."""
    base = root if root.is_dir() else root.parent
    return {
        f"{dest}/{path.relative_to(base).as_posix()}": path
        for path in files_under(root, exclude or [])
    }


def stage(kind: str, digest: str, files: dict[str, Path | str]) -> Path:
    """Write a build context `build/<kind>-<digest>/` once: `dest -> source file or text`."""
    root = cache_root() / "build" / f"{kind}-{digest[:16]}"
    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for dest, source in sorted(files.items()):
        target = tmp / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, str):
            target.write_text(source)
        else:
            shutil.copy2(source, target)
        # Readable by the image's non-root user whatever the user's umask or file modes were
        # (COPY keeps them); executable bits are kept.
        target.chmod(0o755 if target.stat().st_mode & 0o111 else 0o644)
    for folder in (tmp, *(p for p in tmp.rglob("*") if p.is_dir())):
        folder.chmod(0o755)
    (tmp / ".complete").write_text(digest + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root
