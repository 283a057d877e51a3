"""Fixtures shared by every tier. Shared helpers: tests/support/ and mlendpoints/_procs.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mlendpoints._procs import free_port
from mlendpoints._project import EndpointProject, make_project
from mlendpoints.kube import check_cluster


def pytest_configure(config: pytest.Config) -> None:
    """No `$KUBECONFIG` from the caller's shell: the tests reach the local cluster through its
    own kubeconfig (mlendpoints.kube) and programs get kubeconfig content explicitly, while
    the Kubernetes SDK would take `$KUBECONFIG` for a rendering provider, which refuses it."""
    os.environ.pop("KUBECONFIG", None)


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def shared_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointProject]:
    """The one throwaway copy of the dev stack every cluster and end-to-end module deploys,
    in turn (a stack per module cost ~2 min of `up` and `destroy` each). A module starts from
    `reset_config()`: the baseline config, which its first `up` converges to plus its own
    changes. Destroyed at the end of the session (the walkthrough, run last, destroys it as
    its final step)."""
    check_cluster()
    try:
        project = make_project(tmp_path_factory.mktemp("stack"))
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    try:
        yield project
    finally:  # a failed test leaves nothing on the cluster either
        project.stack.destroy(on_output=lambda _line: None)


@pytest.fixture(scope="module")
def module_stack(
    shared_project: EndpointProject, request: pytest.FixtureRequest
) -> Iterator[EndpointProject]:
    """The shared stack for one module, its config back at the baseline. If the module failed,
    the stack is destroyed after it: what a failed module leaves deployed (e.g. traffic on a
    deployment the baseline does not have) could make the next module's `up` refuse to
    converge, failing modules that did nothing wrong."""
    shared_project.reset_config()
    failed = request.session.testsfailed
    yield shared_project
    if request.session.testsfailed > failed:
        shared_project.stack.destroy(on_output=lambda _line: None)
