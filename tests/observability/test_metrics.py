"""Metrics recorded from request contexts into a private registry, read back with prometheus' parser."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.config.runtime import Backend, BackendRef, Endpoint, Rule, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.usage import Usage
from sluicegate.observability.access_log import AccessLog, entry
from sluicegate.observability.metrics import OTHER, Metrics, parse_header_labels
from sluicegate.observability.state import tracing_wanted

BEDROCK = Backend("default/bedrock", Schema("AWSBedrock"), (Endpoint("127.0.0.1", 1, False),))
RULE = Rule("default/route", "rule-0", (), (), (BackendRef(BEDROCK, model_name_override="claude-x"),))


def context(headers: dict[str, str] | None = None, **fields: object) -> RequestContext:
    request = Request("POST", "/v1/chat/completions", "", headers or {}, b"{}", [])
    ctx = RequestContext(request, "chat")
    ctx.model, ctx.rule, ctx.backend_ref, ctx.status = "gpt-4o", RULE, RULE.backend_refs[0], 200
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


def scrape(registry: CollectorRegistry, name: str) -> list:
    text = generate_latest(registry).decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_labels_follow_the_genai_conventions() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ctx = context(
        usage=Usage(10, 20, 30, cached_input_tokens=4, reasoning_tokens=6), response_model="claude-x-1"
    )
    metrics.record(ctx, ctx.started_at + 0.5)
    sums = {s.labels["gen_ai_token_type"]: s for s in scrape(registry, "gen_ai_client_token_usage_sum")}
    assert {k: s.value for k, s in sums.items()} == {
        "input": 10,
        "output": 20,
        "cached_input": 4,
        "reasoning": 6,
    }
    labels = sums["input"].labels
    assert labels["gen_ai_provider_name"] == "aws.bedrock"
    assert labels["gen_ai_original_model"] == "gpt-4o"
    assert labels["gen_ai_request_model"] == "claude-x"  # after modelNameOverride
    assert labels["gen_ai_response_model"] == "claude-x-1"
    assert labels["gen_ai_operation_name"] == "chat"
    (duration,) = scrape(registry, "gen_ai_server_request_duration_seconds_sum")
    assert duration.value == pytest.approx(0.5) and duration.labels["error_type"] == ""


def test_unmatched_models_do_not_become_labels() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for i in range(5):
        metrics.record(context(rule=None, backend_ref=None, status=404, model=f"random-{i}"))
    durations = scrape(registry, "gen_ai_server_request_duration_seconds_count")
    assert len(durations) == 1 and durations[0].value == 5
    assert (
        durations[0].labels["gen_ai_original_model"] == "" and durations[0].labels["error_type"] == "_OTHER"
    )


def test_stream_latency_and_overhead() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ctx = context(stream=True, usage=Usage(5, 11, 16), upstream_seconds=1.5)
    ctx.first_byte_at = ctx.started_at + 0.25
    metrics.record(ctx, ctx.started_at + 2.25)
    assert scrape(registry, "gen_ai_server_time_to_first_token_seconds_sum")[0].value == pytest.approx(0.25)
    tpot = scrape(registry, "gen_ai_server_time_per_output_token_seconds_sum")[0].value
    assert tpot == pytest.approx(2.0 / 10)
    assert scrape(registry, "sluicegate_overhead_seconds_sum")[0].value == pytest.approx(0.75)


def test_header_labels_are_capped() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, parse_header_labels("x-tenant-id:tenant", max_values=2))
    for tenant in ("a", "b", "c", "d", "a"):
        metrics.record(context({"x-tenant-id": tenant}, usage=Usage(1, 1, 2)))
    counts = {
        s.labels["tenant"]: s.value
        for s in scrape(registry, "gen_ai_client_token_usage_count")
        if s.labels["gen_ai_token_type"] == "input"
    }
    assert counts == {"a": 2, "b": 1, OTHER: 2}


def test_header_label_specs() -> None:
    assert [(h.header, h.label) for h in parse_header_labels("X-Tenant-Id:tenant, x-team")] == [
        ("x-tenant-id", "tenant"),
        ("x-team", "x_team"),
    ]
    with pytest.raises(ValueError):
        parse_header_labels("x-a:bad label")


def test_costs_by_route_and_model() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for _ in range(3):
        metrics.record(context(usage=Usage(1, 1, 2), costs={"llm_total_token": 7}))
    (cost,) = scrape(registry, "sluicegate_llm_request_cost_total")
    assert cost.value == 21 and cost.labels == {
        "route": "default/route",
        "model": "claude-x",
        "key": "llm_total_token",
    }


def test_tracing_only_when_an_otlp_endpoint_is_set() -> None:
    assert not tracing_wanted({})
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})
    assert not tracing_wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )


def test_access_log_writes_every_queued_line_on_close(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    writer = AccessLog(str(path))
    for i in range(500):
        ctx = context(
            {"x-request-id": f"r{i}", "authorization": "Bearer sk-hidden"}, usage=Usage(i, 1, i + 1)
        )
        writer.write(entry(ctx, "aws.bedrock", time.monotonic()))
    writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["x-request-id"] for line in lines] == [f"r{i}" for i in range(500)]
    assert lines[7]["gen_ai.usage.input_tokens"] == 7 and lines[7]["gen_ai.provider.name"] == "aws.bedrock"
    assert "sk-hidden" not in path.read_text()
