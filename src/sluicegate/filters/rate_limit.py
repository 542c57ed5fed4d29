"""Rate limits: check every matching budget before the upstream call, charge the response cost after it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sluicegate.config.runtime import BackendRef, Rule, RuntimeConfig
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.filters.chain import Filter
from sluicegate.ratelimit.costs import CostFn
from sluicegate.ratelimit.estimate import estimate_usage
from sluicegate.ratelimit.model import LimitRule
from sluicegate.ratelimit.store import (
    MUST,
    SHADOW,
    Charge,
    Decision,
    Item,
    RateLimitStore,
    StoreUnavailable,
    expiry,
    window_start,
)
from sluicegate.ratelimit.stores import Stores
from sluicegate.upstream.forward import choose_backend

KEY_PREFIX = "sg:rl:"


@dataclass(frozen=True, slots=True)
class _Bound:
    """A limit rule as it applies to one route."""

    rule: LimitRule
    group: int  # MUST, SHADOW or a quota group id
    cost: CostFn | None  # the response cost from usage: the route's llmRequestCosts entry or a quota's
    limit_header: bytes  # x-ratelimit-limit, as Envoy words it: "10, 10;w=3600"


@dataclass(slots=True)
class _Entry:
    """One budget a request was checked against."""

    item: Item
    bound: _Bound
    descriptor: str
    start: int  # window start
    remaining: int = 0  # after admission, for the response headers


@dataclass(slots=True)
class _Admitted:
    """The budgets of one store that admitted the request: charged on completion."""

    store: RateLimitStore
    entries: list[_Entry]


def _route_bounds(config: RuntimeConfig, route: str, groups: dict[str, int]) -> tuple[_Bound, ...]:
    """The rules that may apply to requests of one AIGatewayRoute."""
    costs = {c.key: c.fn for c in config.costs.for_route(route)}
    backends = {ref.backend.name for r in config.rules if r.route == route for ref in r.backend_refs}
    out = []
    for rule in config.rate_limits.rules:
        if rule.backend is not None:
            if rule.backend not in backends:
                continue
        elif not rule.applies_to(route):
            continue
        cost = rule.response_cel or (costs.get(rule.response_key) if rule.response_key else None)
        if rule.shadow:
            group = SHADOW
        elif rule.group is not None:
            group = groups.setdefault(rule.group, len(groups) + 1)
        else:
            group = MUST
        out.append(_Bound(rule, group, cost, f"{rule.limit}, {rule.limit};w={rule.window}".encode()))
    return tuple(out)


class RateLimit(Filter):
    """BackendTrafficPolicy rateLimit rules and QuotaPolicy buckets over the process's stores."""

    def __init__(self, config: RuntimeConfig, stores: Stores) -> None:
        self.stores = stores
        groups: dict[str, int] = {}
        self.bounds = {rule.route: _route_bounds(config, rule.route, groups) for rule in config.rules}
        self.quota_routes = {
            route for route, bounds in self.bounds.items() if any(b.rule.backend for b in bounds)
        }
        self.model_quotas = {(r.backend, r.model) for r in config.rate_limits.rules if r.model is not None}

    async def on_request(self, ctx: RequestContext) -> None:
        """Check every matching budget; 429 if one is spent (503 when the store is down and fail-closed)."""
        rule = ctx.rule
        bounds = self.bounds.get(rule.route) if rule is not None else None
        if not bounds:
            return
        assert rule is not None
        now = time.time()
        ref = ctx.backend_ref
        if rule.route in self.quota_routes and ref is None:
            ref = ctx.backend_ref = choose_backend(rule)  # quotas are per backend: choose it now
        shared, local = self._entries(ctx, rule, ref, bounds, now)
        stores = self.stores
        admitted: list[_Admitted] = []
        if stores.shared is stores.local:
            shared, local = [], shared + local
        if shared:
            try:
                decision = await stores.shared.check([e.item for e in shared], now)
            except StoreUnavailable:
                if stores.fail_closed:
                    raise GatewayError(
                        503,
                        "Rate limits cannot be checked right now; try again shortly.",
                        code="rate_limit_unavailable",
                        headers=[(b"retry-after", b"1")],
                    ) from None
                decision = None  # fail open: serve without this store's budgets
            if decision is not None:
                if not decision.allowed:
                    self._refuse(ctx, shared, decision, now)
                admitted.append(_Admitted(stores.shared, _note_remaining(shared, decision)))
        if local:
            decision = stores.local.check_now([e.item for e in local], now)
            if not decision.allowed:
                for done in admitted:  # give back what the shared store admitted
                    done.store.charge(
                        [
                            Charge(e.item.key, e.item.key, -e.item.request_cost, e.item.pending, 0)
                            for e in done.entries
                        ]
                    )
                self._refuse(ctx, local, decision, now)
            admitted.append(_Admitted(stores.local, _note_remaining(local, decision)))
        if admitted:
            ctx.limit_state = admitted
            ctx.response_headers += _headers([e for a in admitted for e in a.entries], now)

    def _entries(
        self, ctx: RequestContext, rule: Rule, ref: BackendRef | None, bounds: tuple[_Bound, ...], now: float
    ) -> tuple[list[_Entry], list[_Entry]]:
        """The budgets this request counts against, split into shared (Global) and local ones."""
        if ref is None and len(rule.backend_refs) == 1:
            ref = rule.backend_refs[0]
        backend = ref.backend.name if ref is not None else ""
        model = ref.model_name_override if ref is not None and ref.model_name_override else ctx.model
        shared: list[_Entry] = []
        local: list[_Entry] = []
        estimates: dict[int, Usage] = {}
        for bound in bounds:
            limit = bound.rule
            if limit.backend is not None:
                if limit.backend != backend:
                    continue
                if limit.model is None and (backend, model) in self.model_quotas:
                    continue  # serviceQuota covers only the models without a perModelQuotas entry
                if limit.model is not None and limit.model != model:
                    continue
            descriptor = limit.descriptor(ctx, rule.route)
            if descriptor is None:
                continue
            start = window_start(now, limit.window)
            pending = limit.response_number
            if bound.cost is not None:  # in flight, the response counts at its estimate
                estimate = estimates.get(limit.default_output)
                if estimate is None:
                    estimate = estimate_usage(ctx.body, ctx.operation, limit.default_output, ctx.request.body)
                    estimates[limit.default_output] = estimate
                pending += bound.cost(estimate, ctx.model, backend, rule.route)
            item = Item(
                f"{KEY_PREFIX}{descriptor}:{start}",
                limit.limit,
                limit.request_cost,
                pending,
                limit.reserve,
                bound.group,
                expiry(start, limit.window),
            )
            (local if limit.scope == "local" else shared).append(_Entry(item, bound, descriptor, start))
        return shared, local

    def _refuse(self, ctx: RequestContext, entries: list[_Entry], decision: Decision, now: float) -> None:
        """429 with Retry-After: when every spent budget that matters has reset."""
        ctx.response_headers += _headers(entries, now, decision)
        waits: list[int] = []
        groups: dict[int, list[int]] = {}
        for entry, used, pending in zip(entries, decision.used, decision.pending, strict=True):
            item = entry.item
            if used + pending + item.need <= item.limit or item.group == SHADOW:
                continue
            reset = _reset(entry, now)
            if item.group == MUST:
                waits.append(reset)
            else:
                groups.setdefault(item.group, []).append(reset)
        fitting = {
            e.item.group
            for e, u, p in zip(entries, decision.used, decision.pending, strict=True)
            if u + p + e.item.need <= e.item.limit
        }
        waits += [min(resets) for group, resets in groups.items() if group not in fitting]
        wait = max(waits, default=1)
        raise GatewayError(
            429,
            f"Rate limit exceeded; retry after {wait} second{'s' if wait != 1 else ''}.",
            code="rate_limit_exceeded",
            headers=[(b"retry-after", str(wait).encode())],
        )

    def on_complete(self, ctx: RequestContext) -> None:
        """Charge each admitted budget the response cost and release what was held for it."""
        admitted = ctx.limit_state
        if not admitted or ctx.rule is None:
            return
        ctx.limit_state = None
        now = time.time()
        usage = ctx.usage
        backend = ctx.backend_ref.backend.name if ctx.backend_ref is not None else ""
        route = ctx.rule.route
        computed: dict[int, int] = {}  # the buckets of one quota share its expression: evaluate it once
        for done in admitted:
            charges = []
            for entry in done.entries:
                limit = entry.bound.rule
                cost = limit.response_number
                if limit.response_key is not None:
                    cost += ctx.costs.get(limit.response_key, 0)
                elif limit.response_cel is not None and usage is not None:
                    found = computed.get(id(limit.response_cel))
                    if found is None:
                        found = computed[id(limit.response_cel)] = limit.response_cel(
                            usage, ctx.model, backend, route
                        )
                    cost += found
                start = window_start(now, limit.window)
                current = f"{KEY_PREFIX}{entry.descriptor}:{start}"
                charges.append(
                    Charge(entry.item.key, current, cost, entry.item.pending, expiry(start, limit.window))
                )
            done.store.charge(charges)


def _note_remaining(entries: list[_Entry], decision: Decision) -> list[_Entry]:
    """Record the counts after admission on the entries (for the response headers)."""
    for entry, used, pending in zip(entries, decision.used, decision.pending, strict=True):
        if not entry.item.reserve:  # in check mode the request's own estimate is not a promise: leave it out
            pending -= entry.item.pending
        entry.remaining = max(entry.item.limit - used - pending, 0)
    return entries


def _reset(entry: _Entry, now: float) -> int:
    """Whole seconds until the entry's window ends (at least 1)."""
    return max(math.ceil(entry.start + entry.bound.rule.window - now), 1)


def _headers(
    entries: list[_Entry], now: float, decision: Decision | None = None
) -> list[tuple[bytes, bytes]]:
    """x-ratelimit-limit / -remaining / -reset of the budget closest to its limit (as Envoy reports it).

    A quota group counts as its roomiest bucket, since one bucket with room is enough.
    """
    candidates: dict[object, tuple[int, _Entry]] = {}
    for i, entry in enumerate(entries):
        group = entry.item.group
        if group == SHADOW:
            continue
        if decision is not None:
            remaining = max(entry.item.limit - decision.used[i] - decision.pending[i], 0)
        else:
            remaining = entry.remaining
        slot = i if group == MUST else ("group", group)
        if slot not in candidates or remaining > candidates[slot][0]:
            candidates[slot] = (remaining, entry)
    if not candidates:
        return []
    best = min(candidates.values(), key=lambda found: found[0])
    remaining, entry = best
    return [
        (b"x-ratelimit-limit", entry.bound.limit_header),
        (b"x-ratelimit-remaining", str(remaining).encode()),
        (b"x-ratelimit-reset", str(_reset(entry, now)).encode()),
    ]
