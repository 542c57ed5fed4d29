"""CEL cost expressions, compiled with cel-cpp (imported, with protobuf, only when a config has one)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from cel_expr_python import cel

from sluicegate.core.usage import Usage
from sluicegate.ratelimit.costs import TOKEN_VARIABLES, CostError

log = logging.getLogger("sluicegate.ratelimit")

_UINT64_MAX = 2**64 - 1
_LOG_EVERY = 30.0  # seconds between two logs of the same failing expression


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
