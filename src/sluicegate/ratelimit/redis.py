"""The shared rate-limit store: Redis, one atomic Lua script (EVALSHA) per check and one per charge."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sluicegate.ratelimit.store import STORE_ERRORS, Charge, Decision, Item, StoreUnavailable

log = logging.getLogger("sluicegate.ratelimit")

# One call checks every request that arrived in the same event-loop turn, in order, atomically.
# ARGV: number of requests; then per request: its item count n, and per item: limit, request_cost, pending,
# reserve (1/0), group, expire_at_ms. KEYS: each item's counter (hash {u: used, p: pending}), in order.
# The rule is store.decide's. Returns per request: allowed (1/0), then used and pending of each item.
CHECK = """
local out, key, arg = {}, 0, 2
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[arg])
  arg = arg + 1
  local used, pending, groups = {}, {}, {}
  local allowed = true
  for i = 1, n do
    local b = arg + (i - 1) * 6
    local v = redis.call('HMGET', KEYS[key + i], 'u', 'p')
    local u, p = tonumber(v[1]) or 0, tonumber(v[2]) or 0
    used[i], pending[i] = u, p
    local need = tonumber(ARGV[b + 1])
    if ARGV[b + 3] == '1' then need = need + tonumber(ARGV[b + 2]) end
    if need < 1 then need = 1 end
    local fits = u + p + need <= tonumber(ARGV[b])
    local group = tonumber(ARGV[b + 4])
    if group == 0 then
      allowed = allowed and fits
    elseif group > 0 then
      groups[group] = (groups[group] == true) or fits
    end
  end
  for _, fits in pairs(groups) do allowed = allowed and fits end
  out[#out + 1] = allowed and 1 or 0
  for i = 1, n do
    local b, k = arg + (i - 1) * 6, KEYS[key + i]
    if allowed then
      local written = false
      if ARGV[b + 1] ~= '0' then
        used[i] = redis.call('HINCRBY', k, 'u', ARGV[b + 1]); written = true
      end
      if ARGV[b + 2] ~= '0' then
        pending[i] = redis.call('HINCRBY', k, 'p', ARGV[b + 2]); written = true
      end
      if written then redis.call('PEXPIREAT', k, ARGV[b + 5]) end
    end
    out[#out + 1] = used[i]
    out[#out + 1] = pending[i]
  end
  key, arg = key + n, arg + n * 6
end
return out
"""

# KEYS: pairs (admission window counter, current window counter). ARGV per pair: cost, release, expire_at_ms.
CHARGE = """
for i = 1, #KEYS / 2 do
  local key, current, b = KEYS[2 * i - 1], KEYS[2 * i], (i - 1) * 3
  if redis.call('EXISTS', key) == 1 then
    if ARGV[b + 2] ~= '0' then
      if redis.call('HINCRBY', key, 'p', '-' .. ARGV[b + 2]) < 0 then redis.call('HSET', key, 'p', 0) end
    end
    if ARGV[b + 1] ~= '0' then redis.call('HINCRBY', key, 'u', ARGV[b + 1]) end
  elseif ARGV[b + 1] ~= '0' then
    redis.call('HINCRBY', current, 'u', ARGV[b + 1])
    redis.call('PEXPIREAT', current, ARGV[b + 3])
  end
end
return 1
"""

LOG_EVERY = 30.0  # seconds between two "Redis unreachable" logs
BACKOFF = 1.0  # seconds without trying Redis after a failure; then the next request tries again


class PackedByHiredis:
    """A redis-py asyncio connection that packs commands with hiredis in C.

    redis-py's sync client does so; its asyncio connections pack in Python, ~0.4 µs an argument, and a
    batch of checks has seven arguments a request.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command in the Redis protocol, as redis-py's own packer writes it."""
        name = args[0].encode() if isinstance(args[0], str) else args[0]
        if b" " in name:  # "SCRIPT LOAD": the words go as separate arguments
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not take (memoryview, ...): redis-py's way
            return super().pack_command(*args)  # type: ignore[misc]


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


class RedisStore:
    """Counters in Redis, shared by every worker and replica; fails fast while Redis is unreachable.

    The checks (and the charges) that arrive in one turn of the event loop go to Redis as one EVALSHA, so
    a request waits for at most one round trip per check and one per charge, however busy the process is.
    """

    name = "redis"

    def __init__(self, url: str, timeout: float = 0.5, max_connections: int = 16) -> None:
        self.url = url
        self.timeout = timeout
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        plain = pool.connection_class  # TCP, TLS or Unix socket, as the URL says
        pool.connection_class = type(f"Hiredis{plain.__name__}", (PackedByHiredis, plain), {})
        self.client = Redis(connection_pool=pool)
        self._check = self.client.register_script(CHECK)
        self._charge = self.client.register_script(CHARGE)
        self._down_until = 0.0
        self._last_log = -LOG_EVERY
        self._tasks: set[asyncio.Task] = set()
        self._checks: list[tuple[list[Item], asyncio.Future[Decision]]] = []
        self._charges: list[Charge] = []

    def _failed(self, operation: str, exc: BaseException, count: int = 1) -> None:
        STORE_ERRORS.labels(self.name, operation).inc(count)
        now = time.monotonic()
        self._down_until = now + BACKOFF
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            log.warning(
                "rate-limit store %s unreachable (%s: %s); retrying on its own",
                redacted(self.url),
                type(exc).__name__,
                str(exc)[:200],
            )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def check(self, items: list[Item], now: float) -> Decision:
        """Joins this loop turn's batch; StoreUnavailable when Redis fails or was failing a moment ago."""
        if time.monotonic() < self._down_until:
            STORE_ERRORS.labels(self.name, "check").inc()
            raise StoreUnavailable("Redis unreachable")
        loop = asyncio.get_running_loop()
        if not self._checks:
            loop.call_soon(self._flush_checks)
        future: asyncio.Future[Decision] = loop.create_future()
        self._checks.append((items, future))
        return await future

    def _flush_checks(self) -> None:
        batch, self._checks = self._checks, []
        if batch:
            self._spawn(self._send_checks(batch))

    async def _send_checks(self, batch: list[tuple[list[Item], asyncio.Future[Decision]]]) -> None:
        keys: list[str] = []
        args: list[int | str] = [len(batch)]
        for items, _ in batch:
            args.append(len(items))
            for item in items:
                keys.append(item.key)
                args += [
                    item.limit,
                    item.request_cost,
                    item.pending,
                    1 if item.reserve else 0,
                    item.group,
                    item.expire_at * 1000,
                ]
        try:
            async with asyncio.timeout(self.timeout * 2):
                out = await self._check(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("check", exc, len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable(str(exc)))
            return
        values = [int(v) for v in out]
        at = 0
        for items, future in batch:
            n = len(items)
            counts = values[at + 1 : at + 1 + 2 * n]
            decision = Decision(values[at] == 1, counts[0::2], counts[1::2])
            at += 1 + 2 * n
            if not future.done():
                future.set_result(decision)

    def charge(self, charges: list[Charge]) -> None:
        """Joins this loop turn's charges: one EVALSHA in the background; a failure loses them (counted)."""
        charges = [c for c in charges if c.cost or c.release]
        if not charges:
            return
        if not self._charges:
            asyncio.get_running_loop().call_soon(self._flush_charges)
        self._charges += charges

    def _flush_charges(self) -> None:
        batch, self._charges = self._charges, []
        if not batch:
            return
        if time.monotonic() < self._down_until:
            STORE_ERRORS.labels(self.name, "charge").inc()
            return
        self._spawn(self._send_charges(batch))

    async def _send_charges(self, charges: list[Charge]) -> None:
        keys: list[str] = []
        args: list[int] = []
        for c in charges:
            keys += [c.key, c.current_key]
            args += [c.cost, c.release, c.expire_at * 1000]
        try:
            async with asyncio.timeout(self.timeout * 2):
                await self._charge(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("charge", exc)

    async def settle(self) -> None:
        """Wait for the batches in flight (tests and shutdown)."""
        await asyncio.sleep(0)
        while self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.timeout * 2)

    async def close(self) -> None:
        """Send what is pending, wait briefly for it, then close the connections."""
        self._flush_charges()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.timeout * 2)
        await self.client.aclose()
