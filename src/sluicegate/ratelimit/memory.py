"""The in-process rate-limit store: plain dict arithmetic, for one process (and for Local limits)."""

from __future__ import annotations

import time

from sluicegate.ratelimit.store import Charge, Decision, Item, decide


class MemoryStore:
    """Counters in a dict of this process: {key: [used, pending, expire_at]}."""

    name = "memory"

    def __init__(self) -> None:
        self.counters: dict[str, list[int]] = {}
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 10.0
        dead = [key for key, entry in self.counters.items() if entry[2] <= now]
        for key in dead:
            del self.counters[key]

    async def check(self, items: list[Item], now: float) -> Decision:
        """Plain dict arithmetic; never waits."""
        return self.check_now(items, now)

    def check_now(self, items: list[Item], now: float) -> Decision:
        """check() without the coroutine, for callers that know the store is local."""
        self._sweep(now)
        entries = [self.counters.get(item.key) for item in items]
        counts = [(e[0], e[1]) if e is not None and e[2] > now else (0, 0) for e in entries]
        allowed = decide(items, counts)
        if not allowed:
            return Decision(False, [c[0] for c in counts], [c[1] for c in counts])
        used, pending = [], []
        for item, entry, (u, p) in zip(items, entries, counts, strict=True):
            u, p = u + item.request_cost, p + item.pending
            if entry is None or entry[2] <= now:
                entry = self.counters[item.key] = [0, 0, item.expire_at]
            entry[0], entry[1] = u, p
            used.append(u)
            pending.append(p)
        return Decision(True, used, pending)

    def charge(self, charges: list[Charge]) -> None:
        """Apply now."""
        now = time.time()
        for c in charges:
            entry = self.counters.get(c.key)
            if entry is not None and entry[2] > now:
                entry[0] += c.cost
                entry[1] = max(entry[1] - c.release, 0)
            elif c.cost:
                current = self.counters.get(c.current_key)
                if current is None or current[2] <= now:
                    current = self.counters[c.current_key] = [0, 0, c.expire_at]
                current[0] += c.cost

    async def close(self) -> None:
        """Nothing to release."""
