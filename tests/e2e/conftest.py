"""The end-to-end tier: the shipped dev stack on the local cluster, driven like a user would.

`endpoint_project` is a throwaway copy of the project and its dev stack (mlendpoints/_project.py):
its own namespace, its own state, a NodePort the cluster picks; destroyed after the module.
The README walkthrough runner is tests/support/walkthrough.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mlendpoints._project import EndpointProject, make_project
from mlendpoints.kube import check_cluster
from tests.support.walkthrough import FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the end-to-end tests measured, also under `pytest -q`."""
    if FIGURES:
        terminalreporter.section("end-to-end figures")
        for figure in FIGURES:
            terminalreporter.write_line(figure)


@pytest.fixture(scope="module")
def endpoint_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointProject]:
    """A throwaway copy of the project with stack `dev`, on the real cluster; destroyed after."""
    check_cluster()
    try:
        project = make_project(tmp_path_factory.mktemp("e2e"))
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    try:
        yield project
    finally:  # a failed test leaves nothing on the cluster either
        project.stack.destroy(on_output=lambda _line: None)
