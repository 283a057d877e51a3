"""ModelAsset: model files as a content-addressed, versioned asset baked into scoring images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pulumi

from components import rules
from components._hashing import files_under, hash_tree


@dataclass
class ModelAssetArgs:
    """Model files: a pickle/joblib file, an MLflow model folder, or any folder of files.

    Attributes:
        path: file or folder on the machine running Pulumi.
        version: user version label; defaults to the first 12 hex digits of the content hash.
        description: free text, kept as an output.
        tags: free key/values, kept as an output.
    """

    path: str
    version: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)


class ModelAsset(pulumi.ComponentResource):
    """Hashes the model files at program time; the digest tags every image built from them.

    The same files give the same sha256 and version, so `pulumi preview` shows no change; changed
    files give a new digest, so only the deployments that use this model get a new image.
    """

    name: pulumi.Output[str]
    version: pulumi.Output[str]
    sha256: pulumi.Output[str]
    path: pulumi.Output[str]

    def __init__(
        self, name: str, args: ModelAssetArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        problems = rules.check_name(f"model {name!r} name", name)
        source = Path(args.path).expanduser()
        if not source.exists():
            problems.append(f"model {name!r} path: {str(source)!r} does not exist")
        elif not files_under(source):
            problems.append(f"model {name!r} path: {str(source)!r} holds no files")
        if args.version is not None and not _valid_version(args.version):
            problems.append(
                f"model {name!r} version: {args.version!r} must be 1-64 chars of letters, "
                f"digits, '.', '_' or '-'"
            )
        if problems:
            raise ValueError("\n".join(problems))
        super().__init__("mlendpoints:index:ModelAsset", name, {}, opts)
        self.local_path = source.resolve()
        self.content_hash = hash_tree(self.local_path)
        self.version_label = args.version or self.content_hash[:12]
        self.model_name = name
        self.name = pulumi.Output.from_input(name)
        self.version = pulumi.Output.from_input(self.version_label)
        self.sha256 = pulumi.Output.from_input(self.content_hash)
        self.path = pulumi.Output.from_input(str(self.local_path))
        self.register_outputs(
            {
                "name": self.name,
                "version": self.version,
                "sha256": self.sha256,
                "path": self.path,
                "description": args.description,
                "tags": dict(args.tags),
            }
        )


def _valid_version(value: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    return 0 < len(value) <= 64 and set(value) <= allowed
