"""The stores a process counts in: its own memory for Local limits, Redis (or memory) for Global ones."""

from __future__ import annotations

from dataclasses import dataclass

from sluicegate.ratelimit.memory import MemoryStore
from sluicegate.ratelimit.store import RateLimitStore

DEFAULT_TIMEOUT = 0.5  # seconds a Redis call may take before the request fails open (or closed)


@dataclass
class Stores:
    """Created once per process (after fork) and kept across config reloads, so counters survive them."""

    local: MemoryStore
    shared: RateLimitStore  # the Redis store, or `local` when there is one process and no Redis
    fail_closed: bool = False  # Redis unreachable: refuse with 503 instead of serving unchecked

    async def close(self) -> None:
        """Close the shared store's connections."""
        if self.shared is not self.local:
            await self.shared.close()


def open_stores(redis_url: str | None, fail_closed: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Stores:
    """Memory only, or Redis for Global limits when a URL is given (connections open on first use)."""
    local = MemoryStore()
    if not redis_url:
        return Stores(local, local, fail_closed)
    from sluicegate.ratelimit.redis import RedisStore  # redis-py is imported only when it is used

    return Stores(local, RedisStore(redis_url, timeout), fail_closed)
