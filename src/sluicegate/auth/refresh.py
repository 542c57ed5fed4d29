"""A credential fetched ahead of need and refreshed in the background; requests only read the cached value.

Every `Refresher` fetches at start, then again 5 minutes before expiry (Envoy AI Gateway's pre-rotation
window; half the lifetime for credentials that live less than 10 minutes). A failed refresh keeps the
still-valid value, logs once per backoff step and retries with backoff; only a truly expired value fails
requests, with a 503. `states()` feeds the admin /ready endpoint; the gauges feed /metrics. Names and
problems never contain a secret: problems name the endpoint and the exception type, never its message.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge

from sluicegate.core.errors import GatewayError

log = logging.getLogger("sluicegate.auth")

T = TypeVar("T")
REFRESH_MARGIN = 300.0  # seconds before expiry when the next credential is fetched
FIRST_WAIT = 10.0  # how long a request waits for the very first credential
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

VALID = Gauge(
    "sluicegate_credential_valid", "1 while the cached upstream credential is valid.", ["credential"]
)
EXPIRES = Gauge(
    "sluicegate_credential_expiry_timestamp_seconds", "Unix time the credential expires.", ["credential"]
)
FAILURES = Counter("sluicegate_credential_refresh_failures", "Failed credential refreshes.", ["credential"])
_ALL: weakref.WeakSet[Refresher[Any]] = weakref.WeakSet()
_SHARED: weakref.WeakValueDictionary[tuple[Hashable, int], Any] = weakref.WeakValueDictionary()


def shared(key: Hashable, build: Callable[[], T]) -> T:
    """One provider per credential and event loop, so a config reload keeps the warm credential."""
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    provider = _SHARED.get((key, loop_id))
    if provider is None:
        provider = _SHARED[(key, loop_id)] = build()
    return provider


def states() -> list[dict[str, Any]]:
    """What /ready shows of every live credential: name, validity, seconds left, failures, problem."""
    now = time.monotonic()
    return sorted(
        (refresher.state(now) for refresher in list(_ALL)), key=lambda state: str(state["credential"])
    )


class Refresher(Generic[T]):
    """A value with an expiry, fetched by `fetch() -> (value, seconds it lives)` in a background task."""

    def __init__(
        self,
        name: str,
        fetch: Callable[[], Awaitable[tuple[T, float]]],
        *,
        margin: float = REFRESH_MARGIN,
        first_wait: float = FIRST_WAIT,
    ) -> None:
        self.name = name  # e.g. "AzureCredentials default/azure": shown on /ready, in metrics and errors
        self.fetch = fetch
        self.margin = margin
        self.first_wait = first_wait
        self.value: T | None = None
        self.expires_at = 0.0  # time.monotonic() deadline of value
        self.fetches = 0
        self.failures = 0  # refreshes failed in a row
        self.problem: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        _ALL.add(self)
        try:
            self.start()
        except RuntimeError:
            pass  # no running loop yet: the first get() starts the refresher

    def start(self) -> None:
        """Start the background refresh on the running loop (idempotent)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._changed = asyncio.Event()
            self._task = loop.create_task(_refresh_forever(weakref.ref(self)), name=f"refresh {self.name}")

    def close(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def state(self, now: float | None = None) -> dict[str, Any]:
        """This credential's health for /ready."""
        left = self.expires_at - (time.monotonic() if now is None else now)
        valid = self.value is not None and left > 0
        return {
            "credential": self.name,
            "valid": valid,
            "expires_in": round(left, 1) if valid else 0,
            "refresh_failures": self.failures,
            "problem": self.problem,
        }

    async def get(self) -> T:
        """The cached value; waits (bounded) only for the very first one; 503 once it has expired."""
        value = self.value
        if value is not None and time.monotonic() < self.expires_at:
            return value
        if self.fetches == 0:
            await self._first()
        value = self.value
        if value is None or time.monotonic() >= self.expires_at:
            if self.fetches:
                why = f"it expired and could not be refreshed: {self.problem or 'refresh pending'}"
            else:
                why = self.problem or f"none was obtained within {self.first_wait:g}s"
            raise GatewayError(503, f"No valid upstream credential for {self.name}: {why}.")
        return value

    async def _first(self) -> None:
        self.start()
        try:
            async with asyncio.timeout(self.first_wait):
                while self.fetches == 0 and self.problem is None:
                    assert self._changed is not None
                    await self._changed.wait()
        except TimeoutError:
            pass

    async def refresh(self) -> float:
        """Fetch once; the seconds to wait before the next fetch."""
        try:
            value, lifetime = await self.fetch()
        except Exception as exc:  # the message could quote a secret; the type cannot
            self.failures += 1
            self.problem = _describe(exc)
            FAILURES.labels(self.name).inc()
            VALID.labels(self.name).set(1 if self.state()["valid"] else 0)
            delay = RETRY_DELAYS[min(self.failures, len(RETRY_DELAYS)) - 1]
            log.warning(
                "credential refresh failed for %s (attempt %d, next in %gs): %s",
                self.name,
                self.failures,
                delay,
                self.problem,
            )
            self._notify()
            return delay
        self.value, self.expires_at = value, time.monotonic() + lifetime
        self.fetches += 1
        if self.failures:
            log.info("credential refresh for %s recovered after %d failures", self.name, self.failures)
        self.failures, self.problem = 0, None
        VALID.labels(self.name).set(1)
        EXPIRES.labels(self.name).set(time.time() + lifetime)
        self._notify()
        if lifetime > 2 * self.margin:
            return lifetime - self.margin
        return max(lifetime / 2, 0.2)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()


class CredentialFetchError(Exception):
    """A fetch failure whose message is safe to show (names an endpoint or a status, never a secret)."""


def _describe(exc: BaseException) -> str:
    """A failure as shown in logs and on /ready: our own messages in full, others by type only."""
    if isinstance(exc, CredentialFetchError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


async def _refresh_forever(ref: weakref.ref[Refresher[Any]]) -> None:
    """Refresh while the refresher lives; holds it only while fetching, so it can be collected."""
    while True:
        refresher = ref()
        if refresher is None:
            return
        delay = await refresher.refresh()
        del refresher
        await asyncio.sleep(delay)
