"""The shipped dev stack, unmodified except for the model path, previewed against the local cluster.

Preview talks to the cluster (the Kubernetes provider reads it) but builds no image and changes
nothing: the stack's state stays empty.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi import automation as auto

from tests.preview.conftest import Project, cache_root, default_config
from tests.preview.test_preview import steps

pytestmark = [pytest.mark.toolchain, pytest.mark.cluster]


def test_default_stack_previews_against_the_local_cluster(project: Project,
                                                          trained_model: Path) -> None:
    kubeconfig = cache_root() / "cluster" / "kubeconfig"
    assert kubeconfig.is_file(), f"{kubeconfig} missing: run `make cluster-up`"
    config = default_config()
    config["ml-endpoints:models"]["diabetes"]["path"] = str(trained_model)
    project.write_config(config)
    events: list[auto.EngineEvent] = []
    stack = project.stack()
    result = stack.preview(on_event=events.append)
    ops = steps(events)
    assert set(ops.values()) == {"create"}, ops
    images = sorted(name for (typ, name) in ops if typ == "pulumi-python:dynamic:Resource"
                    and name.endswith("image"))
    assert images == ["blue-image", "diabetes-router-image", "sklearn-image"]
    assert "traffic plan (first deployment):" in result.stdout
    assert stack.export_stack().deployment.get("resources") in (None, [])
