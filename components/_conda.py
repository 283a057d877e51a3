"""Conda environment files -> pip requirements (environments are installed with pip, offline).

Conda names that differ on PyPI are renamed; packages that only exist on conda channels are an
error naming the package and file, because silently dropping them would fail later inside init().
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

# Installer plumbing that conda lists but a pip environment provides itself.
SKIPPED = {"pip", "setuptools", "wheel"}
# Same project, different name on PyPI.
RENAMED = {
    "pytorch": "torch",
    "py-xgboost": "xgboost",
    "pytorch-cpu": "torch",
    "tensorflow-base": "tensorflow",
    "matplotlib-base": "matplotlib",
    "msgpack-python": "msgpack",
    "pyyaml": "PyYAML",
}
# Only on conda channels (native runtimes and toolchains): no pip equivalent.
CONDA_ONLY = {
    "cudatoolkit",
    "cudnn",
    "nccl",
    "cuda-toolkit",
    "cuda-runtime",
    "cuda-nvcc",
    "mkl",
    "mkl-service",
    "mkl_fft",
    "mkl_random",
    "blas",
    "libblas",
    "libcblas",
    "liblapack",
    "openblas",
    "libopenblas",
    "nomkl",
    "libgcc-ng",
    "libstdcxx-ng",
    "libgfortran-ng",
    "_libgcc_mutex",
    "_openmp_mutex",
    "openssl",
    "ca-certificates",
    "libffi",
    "zlib",
    "xz",
    "sqlite",
    "tk",
    "readline",
    "ncurses",
    "ld_impl_linux-64",
    "r-base",
    "gcc",
    "gxx",
    "gfortran",
    "cmake",
    "make",
}
_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")


class CondaError(ValueError):
    """A conda file that cannot become a pip requirement list; the message names the problem."""


def requirements_from_conda(text: str, source: str, env_name: str, python: str) -> list[str]:
    """Translate a conda.yaml into pip requirement lines.

    Args:
        text: the file's content.
        source: the file name, for messages.
        env_name: the environment's name, for messages.
        python: the environment's Python `major.minor`; a `python=` pin must agree with it.
    Raises:
        CondaError: unreadable YAML, a conda-only package, or a Python pin that disagrees.
    """
    where = f"environment {env_name!r}"
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CondaError(f"{where}: {source} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("dependencies", []), list):
        raise CondaError(f"{where}: {source} needs a 'dependencies:' list")
    reqs: list[str] = []
    for dep in doc.get("dependencies") or []:
        if isinstance(dep, dict):
            pip_deps = dep.get("pip")
            if set(dep) != {"pip"} or not isinstance(pip_deps, list):
                raise CondaError(f"{where}: {source} dependency {dep!r} is not a 'pip:' list")
            reqs += [str(p).strip() for p in pip_deps if str(p).strip()]
            continue
        reqs += _conda_spec(str(dep), source, where, python)
    return reqs


def _conda_spec(spec: str, source: str, where: str, python: str) -> list[str]:
    spec = spec.split("::", 1)[-1].strip()  # channel::package
    match = _SPEC.match(spec)
    if not match:
        raise CondaError(f"{where}: {spec!r} in {source} is not a package spec")
    name, rest = match.group(1), match.group(2).replace(" ", "")
    lower = name.lower()
    if lower == "python":
        _check_python_pin(rest, source, where, python)
        return []
    if lower in SKIPPED:
        return []
    if lower in CONDA_ONLY or lower.startswith(("cuda-", "libcu", "r-")):
        raise CondaError(
            f"{where}: {name!r} in {source} is conda-only; drop it or pick a base_image with it"
        )
    name = RENAMED.get(lower, name)
    if rest.startswith("=") and not rest.startswith("=="):
        version = rest[1:].split("=")[0]  # name=version=build -> name==version
        rest = f"=={version}"
    return [f"{name}{rest}"]


def _check_python_pin(rest: str, source: str, where: str, python: str) -> None:
    pin = re.match(r"^[=<>~!]*\s*(\d+)(?:\.(\d+))?", rest)
    if not pin:
        return
    major, minor = pin.group(1), pin.group(2)
    wanted = f"{major}.{minor}" if minor is not None else major
    have = ".".join(python.split(".")[:2]) if minor is not None else python.split(".")[0]
    if rest.lstrip("=").startswith(wanted) and wanted != have:
        raise CondaError(
            f"{where}: {source} pins python={rest.lstrip('=')} but the environment's python is "
            f"{python}; change one of them"
        )


def read_requirements(path: Path) -> list[str]:
    """A pip requirements file's lines without comments and blanks."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines
