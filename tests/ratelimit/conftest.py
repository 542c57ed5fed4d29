"""A Redis server for the store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ratelimit.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private Redis for the unit tests of this folder."""
    with RedisServer() as server:
        yield server
