"""A throwaway copy of the project and its dev stack on the local cluster (tests and bench).

The folder holds `Pulumi.yaml` (the project venv as virtualenv), `infra/` and `samples/` linked
to the checkout, and `Pulumi.dev.yaml` copied from the checkout with these changes only, so it
never collides with a real deployment: its own namespace, a NodePort the cluster picks, and
none of the user's secrets (`encryptionsalt`, `secretsprovider`, `secure:` values: they belong
to the user's state and passphrase, not to this copy's). State lives in a file backend inside
the folder, with a passphrase generated for it.
"""

from __future__ import annotations

import copy
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from mlendpoints import stack as stackmod
from mlendpoints.paths import REPO, SAMPLE

CONFIG = "ml-endpoints"  # the stack config namespace (infra/config.py)


@dataclass
class EndpointProject:
    work_dir: Path
    env: dict[str, str]
    namespace: str
    stack: auto.Stack
    log: Path
    baseline: dict[str, Any]
    """The stack's config as made (the shipped dev stack in this copy's namespace)."""

    @property
    def stack_file(self) -> Path:
        return self.work_dir / "Pulumi.dev.yaml"

    def reset_config(self) -> None:
        """Back to the baseline config, whatever earlier tests set, keeping the secrets
        provider's keys (a secret set since wrote a salt the state's secrets depend on). Only
        the config changes: the next `up` converges what is deployed."""
        doc = yaml.safe_load(self.stack_file.read_text())
        doc["config"] = copy.deepcopy(self.baseline)
        self.stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def outputs(self) -> dict[str, Any]:
        """The stack's outputs as plain values (secrets included)."""
        return {k: v.value for k, v in self.stack.outputs().items()}

    def set_config(self, values: dict[str, object]) -> None:
        """`pulumi config set --path ml-endpoints:KEY VALUE` for each item."""
        for key, value in values.items():
            self.stack.set_config(f"{CONFIG}:{key}", auto.ConfigValue(str(value)), path=True)

    def set_secret_config(self, key: str, value: str) -> None:
        """`pulumi config set --secret --path ml-endpoints:KEY VALUE`."""
        self.stack.set_config(f"{CONFIG}:{key}", auto.ConfigValue(value, secret=True), path=True)

    def remove_config(self, key: str) -> None:
        """`pulumi config rm --path ml-endpoints:KEY`."""
        self.stack.remove_config(f"{CONFIG}:{key}", path=True)

    @contextmanager
    def logged(self, title: str) -> Iterator[Callable[[str], None]]:
        """An `on_output` that appends an operation's output to LOG under `$ TITLE`."""
        with self.log.open("a") as log:
            log.write(f"\n$ {title}\n")
            log.flush()

            def out(text: str) -> None:
                log.write(text + "\n")
                log.flush()

            yield out


STACK_SECRETS = ("encryptionsalt", "secretsprovider", "encryptedkey")
"""Stack-file keys tied to the user's secrets provider."""


def dev_stack_config(namespace: str, source: Path | None = None) -> dict[str, Any]:
    """The shipped Pulumi.dev.yaml (or SOURCE), moved to NAMESPACE and to a NodePort the
    cluster picks, with the user's secrets provider keys and secure values left out."""
    doc = yaml.safe_load((source or REPO / "Pulumi.dev.yaml").read_text())
    for key in STACK_SECRETS:
        doc.pop(key, None)
    config = without_secure(doc["config"])
    doc["config"] = config
    config["ml-endpoints:cluster"]["namespace"] = namespace
    config["ml-endpoints:endpoint"]["router"].pop("node_port", None)
    return doc


def without_secure(value: Any) -> Any:
    """VALUE with every `{secure: ...}` entry (encrypted with the user's passphrase) dropped."""
    if isinstance(value, dict):
        return {
            k: without_secure(v)
            for k, v in value.items()
            if not (isinstance(v, dict) and set(v) == {"secure"})
        }
    if isinstance(value, list):
        return [
            without_secure(v) for v in value if not (isinstance(v, dict) and set(v) == {"secure"})
        ]
    return value


def make_project(folder: Path, prefix: str = "mle-e2e") -> EndpointProject:
    """The project copy in FOLDER (empty or new) with stack `dev` selected, nothing deployed."""
    for model in ("model", "model-v2"):
        if not (SAMPLE / model / "model.pkl").is_file():
            raise FileNotFoundError(f"{SAMPLE / model} missing: run `make sample-model`")
    work = folder / "project"
    work.mkdir(parents=True)
    pulumi_yaml = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    pulumi_yaml["runtime"]["options"]["virtualenv"] = str(REPO / ".venv")
    (work / "Pulumi.yaml").write_text(yaml.safe_dump(pulumi_yaml, sort_keys=False))
    for linked in ("infra", "samples"):
        (work / linked).symlink_to(REPO / linked)
    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    doc = dev_stack_config(namespace)
    (work / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    state = folder / "state"
    state.mkdir()
    environ = {
        **os.environ,
        "PULUMI_BACKEND_URL": f"file://{state}?{stackmod.FILE_BACKEND_QUERY}",
        "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(24),
    }
    environ.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    env = stackmod.pulumi_env(REPO, environ)
    cli = stackmod.cli_root(env)
    if not (cli / "bin" / "pulumi").is_file():
        raise FileNotFoundError(f"{cli}/bin/pulumi missing: run `make setup`")
    stack = auto.create_or_select_stack(
        "dev",
        work_dir=str(work),
        opts=auto.LocalWorkspaceOptions(
            env_vars=env, pulumi_command=auto.PulumiCommand(root=str(cli))
        ),
    )
    return EndpointProject(
        work, env, namespace, stack, folder / "pulumi.log", copy.deepcopy(doc["config"])
    )
