"""Write a single-layer container image as a `docker save` tarball, or push it, without Docker.

The cluster's own images (pause, CoreDNS, the cluster tests' server) are one static binary
each. containerd imports the tarball with `ctr -n k8s.io images import`; `push()` uploads
the same image to a registry over the Docker Registry HTTP API v2 (plain http: the local
registry on 127.0.0.1:5000). Output is byte-for-byte reproducible (fixed mtimes, owners and
order), so the image ID only changes with the files.

Usage: python3 image_tar.py OUT.tar REF --file SRC:DEST[:MODE] ... [--entrypoint JSON]
       [--user UID:GID] [--port N] [--env K=V] [--push]
With --push, REF must be HOST:PORT/NAME:TAG and OUT.tar is not written.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import json
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple


def _layer(files: list[tuple[Path, str, int]]) -> bytes:
    """Tar of FILES (source, path in image, mode) plus their parent directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs: set[str] = set()
        for _, dest, _ in files:
            parts = dest.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for src, dest, mode in sorted(files, key=lambda f: f[1]):
            data = src.read_bytes()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _config(
    layer: bytes, entrypoint: list[str], user: str, ports: Sequence[int], env: Sequence[str]
) -> bytes:
    cfg: dict[str, object] = {"Entrypoint": entrypoint, "Env": list(env), "User": user}
    if ports:
        cfg["ExposedPorts"] = {f"{p}/tcp": {} for p in ports}
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": cfg,
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()],
            },
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "image_tar.py"}],
        },
        sort_keys=True,
    ).encode()


class Spec(NamedTuple):
    """What the image holds; `build()` and `push()` write the same layer and config from it.

    A NamedTuple, not a dataclass: the cluster tests load this file with no `sys.modules` entry.
    """

    files: list[tuple[Path, str, int]]  # (source, path in the image, mode)
    entrypoint: list[str]
    user: str = ""
    ports: Sequence[int] = ()
    env: Sequence[str] = ()

    def blobs(self) -> tuple[bytes, bytes]:
        """The layer tar and the image config that names its digest."""
        layer = _layer(self.files)
        return layer, _config(layer, self.entrypoint, self.user, self.ports, self.env)


def build(out: Path, ref: str, spec: Spec) -> str:
    """Write the `docker save` tarball; return the image ID (config digest)."""
    layer, config = spec.blobs()
    layer_hex = hashlib.sha256(layer).hexdigest()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{config_hex}.json", "RepoTags": [ref], "Layers": [f"{layer_hex}/layer.tar"]}]
    ).encode()
    with tarfile.open(out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (
            (f"{layer_hex}/layer.tar", layer),
            (f"{config_hex}.json", config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return "sha256:" + config_hex


def _request(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        return urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode(errors="replace")
        raise RuntimeError(f"registry answered {exc.code} to {method} {url}: {body}") from None


def push(ref: str, spec: Spec) -> str:
    """Push the image to REF (HOST:PORT/NAME:TAG, plain http); return the manifest digest."""
    host, _, rest = ref.partition("/")
    name, sep, tag = rest.rpartition(":")
    if not (host and name and sep and tag):
        raise ValueError(f"push wants HOST:PORT/NAME:TAG, got {ref!r}")
    layer, config = spec.blobs()
    blob = gzip.compress(layer, mtime=0)
    base = f"http://{host}/v2/{name}"
    descs = []
    for data, media in (
        (config, "application/vnd.docker.container.image.v1+json"),
        (blob, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        descs.append({"mediaType": media, "size": len(data), "digest": digest})
        try:
            _request("HEAD", f"{base}/blobs/{digest}").close()
            continue  # already there
        except RuntimeError:
            pass
        with _request("POST", f"{base}/blobs/uploads/") as resp:
            location = resp.headers["Location"]
        if location.startswith("/"):
            location = f"http://{host}{location}"
        sep_q = "&" if "?" in location else "?"
        _request(
            "PUT",
            f"{location}{sep_q}digest={digest}",
            data,
            {"Content-Type": "application/octet-stream"},
        ).close()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": descs[0],
            "layers": descs[1:],
        }
    ).encode()
    _request(
        "PUT",
        f"{base}/manifests/{tag}",
        manifest,
        {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
    ).close()
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def _file_arg(text: str) -> tuple[Path, str, int]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--file wants SRC:DEST[:MODE], got {text!r}")
    src = Path(parts[0])
    if not src.is_file():
        raise argparse.ArgumentTypeError(f"--file source {src} does not exist")
    return src, parts[1], int(parts[2], 8) if len(parts) == 3 else 0o755


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("ref")
    p.add_argument("--file", type=_file_arg, action="append", required=True)
    p.add_argument("--entrypoint", default=None, help="JSON list; default: first file")
    p.add_argument("--user", default="")
    p.add_argument("--port", type=int, action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--push", action="store_true", help="push REF to its registry instead")
    a = p.parse_args(argv)
    entry = json.loads(a.entrypoint) if a.entrypoint else ["/" + a.file[0][1].strip("/")]
    spec = Spec(a.file, entry, a.user, a.port, a.env)
    print(push(a.ref, spec) if a.push else build(a.out, a.ref, spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
