"""Fixtures shared by every tier. Process helpers live in tests/procs.py."""

from __future__ import annotations

import pytest

from tests.procs import free_port


@pytest.fixture
def unused_port() -> int:
    return free_port()
