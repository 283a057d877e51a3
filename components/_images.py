"""Container images for the Pulumi program: pulumi-docker-build's `Image`, built by BuildKit.

Why this provider: it is the documented Pulumi resource for images (BuildKit caching, registry
authentication, build secrets, exports, multi-platform builds), so the program reads as Pulumi
users expect. Here it is built from its Go module (scripts/setup_pulumi.sh) and builds on the
local buildkitd registered as the buildx `remote` builder ``ml-endpoints``
(scripts/buildkit.sh); docs/toolchain.md says why and how.

Behaviour:
- ``Image`` *is* a ``pulumi_docker_build.Image`` with the project's defaults: build with no
  network (``RUN`` steps cannot reach anything; the wheels come from the host), push to
  ``repository:tag``, nothing built during preview (``build_on_preview=False``).
- The provider hashes the build context (its files, the Dockerfile, the ``wheels`` named
  context), so an unchanged context previews as no change.
- Tag: the first 16 hex digits of the content key (Dockerfile, context, plain build args and, for
  wheelhouse builds, the project's sources): new content, new tag.
- Outputs: ``ref`` = ``repository:tag@sha256:...`` (what pods and ``FROM`` use: it changes
  whenever the content does) and ``digest`` = ``sha256:...``. A scoring image whose build arg is
  its environment's ``ref`` is rebuilt, on top of it, whenever the environment is.
- Registry credentials: the provider's ``registries`` (infra/program.py sets them from the stack
  config secrets ``registry.username`` / ``registry.password``).
- Deleting the resource leaves the image in the registry (``retain_on_delete``: other stacks and
  rollbacks may use it).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_docker_build as dbuild

from components._hashing import project_sources_hash
from mlendpoints.paths import REPO as REPO_ROOT
from mlendpoints.paths import cache_root

WHEELHOUSE_SCRIPT = REPO_ROOT / "scripts" / "wheelhouse.sh"
# The buildx builder scripts/buildkit.sh registers (a `remote` builder on the local buildkitd).
BUILDER = os.environ.get("ML_ENDPOINTS_BUILDER", "ml-endpoints")
# The named build context a Dockerfile copies the host's wheels from (`COPY --from=wheels`).
WHEELS_CONTEXT = "wheels"
_KEY_VERSION = "images/v2"


@dataclass
class ImageArgs:
    """What to build and where to push it.

    Attributes:
        context: build context folder on this machine.
        dockerfile: Dockerfile path (may be outside the context).
        repository: registry repository, e.g. ``127.0.0.1:5000/mlendpoints/env-sklearn``.
        tag: image tag; default: the first 16 hex digits of the content key.
        build_args: ``ARG`` values; Outputs are allowed (e.g. another image's ``ref``).
        wheelhouse: ``"auto"`` gives the build the named context ``wheels`` (scripts/
            wheelhouse.sh: the project wheel plus the context's ``requirements.txt``) when the
            Dockerfile copies ``--from=wheels``; ``"yes"`` / ``"no"`` force it.
        push: push to ``repository`` (default) or only build (into BuildKit's cache).
    """

    context: str
    dockerfile: str
    repository: str
    tag: str | None = None
    build_args: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    wheelhouse: str = "auto"
    push: bool = True


def _files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _hash_tree(root: Path) -> str:
    """Content hash of a build context; a write-once staged context's marker stands for it."""
    marker = root / ".complete"
    if marker.is_file():  # components._build.stage: folder named and stamped by its content hash
        return "staged:" + marker.read_text().strip()
    h = hashlib.sha256()
    for path in _files(root):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        if path.is_symlink():
            h.update(b"link:" + os.readlink(path).encode())
        else:
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


@functools.cache
def _project_sources_hash() -> str:
    """What the image runs from the project wheel: the `scoring` package and its pins.

    Read once per program run (a Pulumi program process runs one operation), so all images of a
    run agree even if the checkout changes meanwhile.

    `components` is in the wheel too but never runs in an image, so editing it rebuilds nothing
    (scripts/wheelhouse.sh keys its cache the same way).
    """
    return project_sources_hash(REPO_ROOT)


def wants_wheelhouse(args: ImageArgs) -> bool:
    """Whether the build gets the ``wheels`` named context (see ``ImageArgs.wheelhouse``)."""
    if args.wheelhouse not in ("auto", "yes", "no"):
        raise ValueError(f"ImageArgs.wheelhouse: expected auto, yes or no, got {args.wheelhouse!r}")
    if args.wheelhouse != "auto":
        return args.wheelhouse == "yes"
    return f"--from={WHEELS_CONTEXT}" in Path(args.dockerfile).read_text()


def content_key(args: ImageArgs) -> str:
    """The image's content hash: equal keys mean an identical build."""
    context, dockerfile = Path(args.context), Path(args.dockerfile)
    if not context.is_dir():
        raise ValueError(f"ImageArgs.context: {args.context!r} is not a folder")
    if not dockerfile.is_file():
        raise ValueError(f"ImageArgs.dockerfile: {args.dockerfile!r} is not a file")
    h = hashlib.sha256(_KEY_VERSION.encode())
    h.update(b"dockerfile\0" + dockerfile.read_bytes())
    h.update(b"context\0" + _hash_tree(context).encode())
    for key, value in sorted(args.build_args.items()):
        if isinstance(value, str):  # Outputs are separate inputs: the provider's diff sees them
            h.update(f"arg\0{key}={value}\0".encode())
    if wants_wheelhouse(args):
        h.update(b"wheelhouse\0" + _project_sources_hash().encode())
    return h.hexdigest()


@functools.cache
def wheelhouse(requirements: Path | None) -> Path:
    """The wheels for the project wheel plus `requirements`, as the ``wheels`` named context.

    Made when the program runs, preview included, because the provider hashes the named context
    to tell whether the image changed; cached by its inputs, so seconds once made. Only wheels
    are made here: no image is built during preview.
    """
    if requirements is None:  # the project wheel and its runtime dependencies only
        requirements = cache_root() / "build" / "empty-requirements.txt"
        requirements.parent.mkdir(parents=True, exist_ok=True)
        if not requirements.is_file():
            requirements.write_text("")
    for _attempt in range(2):
        cmd = ["bash", str(WHEELHOUSE_SCRIPT), "-r", str(requirements)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"wheelhouse for {requirements} failed (exit {proc.returncode}):\n"
                f"{proc.stderr[-3000:]}"
            )
        try:
            return _kept(Path(proc.stdout.strip().splitlines()[-1]))
        except FileNotFoundError:  # pruned by another run of wheelhouse.sh meanwhile: remake
            continue
    raise RuntimeError(f"wheelhouse for {requirements} was removed twice while being used")


# Kept copies untouched this long are removed (a stack updated later remakes its copy: same path).
_KEPT_DAYS = 2


def _kept(wheels: Path) -> Path:
    """A copy (hard links) of a wheelhouse at `build/wheels-<key>/`, out of reach of
    scripts/wheelhouse.sh, which keeps only its 6 newest: the provider reads the named context
    at preview and again at `up`, and other stacks and tests make wheelhouses meanwhile."""
    kept = cache_root() / "build" / f"wheels-{wheels.name}"
    if not (kept / ".complete").is_file():
        tmp = kept.with_name(f"{kept.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for path in _files(wheels):
            target = tmp / path.relative_to(wheels)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError as exc:
                if not path.exists():
                    raise FileNotFoundError(path) from exc
                shutil.copy2(path, target)
        if not (wheels / ".stamp").is_file():  # removed while being copied: the copy is partial
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileNotFoundError(wheels / ".stamp")
        (tmp / ".complete").write_text(wheels.name + "\n")
        shutil.rmtree(kept, ignore_errors=True)
        try:
            tmp.rename(kept)
        except OSError:  # another program run made it meanwhile: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
            if not (kept / ".complete").is_file():
                raise
    os.utime(kept)
    cutoff = time.time() - _KEPT_DAYS * 86400
    for old in kept.parent.glob("wheels-*"):
        try:
            stale = old != kept and old.stat().st_mtime < cutoff
        except FileNotFoundError:  # removed by another run
            continue
        if stale:
            shutil.rmtree(old, ignore_errors=True)
    return kept


class Image(dbuild.Image):
    """A pushed image built by BuildKit; see the module docstring and docs/toolchain.md."""

    def __init__(
        self, name: str, args: ImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        key = content_key(args)
        context = Path(args.context).resolve()
        named: dict[str, dbuild.ContextArgs] = {}
        if wants_wheelhouse(args):
            reqs = context / "requirements.txt"
            wheels = wheelhouse(reqs if reqs.is_file() else None)
            named[WHEELS_CONTEXT] = dbuild.ContextArgs(location=str(wheels))
        super().__init__(
            name,
            context=dbuild.BuildContextArgs(location=str(context), named=named or None),
            dockerfile=dbuild.DockerfileArgs(location=str(Path(args.dockerfile).resolve())),
            build_args=dict(args.build_args),
            tags=[f"{args.repository}:{args.tag or key[:16]}"],
            push=args.push,
            network=dbuild.NetworkMode.NONE,
            builder=dbuild.BuilderConfigArgs(name=BUILDER),
            build_on_preview=False,
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True)),
        )
