"""Fixtures of the reliability suite: a :class:`~reliability.harness.Fleet` per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Processes, ledger and database of one scenario; every child is killed and reaped at the end."""
    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.close()
