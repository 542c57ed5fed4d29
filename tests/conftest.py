"""Fixtures: the fake provider on a loopback port, and gateways in front of it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sluicegate.testing import FakeProviderThread


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeProviderThread]:
    """One fake provider for the whole run (tests reset its records as they need)."""
    with FakeProviderThread() as provider:
        yield provider
