"""Costs: every token type and CEL form, compiled once and evaluated the way Envoy AI Gateway does."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sluicegate.config.compile import load_config
from sluicegate.config.errors import ConfigError
from sluicegate.core.usage import Usage
from sluicegate.ratelimit.costs import (
    CostError,
    RequestCost,
    compile_cel,
    compute_costs,
    cost_function,
    merge_costs,
)

USAGE = Usage(
    input_tokens=100,
    output_tokens=50,
    total_tokens=150,
    cached_input_tokens=30,
    cache_creation_input_tokens=7,
    reasoning_tokens=11,
)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("InputToken", 100),
        ("CachedInputToken", 30),
        ("CacheCreationInputToken", 7),
        ("OutputToken", 50),
        ("TotalToken", 150),
        ("ReasoningToken", 11),
    ],
)
def test_token_types(kind: str, expected: int) -> None:
    assert cost_function(kind, None)(USAGE, "m", "ns/b", "ns/r") == expected


@pytest.mark.parametrize(
    ("expression", "expected", "variables"),
    [
        # Envoy AI Gateway's uint forms
        ("input_tokens + output_tokens * 3u", 250, "uint"),
        ("input_tokens == uint(3) ? 100000000 : 0", 0, "uint"),
        ("uint(double(input_tokens) / 1.0 + double(output_tokens) * 3.0)", 250, "uint"),
        ("input_tokens + cached_input_tokens / 10u + output_tokens * 6u", 403, "uint"),
        ("total_tokens - reasoning_tokens", 139, "uint"),
        ("cache_creation_input_tokens * 2u", 14, "uint"),
        # the forms users write: int literals, doubles (a fraction rounds up to a whole unit)
        ("input_tokens * 2", 200, "int"),
        ("input_tokens / 1.0 + output_tokens * 3.0", 250, "double"),
        ("output_tokens * 0.5", 25, "double"),
        ("input_tokens * 0.015", 2, "double"),  # 1.5 -> 2
        (
            "(input_tokens - cached_input_tokens) + (cached_input_tokens * 0.1) + output_tokens * 1.5",
            148,
            "double",
        ),
        # the string variables
        ('model == "gpt-4o" ? output_tokens * 10u : output_tokens', 500, "uint"),
        ('backend == "ns/b" && route_name == "ns/r" ? 1u : 0u', 1, "uint"),
        ("model.startsWith('gpt') ? 7 : 0", 7, "uint"),
    ],
)
def test_cel_forms(expression: str, expected: int, variables: str) -> None:
    cost = compile_cel(expression)
    assert cost.variables == variables
    assert cost(USAGE, "gpt-4o", "ns/b", "ns/r") == expected


def test_envoy_example_expression_counts_only_three_input_tokens() -> None:
    cost = compile_cel("input_tokens == uint(3) ? 100000000 : 0")
    assert cost(Usage(input_tokens=3), "m", "b", "r") == 100000000
    assert cost(Usage(input_tokens=4), "m", "b", "r") == 0


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("input_tokens +* 3", "<input>:1:15: Syntax error"),
        ("input_tokens * 2 + output_tokens * 1.5", "no matching overload"),
        ("foo + 1", "undeclared reference to 'foo'"),
        ("'abc'", "must give a number, not string"),
        ("input_tokens > 3u", "must give a number, not bool"),
        ("", "empty"),
    ],
)
def test_bad_expressions_fail_with_the_cel_error(expression: str, message: str) -> None:
    with pytest.raises(CostError, match=message.replace("(", r"\(").replace("*", r"\*")):
        compile_cel(expression)


def test_syntax_error_shows_the_position() -> None:
    with pytest.raises(CostError) as err:
        compile_cel("input_tokens +* 3")
    assert "1:15" in str(err.value) and "^" in str(err.value)


def test_overload_error_carries_a_hint() -> None:
    with pytest.raises(CostError, match="write 3u"):
        compile_cel("input_tokens * 2 + output_tokens * 1.5")


def test_failing_or_negative_results_cost_zero_and_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    underflow = compile_cel("input_tokens - output_tokens")  # uint: 1 - 2 is an error
    negative = compile_cel("input_tokens * 1 - 5")  # int: negative
    with caplog.at_level(logging.WARNING, logger="sluicegate.ratelimit"):
        assert underflow(Usage(input_tokens=1, output_tokens=2), "m", "b", "r") == 0
        assert negative(Usage(input_tokens=1), "m", "b", "r") == 0
        assert negative(Usage(input_tokens=1), "m", "b", "r") == 0  # logged once per interval
    assert underflow(Usage(input_tokens=5, output_tokens=2), "m", "b", "r") == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("overflow" in m for m in messages) == 1
    assert sum("negative cost (-4)" in m for m in messages) == 1


def test_expression_failing_on_zero_tokens_is_rejected_when_loading() -> None:
    with pytest.raises(CostError, match="test evaluation with zero tokens failed"):
        compile_cel("output_tokens - 1u")


def test_route_costs_win_over_global_ones_per_key() -> None:
    route = (RequestCost("a", "InputToken", cost_function("InputToken", None)),)
    global_costs = (
        RequestCost("a", "OutputToken", cost_function("OutputToken", None)),
        RequestCost("b", "TotalToken", cost_function("TotalToken", None)),
    )
    merged = merge_costs(route, global_costs)
    assert compute_costs(merged, USAGE, "m", "b", "r") == {"a": 100, "b": 150}


CONFIG = """\
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  llmRequestCosts:
    - {metadataKey: ok, type: CEL, cel: "input_tokens + output_tokens * 3u"}
    - {metadataKey: bad, type: CEL, cel: "input_tokens +* 3"}
  rules:
    - backendRefs: [{name: a}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: a}
spec:
  schema: {name: OpenAI}
  backendRef: {name: b, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: b}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 9}}]
"""


def test_bad_expression_is_a_config_problem_at_its_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError) as err:
        load_config([str(path)], env={})
    (problem,) = err.value.problems
    assert (problem.resource, problem.field) == ("AIGatewayRoute default/r", "spec.llmRequestCosts[1].cel")
    assert "1:15" in problem.message and "Syntax error" in problem.message


def test_sluicegate_check_prints_the_cel_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    src = str(Path(__file__).resolve().parents[2] / "src")
    result = subprocess.run(
        [sys.executable, "-m", "sluicegate", "check", str(path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 1
    assert "spec.llmRequestCosts[1].cel: invalid CEL expression" in result.stderr
    assert "<input>:1:15" in result.stderr
    fixed = textwrap.dedent(CONFIG).replace("input_tokens +* 3", "input_tokens * 3")
    path.write_text(fixed)
    assert load_config([str(path)], env={}).costs.for_route("default/r")[1].key == "bad"
