"""A fixed set of finished requests that touches every metric, label and bucket edge; for golden tests.

golden_metrics.txt is this scenario's scrape as prometheus_client's own Counter and Histogram gave it
(before the metrics became plain numbers read by a collector). Regenerate it only when a metric changes
on purpose, in tests/observability: `PYTHONPATH=../../src python metric_scenario.py > golden_metrics.txt`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from sluicegate.config.runtime import Backend, BackendRef, Endpoint, Rule, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.usage import Usage
from sluicegate.observability.metrics import Metrics, parse_header_labels

BEDROCK = Backend("default/bedrock", Schema("AWSBedrock"), (Endpoint("127.0.0.1", 1, False),))
OPENAI = Backend("default/openai", Schema("OpenAI"), (Endpoint("127.0.0.1", 2, False),))
ROUTE = Rule("default/route", "rule-0", (), (), (BackendRef(BEDROCK, model_name_override="claude-x"),))
LIMITED = Rule("default/limited", "rule-0", (), (), (BackendRef(OPENAI),))
START = 1000.0


def _ctx(rule: Rule | None, tenant: str = "", **fields: object) -> RequestContext:
    headers = {"x-tenant-id": tenant} if tenant else {}
    ctx = RequestContext(Request("POST", "/v1/chat/completions", "", headers, b"{}", []), "chat")
    ctx.started_at = START
    ctx.model, ctx.rule, ctx.status = "gpt-4o", rule, 200
    ctx.backend_ref = rule.backend_refs[0] if rule is not None else None
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


def record_scenario(metrics: Metrics) -> None:
    """Record the scenario's requests (durations from a fixed start, so every value is reproducible)."""
    metrics.limited_routes = frozenset({LIMITED.route})
    full = Usage(16, 1, 17, cached_input_tokens=4, cache_creation_input_tokens=64, reasoning_tokens=3)
    costs = {"llm_input_token": 16, "llm_total_token": 17}
    metrics.record(
        _ctx(ROUTE, "a", usage=full, costs=costs, response_model="claude-x-1", attempts=1), 1000.01
    )
    metrics.record(
        _ctx(ROUTE, "a", usage=Usage(0, 10**9, 10**9), costs={"llm_total_token": 3}, upstream_seconds=0.3),
        1000.75,
    )
    metrics.record(_ctx(ROUTE, "b", status=500, error="upstream 500", attempts=2), 1001.5)
    metrics.record(_ctx(ROUTE, "b", status=200, error="stream broke", usage=Usage(3, 2, 5)), 1002.0)
    streamed = _ctx(ROUTE, "c", stream=True, usage=Usage(5, 11, 16), upstream_seconds=1.5, attempts=1)
    streamed.first_byte_at = START + 0.25
    metrics.record(streamed, START + 2.25)
    single = _ctx(ROUTE, "a", stream=True, usage=Usage(5, 1, 6), attempts=1)
    single.first_byte_at = START + 0.001
    metrics.record(single, START + 0.02)
    metrics.record(_ctx(None, "d", status=404, model="made-up"), 1000.003)
    metrics.record(_ctx(LIMITED, "a", usage=Usage(1, 1, 2), attempts=1), 1000.2)
    metrics.record(_ctx(LIMITED, "a", backend_ref=None, status=429), 1000.0001)
    metrics.record(_ctx(LIMITED, "e", backend_ref=None, status=503), 1000.0)
    metrics.record(_ctx(LIMITED, "e", status=503, attempts=1, usage=None), 1100.0)


def scenario_text() -> str:
    """The Prometheus text of the scenario, without the `_created` series (wall-clock times)."""
    registry = CollectorRegistry()
    record_scenario(Metrics(registry, parse_header_labels("x-tenant-id:tenant", max_values=3)))
    lines = generate_latest(registry).decode().splitlines(keepends=True)
    return "".join(line for line in lines if "_created" not in line)


if __name__ == "__main__":
    print(scenario_text(), end="")
