"""LLM request costs: token types and CEL, compiled once per config, evaluated once per request."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cel_expr_python import cel

from sluicegate.core.usage import Usage

log = logging.getLogger("sluicegate.ratelimit")

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
_UINT64_MAX = 2**64 - 1
_LOG_EVERY = 30.0  # seconds between two logs of the same failing expression


class CostError(ValueError):
    """A cost expression that cannot be used; the message carries the CEL error and its position."""


def _env(token_type: cel.Type) -> cel.Env:
    variables = {"model": cel.Type.STRING, "backend": cel.Type.STRING, "route_name": cel.Type.STRING}
    variables.update(dict.fromkeys(TOKEN_VARIABLES, token_type))
    return cel.NewEnv(variables=variables)


# Token variables are uint, as in Envoy AI Gateway; an expression that does not type-check that way is
# tried with int, then double variables, so `input_tokens * 2` and `input_tokens / 1.0 + output_tokens * 3.0`
# work as users expect.
_ENVS: tuple[tuple[str, cel.Env], ...] = (
    ("uint", _env(cel.Type.UINT)),
    ("int", _env(cel.Type.INT)),
    ("double", _env(cel.Type.DOUBLE)),
)
_NUMERIC = (cel.Type.UINT, cel.Type.INT, cel.Type.DOUBLE, cel.Type.DYN)


def _clean(error: BaseException) -> str:
    """cel-cpp's message without the status prefix."""
    text = str(error).strip()
    for prefix in ("INVALID_ARGUMENT: ", "ERROR: "):
        text = text.removeprefix(prefix)
    return text.replace(" [INVALID_ARGUMENT]", "")


@dataclass(frozen=True, slots=True)
class CelCost:
    """A compiled CEL cost expression; `__call__` never raises (a failure costs 0 and is logged)."""

    source: str
    program: cel.Expression
    variables: str  # uint | int | double: how the token variables were declared to make it type-check
    _last_log: list[float]

    def evaluate(self, usage: Usage, model: str, backend: str, route: str) -> int:
        """The cost, or CostError when the expression fails or is negative (the caller decides)."""
        data: dict[str, object] = {"model": model, "backend": backend, "route_name": route}
        for name in TOKEN_VARIABLES:
            data[name] = max(getattr(usage, name), 0)
        value = self.program.eval(data=data)
        kind = value.type()
        if kind == cel.Type.ERROR:
            raise CostError(f"CEL expression {self.source!r} failed: {value.value()}")
        result = value.value()
        if isinstance(result, bool) or not isinstance(result, int | float):
            raise CostError(f"CEL expression {self.source!r} returned {kind.name()}, not a number")
        if isinstance(result, float):
            if not math.isfinite(result):
                raise CostError(f"CEL expression {self.source!r} returned {result}")
            result = math.ceil(result)  # a fractional cost is rounded up to a whole unit
        if result < 0:
            raise CostError(f"CEL expression {self.source!r} returned a negative cost ({result})")
        return min(result, _UINT64_MAX)

    def __call__(self, usage: Usage, model: str, backend: str, route: str) -> int:
        """The cost; 0 (logged at most every 30 s) when the expression fails or is negative."""
        try:
            return self.evaluate(usage, model, backend, route)
        except (CostError, RuntimeError, TypeError, ValueError) as exc:
            now = time.monotonic()
            if now - self._last_log[0] >= _LOG_EVERY:
                self._last_log[0] = now
                log.warning("cost counted as 0: %s", exc)
            return 0


def compile_cel(source: str) -> CelCost:
    """Compile and type-check a cost expression, then test-evaluate it; CostError says what is wrong."""
    if not source.strip():
        raise CostError("the CEL expression is empty")
    first_error: BaseException | None = None
    for variables, env in _ENVS:
        try:
            program = env.compile(source)
        except Exception as exc:  # cel-cpp raises RuntimeError with the checker's text
            first_error = first_error or exc
            continue
        result_type = program.return_type()
        if not any(result_type == t for t in _NUMERIC):
            raise CostError(f"the CEL expression must give a number, not {result_type.name().lower()}")
        cost = CelCost(source, program, variables, [-_LOG_EVERY])
        try:  # like Envoy AI Gateway: evaluate once with dummy values
            cost.evaluate(Usage(), "dummy", "dummy", "dummy")
        except CostError as exc:
            if "negative" not in str(exc):
                raise CostError(f"test evaluation with zero tokens failed: {exc}") from None
        return cost
    hint = (
        " (token variables are uint as in Envoy AI Gateway: write 3u, not 3; or use doubles throughout, "
        "e.g. input_tokens / 1.0 + output_tokens * 3.0)"
        if "no matching overload" in str(first_error)
        else ""
    )
    raise CostError(f"invalid CEL expression: {_clean(first_error or 'unknown error')}{hint}")


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
    return {c.key: c.fn(usage, model, backend, route) for c in costs}
