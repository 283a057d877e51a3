"""The real Pulumi CLI, language host and Kubernetes provider, driven by the Automation API.

No cluster: the Kubernetes provider renders manifests to a folder (`render_yaml_to_directory`),
which still runs the real provider binary for every ConfigMap. The inline program runs in this
process (the CLI connects to the Automation API's language server); the on-disk program runs
through `pulumi-language-python` and its exec script, as `pulumi up` in a shell does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from pulumi import automation as auto

from mlendpoints.paths import REPO as ROOT
from mlendpoints.versions import PULUMI_DOCKER_BUILD_VERSION, PULUMI_VERSION
from mlendpoints.versions import PULUMI_KUBERNETES_VERSION as K8S_VERSION
from tests.support.inline import inline_stack, summary

pytestmark = pytest.mark.toolchain


def _command(env: dict[str, str]) -> auto.PulumiCommand:
    root = Path(env["ML_ENDPOINTS_CACHE"]) / "tools" / f"pulumi-{PULUMI_VERSION}"
    return auto.PulumiCommand(root=str(root))


def _rendered_configmaps(folder: Path) -> dict[str, dict[str, Any]]:
    docs = {}
    for path in folder.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ConfigMap":
                docs[doc["metadata"]["name"]] = doc
    return docs


def test_cli_and_plugins_are_the_pinned_versions(toolchain_env: dict[str, str]) -> None:
    def run(*args: str) -> str:
        return subprocess.run(
            ["pulumi", *args],
            env=toolchain_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout

    assert run("version").strip() == f"v{PULUMI_VERSION}"
    plugins = [
        {k: p[k] for k in ("name", "kind", "version")}
        for p in json.loads(run("plugin", "ls", "--json"))
    ]
    assert {"name": "kubernetes", "kind": "resource", "version": K8S_VERSION} in plugins
    assert {
        "name": "docker-build",
        "kind": "resource",
        "version": PULUMI_DOCKER_BUILD_VERSION,
    } in plugins
    found = shutil.which("pulumi", path=toolchain_env["PATH"])
    assert found is not None, "pulumi not on the PATH scripts/env.sh sets"
    bin_dir = Path(found).parent
    for tool in (
        "pulumi-language-python",
        "pulumi-language-python-exec",
        "pulumi-resource-pulumi-python",
    ):
        assert (bin_dir / tool).is_file(), f"{tool} missing beside pulumi in {bin_dir}"


def test_inline_program_with_kubernetes_provider(
    toolchain_env: dict[str, str], tmp_path: Path
) -> None:
    rendered = tmp_path / "rendered"
    greeting = {"value": "hello"}

    def program() -> None:
        provider = k8s.Provider("render", render_yaml_to_directory=str(rendered))
        cm = k8s.core.v1.ConfigMap(
            "settings",
            metadata={"name": "toolchain-test", "namespace": "default"},
            data={"greeting": greeting["value"]},
            opts=pulumi.ResourceOptions(provider=provider),
        )
        pulumi.export("name", cm.metadata.name)
        pulumi.export("greeting", cm.data["greeting"])

    stack = inline_stack(toolchain_env, "toolchain-inline", program)
    assert stack.workspace.pulumi_version == PULUMI_VERSION
    try:
        preview = stack.preview()
        assert summary(preview.change_summary) == {"create": 3}  # stack, provider, ConfigMap
        assert not rendered.exists(), "preview must not render manifests"

        up = stack.up()
        assert up.summary.result == "succeeded"
        assert summary(up.summary.resource_changes) == {"create": 3}
        assert up.outputs["name"].value == "toolchain-test"
        assert up.outputs["greeting"].value == "hello"
        cms = _rendered_configmaps(rendered)
        assert cms["toolchain-test"]["data"] == {"greeting": "hello"}

        assert summary(stack.preview().change_summary) == {"same": 3}

        # The provider's own rule (no enableConfigMapMutable): new ConfigMap data => replace.
        greeting["value"] = "bonjour"
        assert summary(stack.preview().change_summary) == {"same": 2, "replace": 1}
        up = stack.up()
        assert summary(up.summary.resource_changes) == {"same": 2, "replace": 1}
        assert _rendered_configmaps(rendered)["toolchain-test"]["data"] == {"greeting": "bonjour"}

        down = stack.destroy()
        assert summary(down.summary.resource_changes) == {"delete": 3}
    finally:
        stack.workspace.remove_stack("test", force=True)


LOCAL_PROGRAM = """\
import pulumi
import pulumi_kubernetes as k8s

cfg = pulumi.Config()
provider = k8s.Provider("render", render_yaml_to_directory=cfg.require("render_to"))
cm = k8s.core.v1.ConfigMap(
    "settings",
    metadata={"name": "from-disk"},
    data={"greeting": cfg.require("greeting")},
    opts=pulumi.ResourceOptions(provider=provider),
)
if cfg.get_bool("fail"):
    raise RuntimeError("program failed on purpose: fail=true")
pulumi.export("greeting", cm.data["greeting"])
pulumi.export("token", cfg.require_secret("token"))
"""


def _local_stack(env: dict[str, str], work: Path) -> auto.Stack:
    return auto.create_or_select_stack(
        "test",
        work_dir=str(work),
        opts=auto.LocalWorkspaceOptions(env_vars=env, pulumi_command=_command(env)),
    )


def test_program_on_disk_runs_through_the_language_host(
    toolchain_env: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    (work / "Pulumi.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "toolchain-local",
                "runtime": {"name": "python", "options": {"virtualenv": str(ROOT / ".venv")}},
            }
        )
    )
    (work / "__main__.py").write_text(LOCAL_PROGRAM)
    rendered = tmp_path / "rendered"
    stack = _local_stack(toolchain_env, work)
    try:
        stack.set_all_config(
            {
                "render_to": auto.ConfigValue(str(rendered)),
                "greeting": auto.ConfigValue("hi"),
                "token": auto.ConfigValue("not-a-real-secret", secret=True),
            }
        )
        assert summary(stack.preview().change_summary) == {"create": 3}
        up = stack.up()
        assert summary(up.summary.resource_changes) == {"create": 3}
        assert up.outputs["greeting"].value == "hi"
        assert up.outputs["token"].secret is True
        assert up.outputs["token"].value == "not-a-real-secret"
        assert _rendered_configmaps(rendered)["from-disk"]["data"] == {"greeting": "hi"}
        assert summary(stack.preview().change_summary) == {"same": 3}

        # A failing program: the host reports the program's error and the update fails.
        stack.set_config("fail", auto.ConfigValue("true"))
        with pytest.raises(auto.errors.CommandError) as err:
            stack.up()
        assert "program failed on purpose: fail=true" in str(err.value)
    finally:
        stack.workspace.remove_stack("test", force=True)
