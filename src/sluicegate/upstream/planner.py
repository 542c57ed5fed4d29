"""Which backend each attempt goes to: priorities, weights, resting and ejected backends, balancing."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from sluicegate.config.runtime import BackendRef, Rule
from sluicegate.upstream.health import BackendState, Health
from sluicegate.upstream.policy import DEFAULT_RESILIENCE, Resilience

EXPLORE = 0.05  # latency-aware: share of picks made at random, so a recovered backend gets measured again
_FRESH = BackendState()
_RNG = random.Random()


def tiers_of(refs: Sequence[BackendRef]) -> tuple[tuple[BackendRef, ...], ...]:
    """The backend refs grouped by priority, lowest (first) priority first."""
    by_priority: dict[int, list[BackendRef]] = {}
    for ref in refs:
        by_priority.setdefault(ref.priority, []).append(ref)
    return tuple(tuple(by_priority[p]) for p in sorted(by_priority))


class RulePlan:
    """What is fixed per rule and config: the tiers and the settings; `attempts()` starts one request."""

    def __init__(self, rule: Rule, health: Health, rng: random.Random | None = None) -> None:
        self.rule = rule
        self.resilience: Resilience = getattr(rule, "resilience", DEFAULT_RESILIENCE)
        self.health = health
        self.tiers = tiers_of(rule.backend_refs)
        self.single = rule.backend_refs[0] if len(rule.backend_refs) == 1 else None
        self.rng = rng or _RNG
        self._turn = itertools.count()
        retry = self.resilience.retry
        self.budgets = tuple(retry.attempts_per_priority or len(tier) for tier in self.tiers)

    def attempts(self, preset: BackendRef | None = None) -> Attempts:
        """The attempt sequence of one request; a preset ref (chosen by a filter) goes first."""
        return Attempts(self, preset)

    def first(self, now: float) -> BackendRef:
        """The backend a first attempt would use now."""
        return Attempts(self, None).next(now)  # type: ignore[return-value]

    # -- choosing -----------------------------------------------------------------------------

    def unavailable(self, refs: Sequence[BackendRef], now: float) -> set[str]:
        """Names of resting or ejected backends among refs (at most max_ejection_percent of them ejected)."""
        states = self.health.states
        out: set[str] = set()
        ejected: list[tuple[float, str]] = []
        for ref in refs:
            state = states.get(ref.backend.name)
            if state is None:
                continue
            if state.rest_until > now or state.unhealthy:
                out.add(ref.backend.name)
            elif state.ejected_until > now:
                ejected.append((state.ejected_at, ref.backend.name))
        if ejected:
            percent = self.resilience.outlier.max_ejection_percent
            allowed = max(1, percent * len(self.rule.backend_refs) // 100)
            out.update(name for _, name in sorted(ejected)[:allowed])
        return out

    def pick(self, candidates: Sequence[BackendRef]) -> BackendRef:
        """One of the candidates by the rule's balancer."""
        if len(candidates) == 1:
            return candidates[0]
        balancer = self.resilience.balancer
        if balancer == "RoundRobin":
            return candidates[next(self._turn) % len(candidates)]
        if balancer == "LeastRequest":
            a, b = self._two(candidates)
            return a if self._state(a).outstanding <= self._state(b).outstanding else b
        if balancer == "LatencyAware":
            if self.rng.random() < EXPLORE:
                return self._weighted(candidates)
            a, b = self._two(candidates)
            return a if self._latency_cost(a) <= self._latency_cost(b) else b
        return self._weighted(candidates)

    def _weighted(self, candidates: Sequence[BackendRef]) -> BackendRef:
        weights = [max(ref.weight, 0) for ref in candidates]
        if not any(weights):
            return self.rng.choice(candidates)
        return self.rng.choices(candidates, weights=weights)[0]

    def _two(self, candidates: Sequence[BackendRef]) -> tuple[BackendRef, BackendRef]:
        """Power of two choices: two distinct candidates, drawn by weight."""
        if len(candidates) == 2:
            return candidates[0], candidates[1]
        a = self._weighted(candidates)
        rest = [ref for ref in candidates if ref is not a]
        return a, self._weighted(rest)

    def _state(self, ref: BackendRef) -> BackendState:
        return self.health.states.get(ref.backend.name) or _FRESH

    def _latency_cost(self, ref: BackendRef) -> float:
        state = self._state(ref)
        return state.ewma * (state.outstanding + 1) / max(ref.weight, 1)


def _least_bad(state: BackendState | None) -> tuple[bool, float]:
    return (False, 0.0) if state is None else (state.unhealthy, state.available_at())


class Attempts:
    """The attempts of one request, one `next()` at a time."""

    __slots__ = ("count", "in_tier", "plan", "preset", "tier", "tried")

    def __init__(self, plan: RulePlan, preset: BackendRef | None) -> None:
        self.plan = plan
        self.preset = preset
        self.count = 0
        self.tier = -1  # the tier of the last attempt
        self.in_tier = 0  # attempts made in it
        self.tried: list[BackendRef] = []

    @property
    def more(self) -> bool:
        """Whether the retry policy allows another attempt."""
        return self.count <= self.plan.resilience.retry.num_retries and bool(self.plan.tiers)

    def next(self, now: float) -> BackendRef | None:
        """The backend of the next attempt, or None when the retries are spent."""
        if not self.more:
            return None
        plan = self.plan
        ref = None
        if self.count == 0 and self.preset is not None:
            ref = self.preset
            self.tier = next((i for i, t in enumerate(plan.tiers) if ref in t), 0)
            self.in_tier = 1
        else:
            ref = self._choose(now)
        self.count += 1
        self.tried.append(ref)
        return ref

    def _choose(self, now: float) -> BackendRef:
        plan, tiers = self.plan, self.plan.tiers
        if plan.single is not None:  # one backend: every attempt goes to it, whatever its state (as below)
            self.tier = 0
            self.in_tier += 1
            return plan.single
        start = 0 if self.tier < 0 else self.tier
        if self.tier >= 0 and self.in_tier >= plan.budgets[self.tier]:
            start = (self.tier + 1) % len(tiers)
        # the first tier from `start` (wrapping around) with a backend that is neither resting nor ejected
        for step in range(len(tiers)):
            index = (start + step) % len(tiers)
            tier = tiers[index]
            away = plan.unavailable(tier, now)
            ready = [ref for ref in tier if ref.backend.name not in away]
            if not ready:
                continue
            fresh = [ref for ref in ready if ref not in self.tried]
            if index == self.tier:
                self.in_tier += 1
            else:
                self.tier, self.in_tier = index, 1
            return plan.pick(fresh or ready)
        # every backend rests, is ejected or unhealthy: try the one that comes back first (a backend
        # active checks found unhealthy last) rather than fail closed
        states = plan.health.states
        everyone = [ref for tier in tiers for ref in tier]
        ref = min(everyone, key=lambda r: _least_bad(states.get(r.backend.name)))
        self.tier = next(i for i, t in enumerate(tiers) if ref in t)
        self.in_tier += 1
        return ref
