"""The stores a process counts in: its own memory for Local limits, Redis (or memory) for Global ones."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sluicegate.ratelimit.memory import MemoryStore
from sluicegate.ratelimit.store import RateLimitStore

if TYPE_CHECKING:
    from sluicegate.ratelimit.redis import RedisStore

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
    return Stores(local, _redis_store()(redis_url, timeout), fail_closed)


# redis-py imports these, when installed, for its own OpenTelemetry metrics, which are off unless a program
# turns them on (we never do); with the SDK's metrics it loads psutil too: ~3 MB of RSS for nothing.
_REDIS_OPTIONAL = ("opentelemetry.metrics", "opentelemetry.sdk.metrics")


def _redis_store() -> type[RedisStore]:
    """RedisStore, with redis-py imported here only (when used) and without its optional OTel metrics."""
    hidden = [name for name in _REDIS_OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # None: "import fails", as if not installed
    try:
        from sluicegate.ratelimit.redis import RedisStore
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return RedisStore
