"""Read a stack's outputs and cluster config through the Pulumi Automation API.

The environment is the one `scripts/env.sh` sets up (project CLI, `PULUMI_HOME` under the
cache, local file backend, the stack's own passphrase); variables already set in the caller's
environment win, as they do in env.sh. Nothing here talks to the cluster or changes the stack.

Passphrases: each stack gets its own, generated on first use into
`$ML_ENDPOINTS_CACHE/state/ml-endpoints/<stack>.passphrase` (0600, folder 0700), unless the
caller set `PULUMI_CONFIG_PASSPHRASE(_FILE)` or the stack file names another secrets provider
(`secretsprovider: awskms://...`). A stack whose file already has an `encryptionsalt` but no
passphrase file was made with the old shared default: that one is adopted (with a warning) so
its state still opens.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import string
import sys
from pathlib import Path
from typing import Any

from mlendpoints.paths import REPO, cache_root
from mlendpoints.versions import KUBERNETES_VERSION, PULUMI_VERSION

LEGACY_PASSPHRASE = "ml-endpoints-local-dev"  # the shared default before per-stack passphrases
FILE_BACKEND_QUERY = "metadata=skip"  # no .attrs sidecars: see scripts/env.sh
PROJECT = "ml-endpoints"


class StackError(Exception):
    """The stack cannot be read; the message names the stack and what to run."""


def project_root(start: Path | None = None) -> Path:
    """The folder holding `Pulumi.yaml`: the current folder or a parent, else this checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    if (REPO / "Pulumi.yaml").is_file():
        return REPO
    raise StackError(
        f"no Pulumi.yaml in {here} or its parents; run ml-endpoints from the project folder"
    )


def pulumi_env(
    root: Path, environ: dict[str, str] | None = None, stack: str | None = None
) -> dict[str, str]:
    """The variables `scripts/env.sh` exports, with the caller's own values winning; with
    STACK, that stack's passphrase (see the module docstring)."""
    env = dict(os.environ if environ is None else environ)
    cache = cache_root(env)
    env.setdefault("ML_ENDPOINTS_CACHE", str(cache))
    env.setdefault("PULUMI_HOME", str(cache / "pulumi-home"))
    env.setdefault("PULUMI_BACKEND_URL", f"file://{cache / 'state'}?{FILE_BACKEND_QUERY}")
    if stack is not None:
        stack_passphrase(env, root, stack)
    env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    env["PULUMI_DISABLE_REGISTRY_RESOLVE"] = "true"
    path = [str(cli_root(env) / "bin"), str(root / ".venv" / "bin")]
    env["PATH"] = os.pathsep.join([*path, env.get("PATH", "")])
    return env


def passphrase_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the generated per-stack passphrases live (0700)."""
    return cache_root(environ) / "state" / PROJECT


def stack_passphrase(env: dict[str, str], root: Path, stack: str) -> None:
    """Point ENV at STACK's own passphrase file, creating it (0600) on first use; leave ENV
    alone when the caller chose a passphrase or the stack uses another secrets provider.

    A `PULUMI_CONFIG_PASSPHRASE_FILE` inside `passphrase_dir()` is ours (scripts/env.sh set it
    for the stack it was sourced for), so it is switched to STACK's.
    """
    folder = passphrase_dir(env)
    given = env.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if env.get("PULUMI_CONFIG_PASSPHRASE") or (given and Path(given).parent != folder):
        return
    stack_file = root / f"Pulumi.{stack}.yaml"
    text = stack_file.read_text() if stack_file.is_file() else ""
    if re.search(r"^secretsprovider:\s*\S+://", text, re.MULTILINE):
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        return
    path = folder / f"{stack}.passphrase"
    if not path.is_file():
        legacy = re.search(r"^encryptionsalt:", text, re.MULTILINE) is not None
        if legacy:
            sys.stderr.write(
                f"note: stack {stack!r} was made with the old shared passphrase; it is kept in "
                f"{path}. Give it its own: docs/components.md, 'Secrets at rest'\n"
            )
        write_private(path, LEGACY_PASSPHRASE if legacy else secrets.token_urlsafe(32))
    env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(path)


def write_private(path: Path, text: str) -> None:
    """Write TEXT to PATH readable by its owner only (folder 0700), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    os.chmod(path.parent.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    tmp.replace(path)


def cli_root(environ: dict[str, str] | None = None) -> Path:
    """Where `make setup` installs the Pulumi CLI (bin/pulumi)."""
    return cache_root(environ) / "tools" / f"pulumi-{PULUMI_VERSION}"


def select(stack_name: str, root: Path | None = None) -> Any:
    """The existing stack ``stack_name`` (an Automation API `Stack`); never creates one."""
    try:
        from pulumi import automation as auto
    except ImportError as exc:  # the infra extra is not installed
        raise StackError(f"the Pulumi SDK is not installed ({exc}); run `make python`") from None
    root = root or project_root()
    env = pulumi_env(root, stack=stack_name)
    backend = env["PULUMI_BACKEND_URL"]
    if backend.startswith("file://"):
        Path(backend.removeprefix("file://").split("?")[0]).mkdir(parents=True, exist_ok=True)
    cli = cli_root(env)
    command = None
    if (cli / "bin" / "pulumi").is_file():
        command = auto.PulumiCommand(root=str(cli))
    opts = auto.LocalWorkspaceOptions(env_vars=env, pulumi_command=command)
    try:
        return auto.select_stack(stack_name=stack_name, work_dir=str(root), opts=opts)
    except auto.errors.StackNotFoundError:
        raise StackError(
            f"stack {stack_name!r} does not exist in {backend}; deploy it with "
            f"`make deploy STACK={stack_name}` (or `. scripts/env.sh && pulumi up "
            f"--stack {stack_name}`)"
        ) from None
    except FileNotFoundError as exc:
        raise StackError(
            f"the Pulumi CLI was not found ({exc}); run `make setup`, then `. scripts/env.sh`"
        ) from None
    except auto.errors.CommandError as exc:
        raise StackError(
            f"cannot select stack {stack_name!r} in {backend}: {_last_lines(str(exc))}"
        ) from None


def read_outputs(stack_name: str) -> dict[str, Any]:
    """The stack's outputs as plain values (secrets included: callers decide what to print)."""
    stack = select(stack_name)
    try:
        outputs = stack.outputs()
    except Exception as exc:  # CommandError: wrong passphrase, corrupt state, ...
        raise StackError(
            f"cannot read the outputs of stack {stack_name!r}: {_last_lines(str(exc))}"
        ) from None
    values = {name: out.value for name, out in outputs.items()}
    if "scoring_uri" not in values:
        raise StackError(
            f"stack {stack_name!r} has no outputs (nothing deployed yet); run "
            f"`make deploy STACK={stack_name}` (or `pulumi up --stack "
            f"{stack_name}`)"
        )
    return values


def read_cluster(stack_name: str) -> dict[str, Any]:
    """The stack's `ml-endpoints:cluster` config section (kubeconfig path, context, ...)."""
    stack = select(stack_name)
    try:
        value = stack.get_config(f"{PROJECT}:cluster", path=False)
    except Exception:  # the key is not set: the defaults apply
        return {}
    try:
        return dict(json.loads(value.value))
    except (TypeError, ValueError):
        return {}


def kubectl(environ: dict[str, str] | None = None) -> str | None:
    """kubectl on PATH, else the one `make cluster-up` built for the local cluster."""
    env = os.environ if environ is None else environ
    found = shutil.which("kubectl", path=env.get("PATH"))
    if found:
        return found
    version = env.get("ML_ENDPOINTS_K8S_VERSION") or KUBERNETES_VERSION
    built = cache_root(env) / "tools" / f"kubernetes-{version}" / "bin" / "kubectl"
    return str(built) if built.is_file() else None


def kubeconfig_path(cluster: dict[str, Any], root: Path | None = None) -> Path:
    """The kubeconfig file the stack uses (`$VARS`/`~` expanded, relative to the project)."""
    raw = str(cluster.get("kubeconfig") or "$ML_ENDPOINTS_CACHE/cluster/kubeconfig")
    env = {**os.environ, "ML_ENDPOINTS_CACHE": str(cache_root())}
    expanded = string.Template(raw).safe_substitute(env)
    path = Path(expanded).expanduser()
    return path if path.is_absolute() else (root or project_root()) / path


def _last_lines(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])
