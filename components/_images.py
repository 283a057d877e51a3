"""Container images for the Pulumi program: build with the local Docker engine, push, pin.

Why a dynamic provider over the Docker SDK for Python: it needs nothing beyond the Docker
engine and the `docker` package (both installed by `make setup`), works with Debian's Docker
20.10 daemon and its legacy builder, and builds with ``--network none`` from a host-made
wheelhouse (pip inside a build cannot reach PyPI here). The alternative, the
pulumi-docker-build provider, drives BuildKit through buildx and would need another Go build
plus a BuildKit new enough for it; see docs/toolchain.md.

Behaviour:
- The image's content key is computed when the program runs (preview or up): Dockerfile text,
  build context files, plain build args and, for wheelhouse builds, the requirements, the
  constraints and the project's sources. An unchanged key previews as no change; nothing is
  built during preview.
- On ``up`` (create/update) the image is built (progress lines logged with
  ``pulumi.log.info``), pushed, and its registry digest read back.
- Outputs: ``ref`` = ``repository:tag@sha256:...`` (what pods and ``FROM`` should use: it
  changes whenever the content does, even if a caller reuses a tag) and ``digest`` =
  ``sha256:...`` as the registry reports it.
- Deleting the resource leaves the image in the registry (other stacks or rollbacks may use it).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic as dyn

from components._hashing import project_sources_hash
from mlendpoints.paths import REPO as REPO_ROOT

WHEELHOUSE_SCRIPT = REPO_ROOT / "scripts" / "wheelhouse.sh"
_KEY_VERSION = "images/v1"


@dataclass
class ImageArgs:
    """What to build and where to push it.

    Attributes:
        context: build context folder on this machine.
        dockerfile: Dockerfile path (may be outside the context).
        repository: registry repository, e.g. ``127.0.0.1:5000/mlendpoints/env-sklearn``.
        tag: image tag; default: the first 16 hex digits of the content key.
        build_args: ``ARG`` values; Outputs are allowed (e.g. another image's ``ref``).
        wheelhouse: ``"auto"`` adds ``wheels/`` (scripts/wheelhouse.sh) to the context when the
            Dockerfile copies ``wheels/``, for the project wheel plus the context's
            ``requirements.txt`` (none: the project only); ``"yes"`` / ``"no"`` force it.
        push: push to ``repository`` (default) or only build locally.
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
    """Whether the build context gets a ``wheels/`` folder (see ``ImageArgs.wheelhouse``)."""
    if args.wheelhouse not in ("auto", "yes", "no"):
        raise ValueError(f"ImageArgs.wheelhouse: expected auto, yes or no, got {args.wheelhouse!r}")
    if args.wheelhouse != "auto":
        return args.wheelhouse == "yes"
    return "wheels/" in Path(args.dockerfile).read_text()


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
        if isinstance(value, str):  # Outputs are separate inputs: the diff sees them
            h.update(f"arg\0{key}={value}\0".encode())
    if wants_wheelhouse(args):
        h.update(b"wheelhouse\0" + _project_sources_hash().encode())
    return h.hexdigest()


# --- the provider (runs in the dynamic provider process on preview/up) -----------------------


def _log(message: str) -> None:
    try:
        pulumi.log.info(message)
    except Exception:  # no engine connection: still visible in the provider's log
        print(message, flush=True)


def _wheelhouse(requirements: Path) -> Path:
    cmd = ["bash", str(WHEELHOUSE_SCRIPT), "-r", str(requirements)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"wheelhouse for {requirements} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def _link_tree(src: Path, dest: Path) -> None:
    """Copy a folder by hard links where possible (wheelhouses are large, the copy is brief)."""
    for path in _files(src):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def _client() -> Any:
    import docker  # the infra extra; imported here so `import components` stays light

    return docker.APIClient(version="auto", timeout=900, **docker.utils.kwargs_from_env())


def _build_and_push(props: Mapping[str, Any]) -> dict[str, Any]:
    repository, tag = props["repository"], props["tag"]
    name = f"{repository}:{tag}"
    context = Path(props["context"])
    build_args = {k: str(v) for k, v in (props.get("build_args") or {}).items()}
    client = _client()
    with tempfile.TemporaryDirectory(prefix="image-ctx-") as tmp:
        if props.get("use_wheelhouse"):
            reqs = context / "requirements.txt"
            if not reqs.is_file():  # the project wheel and its runtime dependencies only
                reqs = Path(tmp) / "requirements.txt"
                reqs.write_text("")
            _log(f"{name}: wheelhouse for {reqs}")
            wheels = _wheelhouse(reqs)
            staged = Path(tmp) / "ctx"
            _link_tree(context, staged)
            _link_tree(wheels, staged / "wheels")
            if not (staged / "requirements.txt").exists():
                (staged / "requirements.txt").write_text("")
            context = staged
        _log(f"{name}: building ({Path(props['dockerfile']).name}, --network none)")
        last_error = None
        tail: list[str] = []
        for chunk in client.build(
            path=str(context),
            dockerfile=str(props["dockerfile"]),
            tag=name,
            buildargs=build_args,
            network_mode="none",
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        ):
            line = str(chunk.get("stream", "")).strip()
            if line:
                tail = [*tail[-40:], line]
                if line.startswith("Step "):
                    _log(f"{name}: {line}")
            if "error" in chunk:
                last_error = chunk.get("error")
        if last_error:
            raise RuntimeError(f"building {name} failed: {last_error}\n" + "\n".join(tail))
    image_id = client.inspect_image(name)["Id"]
    digest = ""
    if props.get("push", True):
        _log(f"{name}: pushing")
        for chunk in client.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise RuntimeError(f"pushing {name} failed: {chunk['error']}")
            digest = (chunk.get("aux") or {}).get("Digest", digest)
        if not digest:
            raise RuntimeError(f"pushing {name}: the registry reported no digest")
    _log(f"{name}: done {digest or image_id}")
    ref = f"{name}@{digest}" if digest else name
    return {"ref": ref, "digest": digest, "image_id": image_id}


_DIFF_KEYS = (
    "content_key",
    "repository",
    "tag",
    "dockerfile",
    "build_args",
    "push",
    "use_wheelhouse",
)


class ImageProvider(dyn.ResourceProvider):
    """Create/update = build + push; diff = content key and target; delete leaves the image."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        changed = [k for k in _DIFF_KEYS if olds.get(k) != news.get(k)]
        return dyn.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        outs = _build_and_push(props)
        return dyn.CreateResult(id_=f"{props['repository']}:{props['tag']}", outs={**props, **outs})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        return dyn.UpdateResult(outs={**news, **_build_and_push(news)})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class Image(dyn.Resource):
    """A built and pushed image; see the module docstring and docs/toolchain.md."""

    ref: pulumi.Output[str]
    digest: pulumi.Output[str]
    image_id: pulumi.Output[str]
    content_key: pulumi.Output[str]

    def __init__(
        self, name: str, args: ImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        key = content_key(args)
        tag = args.tag or key[:16]
        props: dict[str, Any] = {
            "context": str(Path(args.context).resolve()),
            "dockerfile": str(Path(args.dockerfile).resolve()),
            "repository": args.repository,
            "tag": tag,
            "build_args": dict(args.build_args),
            "push": args.push,
            "use_wheelhouse": wants_wheelhouse(args),
            "content_key": key,
            "ref": None,
            "digest": None,
            "image_id": None,
        }
        super().__init__(ImageProvider(), name, props, opts)
