"""The RateLimitStore interface, the items it counts and fixed windows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

STORE_ERRORS = Counter(
    "sluicegate_ratelimit_store_errors",
    "Rate-limit store calls that failed (the request was served or refused per the failure mode)",
    ["store", "operation"],
)
SHADOW, MUST = -1, 0  # Item.group: a shadow-mode rule never refuses; group 0 must fit; g > 0: one of g must


def window_start(now: float, window: int) -> int:
    """The start (unix seconds) of the window holding `now`, aligned to the epoch like Envoy's service."""
    return int(now) // window * window


def expiry(start: int, window: int) -> int:
    """When a window's counter may be dropped: its end plus time for late charges of requests it admitted."""
    return start + window + min(window, 3600)


@dataclass(slots=True)
class Item:
    """One budget to check for a request: fits when used + pending + need <= limit."""

    key: str
    limit: int
    request_cost: int  # charged at admission
    pending: int  # held until the response is charged (estimate of the response cost)
    reserve: bool  # need = request_cost + pending (reservation), else max(request_cost, 1): room left
    group: int  # MUST, SHADOW, or a quota group (> 0) where one fitting budget is enough
    expire_at: int  # unix seconds

    @property
    def need(self) -> int:
        """The room this request needs in the budget to be admitted."""
        return max(self.request_cost + self.pending if self.reserve else self.request_cost, 1)


@dataclass(slots=True)
class Charge:
    """The response cost of an admitted request, charged where it was admitted (else the current window)."""

    key: str  # the admission window's counter
    current_key: str  # the counter of the window now, used when the admission window has expired
    cost: int
    release: int  # the pending amount held at admission, released now
    expire_at: int  # expiry of current_key


@dataclass(slots=True)
class Decision:
    """The outcome of a check: admitted or not, and each item's used and pending counts after it."""

    allowed: bool
    used: list[int]
    pending: list[int]


class StoreUnavailable(Exception):
    """The store could not answer (Redis down); the caller fails open or closed."""


class RateLimitStore(Protocol):
    """check(items) -> Decision, atomically across items; charge(...) applies response costs later."""

    name: str

    async def check(self, items: list[Item], now: float) -> Decision:
        """Admit or refuse; when admitted, add request costs and pending amounts to every item."""

    def charge(self, charges: list[Charge]) -> None:
        """Apply response costs and release pending amounts (in the background for remote stores)."""

    async def close(self) -> None:
        """Release connections."""


def decide(items: list[Item], counts: list[tuple[int, int]]) -> bool:
    """Whether a request is admitted given each item's (used, pending): the one rule both stores follow."""
    allowed, groups = True, {}
    for item, (used, pending) in zip(items, counts, strict=True):
        fits = used + pending + item.need <= item.limit
        if item.group == MUST:
            allowed = allowed and fits
        elif item.group > 0:
            groups[item.group] = groups.get(item.group, False) or fits
    return allowed and all(groups.values())
