"""Environment: the runtime a scoring script needs, as an image rebuilt when its spec changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pulumi

from components import _build, rules
from components._conda import CondaError, read_requirements, requirements_from_conda
from components._hashing import hash_parts


@dataclass
class EnvironmentArgs:
    """Exactly one of `conda_file`, `requirements_file`, `requirements` or `image`.

    Attributes:
        conda_file: conda YAML; its packages are installed with pip (conda-only ones are an error).
        requirements_file: a pip requirements file.
        requirements: pip requirement lines.
        image: a prebuilt environment image used as is (nothing is built).
        base_image: image the environment is built on (the offline Debian base here,
            `python:3.11-slim` elsewhere).
        python: the base image's Python `major.minor`; a conda `python=` pin must agree.
        registry: where images are pushed, e.g. `127.0.0.1:5000`.
    """

    conda_file: str | None = None
    requirements_file: str | None = None
    requirements: list[str] | None = None
    image: str | None = None
    base_image: str = "ml-endpoints/base:bookworm"
    python: str = "3.11"
    registry: str = "127.0.0.1:5000"
    extra_build_args: dict[str, str] = field(default_factory=dict)


class Environment(pulumi.ComponentResource):
    """Resolves the spec to pip requirements, hashes it, and declares the environment image.

    The build context is staged by the spec hash and the image is tagged by the pipeline's content
    key, so an unchanged spec (and server) previews as no change and is never rebuilt.
    """

    image_ref: pulumi.Output[str]
    spec_hash: pulumi.Output[str]
    requirements: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: EnvironmentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        reqs = _resolve(name, args)
        super().__init__("mlendpoints:index:Environment", name, {}, opts)
        self.env_name = name
        self.resolved_requirements = reqs
        self.digest = hash_parts(
            [
                "env/v1",
                args.image or "",
                args.base_image,
                args.python,
                *reqs,
                *(f"{k}={v}" for k, v in sorted(args.extra_build_args.items())),
            ]
        )
        self.tag = self.digest[:16]
        self.image = None
        if args.image:
            self.image_ref = pulumi.Output.from_input(args.image)
        else:
            from components._images import Image, ImageArgs  # owned by the toolchain area

            context = _build.stage("env", self.digest, {"requirements.txt": "\n".join(reqs) + "\n"})
            self.image = Image(
                f"{name}-image",
                ImageArgs(
                    context=str(context),
                    dockerfile=str(_build.ENVIRONMENT_DOCKERFILE),
                    build_args={
                        "BASE_IMAGE": args.base_image,
                        "PYTHON_VERSION": args.python,
                        **args.extra_build_args,
                    },
                    repository=f"{args.registry}/mlendpoints/env-{name}",
                    # No tag: the image pipeline tags by its content key, which also covers the
                    # server package installed into every environment.
                ),
                pulumi.ResourceOptions(parent=self),
            )
            self.image_ref = self.image.ref
        self.spec_hash = pulumi.Output.from_input(self.digest)
        self.requirements = pulumi.Output.from_input(reqs)
        self.register_outputs(
            {
                "image_ref": self.image_ref,
                "spec_hash": self.spec_hash,
                "requirements": self.requirements,
            }
        )


def _resolve(name: str, args: EnvironmentArgs) -> list[str]:
    """Requirement lines from whichever source is given; errors name the environment."""
    problems = rules.check_name(f"environment {name!r} name", name)
    problems += rules.check_environment_source(f"environment {name!r}", args)
    if problems:
        raise ValueError("\n".join(problems))
    if args.image is not None:
        return []
    if args.requirements is not None:
        return [r.strip() for r in args.requirements if r.strip()]
    path = Path(args.conda_file or args.requirements_file or "").expanduser()
    if not path.is_file():
        key = "conda_file" if args.conda_file else "requirements_file"
        raise ValueError(f"environment {name!r} {key}: {str(path)!r} is not a file")
    if args.requirements_file:
        return read_requirements(path)
    try:
        return requirements_from_conda(path.read_text(), path.name, name, args.python)
    except CondaError as exc:
        raise ValueError(str(exc)) from exc
