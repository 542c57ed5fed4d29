"""The memory and Redis stores follow one rule: the same table runs against both."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import REGISTRY

from harness import free_port
from ratelimit.redis_server import RedisServer
from sluicegate.ratelimit.memory import MemoryStore
from sluicegate.ratelimit.redis import RedisStore, redacted
from sluicegate.ratelimit.store import (
    MUST,
    SHADOW,
    Charge,
    Decision,
    Item,
    StoreUnavailable,
    expiry,
    window_start,
)

NOW = 1_800_000_000.0
EXPIRE = int(NOW) + 3600


def item(
    key: str, limit: int, request: int = 0, pending: int = 0, reserve: bool = False, group: int = MUST
) -> Item:
    return Item(key, limit, request, pending, reserve, group, EXPIRE)


Scenario = Callable[
    [Callable[[list[Item]], Awaitable[Decision]], Callable[[list[Charge]], Awaitable[None]], str],
    Awaitable[None],
]


async def check_then_charge(check, charge, k: str) -> None:
    # request cost 0: admitted while there is room; the response cost is charged after
    d = await check([item(k, 10, pending=4)])
    assert (d.allowed, d.used, d.pending) == (True, [0], [4])
    await charge([Charge(k, k, 12, 4, EXPIRE)])
    d = await check([item(k, 10, pending=4)])
    assert (d.allowed, d.used, d.pending) == (False, [12], [0])


async def in_flight_requests_count(check, charge, k: str) -> None:
    assert (await check([item(k, 10, pending=6)])).allowed
    assert (await check([item(k, 10, pending=3)])).allowed  # 0 + 6 + 1 <= 10
    d = await check([item(k, 10, pending=3)])  # 0 + 9 + 1 <= 10
    assert d.allowed and d.pending == [12]
    assert not (await check([item(k, 10, pending=1)])).allowed  # 12 in flight


async def reservation_needs_the_whole_estimate(check, charge, k: str) -> None:
    assert (await check([item(k, 10, pending=6, reserve=True)])).allowed
    assert not (await check([item(k, 10, pending=5, reserve=True)])).allowed  # 6 + 5 > 10
    assert (await check([item(k, 10, pending=4, reserve=True)])).allowed  # 6 + 4 <= 10
    await charge([Charge(k, k, 2, 6, EXPIRE)])  # settled to the true cost: 4 units come back
    d = await check([item(k, 10, pending=4, reserve=True)])
    assert (d.allowed, d.used, d.pending) == (True, [2], [8])


async def request_costs_count_requests(check, charge, k: str) -> None:
    for _ in range(3):
        assert (await check([item(k, 3, request=1)])).allowed
    d = await check([item(k, 3, request=1)])
    assert (d.allowed, d.used) == (False, [3])


async def all_rules_or_nothing(check, charge, k: str) -> None:
    a, b = k + "a", k + "b"
    assert (await check([item(a, 5, request=1), item(b, 1, request=1)])).allowed
    d = await check([item(a, 5, request=1), item(b, 1, request=1)])
    assert (d.allowed, d.used) == (False, [1, 1])  # refused: nothing was counted


async def shadow_rules_never_refuse(check, charge, k: str) -> None:
    for _ in range(3):
        assert (await check([item(k, 1, request=1, group=SHADOW)])).allowed
    assert (await check([item(k, 1, request=1, group=SHADOW)])).used == [4]


async def quota_groups_need_one_bucket(check, charge, k: str) -> None:
    default, tenant = k + "d", k + "t"
    assert (await check([item(default, 1, request=1, group=1), item(tenant, 3, request=1, group=1)])).allowed
    assert (await check([item(default, 1, request=1, group=1), item(tenant, 3, request=1, group=1)])).allowed
    d = await check([item(default, 1, request=1, group=1), item(tenant, 2, request=1, group=1)])
    assert not d.allowed and d.used == [2, 2]


async def late_charge_lands_in_the_current_window(check, charge, k: str) -> None:
    gone, current = k + ":old", k + ":new"
    await charge([Charge(gone, current, 5, 3, EXPIRE)])
    d = await check([item(current, 10)])
    assert (d.used, d.pending) == ([5], [0])


SCENARIOS = [
    check_then_charge,
    in_flight_requests_count,
    reservation_needs_the_whole_estimate,
    request_costs_count_requests,
    all_rules_or_nothing,
    shadow_rules_never_refuse,
    quota_groups_need_one_bucket,
    late_charge_lands_in_the_current_window,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_memory_store(scenario: Scenario) -> None:
    store = MemoryStore()

    async def check(items: list[Item]) -> Decision:
        return await store.check(items, NOW - 1)

    async def charge(charges: list[Charge]) -> None:
        store.charge(charges)

    asyncio.run(scenario(check, charge, "k"))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_redis_store(scenario: Scenario, redis_server: RedisServer) -> None:
    async def main() -> None:
        store = RedisStore(redis_server.url)
        future = int(time.time()) + 3600  # NOW's expiries would be in Redis's past

        async def check(items: list[Item]) -> Decision:
            for i in items:
                i.expire_at = future
            return await store.check(items, NOW)

        async def charge(charges: list[Charge]) -> None:
            for c in charges:
                c.expire_at = future
            store.charge(charges)
            await store.settle()

        try:
            await scenario(check, charge, f"test:{uuid.uuid4().hex}:")
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6379/0", "unix:///tmp/r.sock"]
)
def test_redis_commands_are_packed_as_redis_py_packs_them(url: str) -> None:
    store = RedisStore(url)
    connection = store.client.connection_pool.make_connection()
    plain = type(connection).__mro__[2]()  # the redis-py class the URL chose, with its own packer
    assert type(plain).__module__ == "redis.asyncio.connection"
    commands = [
        ("EVALSHA", "f" * 40, 2, "sg:rl:a|ns/r:60", "sg:rl:é", 3, 4294967295, 0, -5, 1, 1795810600000),
        ("SCRIPT LOAD", "return 1"),
        (b"SCRIPT LOAD", b"return 1"),
        ("PING",),
        ("SET", b"k", 1.5),
        ("SET", "k", memoryview(b"bytes")),
    ]
    for command in commands:
        packed = b"".join(bytes(part) for part in connection.pack_command(*command))
        assert packed == b"".join(bytes(part) for part in plain.pack_command(*command)), command
    with pytest.raises(Exception, match="Invalid input"):  # redis-py's DataError, as without hiredis
        connection.pack_command("SET", "k", None)


def test_memory_counters_expire() -> None:
    store = MemoryStore()
    start = window_start(NOW, 60)
    first = Item("w", 1, 1, 0, False, MUST, expiry(start, 60))
    assert store.check_now([first], NOW).allowed
    assert not store.check_now([first], NOW).allowed
    later = NOW + 3600
    again = Item("w", 1, 1, 0, False, MUST, expiry(window_start(later, 60), 60))
    assert store.check_now([again], later).allowed


def test_windows_are_aligned_to_the_epoch() -> None:
    assert window_start(3601.5, 3600) == 3600
    assert window_start(86399, 86400) == 0
    assert expiry(3600, 3600) == 3600 + 3600 + 3600
    assert expiry(0, 86400) == 86400 + 3600


def test_unreachable_redis_fails_fast_and_is_counted() -> None:
    async def main() -> None:
        store = RedisStore(f"redis://:secret@127.0.0.1:{free_port()}/0", timeout=0.2)
        before = (
            REGISTRY.get_sample_value(
                "sluicegate_ratelimit_store_errors_total", {"store": "redis", "operation": "check"}
            )
            or 0
        )
        with pytest.raises(StoreUnavailable):
            await store.check([item("k", 1)], NOW)
        with pytest.raises(StoreUnavailable):  # within the backoff: no network call at all
            await store.check([item("k", 1)], NOW)
        after = REGISTRY.get_sample_value(
            "sluicegate_ratelimit_store_errors_total", {"store": "redis", "operation": "check"}
        )
        assert after == before + 2
        await store.close()

    asyncio.run(main())


def test_redis_url_password_is_redacted() -> None:
    assert redacted("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redacted("redis://:secret@host:6379") == "redis://***@host:6379"
    assert redacted("redis://host:6379") == "redis://host:6379"


def test_an_outage_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
        with caplog.at_level(logging.WARNING, logger="sluicegate.ratelimit"):
            for _ in range(3):
                with pytest.raises(StoreUnavailable):
                    await store.check([item("k", 1)], NOW)
                store._down_until = 0.0  # as if the backoff had passed: the next check tries Redis again
        await store.close()

    asyncio.run(main())
    logged = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(logged) == 1 and "retrying on its own" in logged[0]
