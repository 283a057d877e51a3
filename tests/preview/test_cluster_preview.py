"""The shipped dev stack, unmodified except for the model path, previewed against the local cluster.

Preview talks to the cluster (the Kubernetes provider reads it) but builds no image and changes
nothing: the stack's state stays empty.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto

from mlendpoints.paths import cache_root
from tests.support.preview import Project, default_config, steps

pytestmark = [pytest.mark.toolchain, pytest.mark.cluster]


def test_default_stack_previews_against_the_local_cluster(
    project: Project, trained_model: Path
) -> None:
    kubeconfig = cache_root() / "cluster" / "kubeconfig"
    assert kubeconfig.is_file(), f"{kubeconfig} missing: run `make cluster-up`"
    config = default_config()
    config["ml-endpoints:models"]["diabetes"]["path"] = str(trained_model)
    project.write_config(config)
    events: list[auto.EngineEvent] = []
    stack = project.stack()
    result = stack.preview(on_event=events.append)
    ops = steps(events)
    assert set(ops.values()) == {"create", "read"}, ops  # read: the self StackReference
    images = sorted(name for (typ, name) in ops if typ == "docker-build:index:Image")
    assert images == ["blue-image", "diabetes-router-image", "sklearn-image"]
    assert "traffic plan (first deployment):" in result.stdout
    assert stack.export_stack().deployment.get("resources") in (None, [])


def test_moving_the_kubeconfig_replaces_nothing(
    project: Project, trained_model: Path, tmp_path: Path
) -> None:
    """A kubeconfig at another path, with other content for the same cluster, is an update of the
    provider only; changing `cluster.cluster_id` is what replaces it (and everything on it)."""
    original = cache_root() / "cluster" / "kubeconfig"
    doc = yaml.safe_load(original.read_text())
    doc["users"].append({"name": "unused", "user": {"token": "not-a-real-token"}})
    moved = tmp_path / "elsewhere" / "config"
    moved.parent.mkdir()
    moved.write_text(yaml.safe_dump(doc))
    config = default_config()
    config["ml-endpoints:models"]["diabetes"]["path"] = str(trained_model)
    project.write_config(config)
    stack = project.stack()
    provider_urn = "urn:pulumi:dev::ml-endpoints::pulumi:providers:kubernetes::k8s"
    stack.up(target=[provider_urn])  # state with just the provider: nothing built or deployed

    config["ml-endpoints:cluster"]["kubeconfig"] = str(moved)
    project.write_config(config)
    events: list[auto.EngineEvent] = []
    preview = stack.preview(on_event=events.append)
    ops = steps(events)
    assert ops[("pulumi:providers:kubernetes", "k8s")] == "update"
    assert "replace" not in preview.change_summary
    assert "not-a-real-token" not in preview.stdout

    config["ml-endpoints:cluster"]["cluster_id"] = "another-cluster"
    project.write_config(config)
    events = []
    stack.preview(on_event=events.append)
    provider_ops = {
        str(e.resource_pre_event.metadata.op.value)
        for e in events
        if e.resource_pre_event and e.resource_pre_event.metadata.urn == provider_urn
    }
    assert "replace" in provider_ops, provider_ops
