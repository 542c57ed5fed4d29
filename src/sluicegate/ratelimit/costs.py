"""LLM request costs: token types and CEL, compiled once per config, evaluated once per request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sluicegate.core.usage import Usage

if TYPE_CHECKING:
    from sluicegate.ratelimit.cel_costs import CelCost

TOKEN_VARIABLES = (
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
    "total_tokens",
    "reasoning_tokens",
)
TOKEN_TYPES = {  # llmRequestCosts type -> the Usage field it counts
    "InputToken": "input_tokens",
    "CachedInputToken": "cached_input_tokens",
    "CacheCreationInputToken": "cache_creation_input_tokens",
    "OutputToken": "output_tokens",
    "TotalToken": "total_tokens",
    "ReasoningToken": "reasoning_tokens",
}


class CostError(ValueError):
    """A cost expression that cannot be used; the message carries the CEL error and its position."""


def compile_cel(source: str) -> CelCost:
    """Compile and type-check a cost expression, then test-evaluate it; CostError says what is wrong."""
    # cel-cpp and protobuf cost ~6 MB of RSS: load them only when a config has a CEL cost.
    from sluicegate.ratelimit.cel_costs import compile_cel as compile_

    return compile_(source)


CostFn = Callable[[Usage, str, str, str], int]  # (usage, model, backend, route_name) -> cost


def token_cost(kind: str) -> CostFn:
    """The cost function of a token type such as InputToken."""
    name = TOKEN_TYPES[kind]

    def cost(usage: Usage, model: str, backend: str, route: str) -> int:
        return max(getattr(usage, name), 0)

    cost.__qualname__ = f"token_cost({kind})"
    return cost


def cost_function(kind: str, expression: str | None) -> CostFn:
    """A compiled llmRequestCosts entry: a token type, or CEL (CostError when it does not compile)."""
    if kind == "CEL":
        return compile_cel(expression or "")
    return token_cost(kind)


@dataclass(frozen=True, slots=True)
class RequestCost:
    """One llmRequestCosts entry, compiled."""

    key: str  # metadataKey
    kind: str  # InputToken | ... | CEL
    fn: CostFn


@dataclass(frozen=True, slots=True)
class CostTable:
    """Per route ("namespace/name"): the costs to compute, route entries winning over global ones per key."""

    by_route: dict[str, tuple[RequestCost, ...]]
    global_costs: tuple[RequestCost, ...] = ()

    def for_route(self, route: str) -> tuple[RequestCost, ...]:
        """The costs of a route (the global ones when the route has none of its own)."""
        found = self.by_route.get(route)
        return self.global_costs if found is None else found

    @property
    def keys(self) -> frozenset[str]:
        """Every metadataKey defined anywhere."""
        keys = {c.key for c in self.global_costs}
        for costs in self.by_route.values():
            keys.update(c.key for c in costs)
        return frozenset(keys)


def merge_costs(
    route: tuple[RequestCost, ...], global_costs: tuple[RequestCost, ...]
) -> tuple[RequestCost, ...]:
    """Route-level costs, then the global ones whose metadataKey the route does not define."""
    own = {c.key for c in route}
    return (*route, *(c for c in global_costs if c.key not in own))


def compute_costs(
    costs: tuple[RequestCost, ...], usage: Usage, model: str, backend: str, route: str
) -> dict[str, int]:
    """metadataKey -> cost for one request's usage."""
    out = {}
    for c in costs:  # a loop, not a comprehension: no function call of its own (usually one or two costs)
        out[c.key] = c.fn(usage, model, backend, route)
    return out
