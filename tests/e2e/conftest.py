"""The end-to-end tier: the shipped dev stack on the local cluster, driven like a user would.

`endpoint_project` is the session's throwaway copy of the project and its dev stack
(`shared_project`, tests/conftest.py; mlendpoints/_project.py): its own namespace, its own
state, a NodePort the cluster picks. Each module gets it back at the baseline config; the
walkthrough runs last, since it ends by destroying the stack.
The README walkthrough runner is tests/support/walkthrough.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlendpoints._project import EndpointProject
from tests.support.walkthrough import FIGURES

LAST = "test_blue_green.py"
"""The module that destroys the shared stack as its last step."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the walkthrough after the other end-to-end modules (in place: the other tiers'
    order is unchanged)."""
    here = [i for i, item in enumerate(items) if "e2e" in item.path.parts]
    ordered = sorted((items[i] for i in here), key=lambda item: item.path.name == LAST)
    for i, item in zip(here, ordered, strict=True):
        items[i] = item


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the end-to-end tests measured, also under `pytest -q`."""
    if FIGURES:
        terminalreporter.section("end-to-end figures")
        for figure in FIGURES:
            terminalreporter.write_line(figure)


@pytest.fixture(scope="module")
def endpoint_project(module_stack: EndpointProject) -> EndpointProject:
    """The shared dev stack, its config back at the baseline (what is deployed converges at
    the module's first `up`; destroyed after a failed module: tests/conftest.py)."""
    return module_stack
