"""Fixtures shared by every tier. Shared helpers: tests/support/ and mlendpoints/_procs.py."""

from __future__ import annotations

import pytest

from mlendpoints._procs import free_port


@pytest.fixture
def unused_port() -> int:
    return free_port()
