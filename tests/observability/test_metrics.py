"""Metrics recorded from request contexts into a private registry, read back with prometheus' parser."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.config.runtime import Backend, BackendRef, Endpoint, Rule, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.usage import Usage
from sluicegate.observability.access_log import BUFFER_BYTES, AccessLog, entry
from sluicegate.observability.metrics import OTHER, Metrics, parse_header_labels
from sluicegate.observability.state import tracing_wanted

from .metric_scenario import record_scenario, scenario_text

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


def test_scrape_is_what_prometheus_client_gave() -> None:
    # golden_metrics.txt was written by the prometheus_client Counter/Histogram implementation
    golden = (Path(__file__).parent / "golden_metrics.txt").read_text()
    assert scenario_text() == golden


def test_every_series_has_its_created_sample() -> None:
    registry = CollectorRegistry()
    record_scenario(Metrics(registry))
    for family in registry.collect():
        kinds = {s.name[len(family.name) :] for s in family.samples}
        series = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")) for s in family.samples}
        created = [s for s in family.samples if s.name.endswith("_created")]
        assert len(created) == len(series), family.name
        assert all(abs(s.value - time.time()) < 60 for s in created)
        assert kinds <= {"_total", "_created", "_bucket", "_count", "_sum"}


def test_a_second_metrics_on_one_registry_is_refused() -> None:
    registry = CollectorRegistry(auto_describe=True)
    Metrics(registry)
    with pytest.raises(ValueError):
        Metrics(registry)


def test_a_negative_cost_is_refused_as_by_a_counter() -> None:
    metrics = Metrics(CollectorRegistry())
    with pytest.raises(ValueError):
        metrics.record(context(costs={"llm_total_token": -1}))


def test_access_log_entry_fields() -> None:
    ctx = context(
        {"x-request-id": "r1", "agent-session-id": "s1", "user-agent": "ua"},
        usage=Usage(7, 5, 12, cached_input_tokens=2),
        stream=True,
        upstream_seconds=0.0104445,
        costs={"llm_input_token": 7, "duration": 99},
        attempt_log=["default/bedrock:200"],
        attempts=1,
    )
    ctx.first_byte_at = ctx.started_at + 0.0015
    before = time.time()
    record = entry(ctx, "aws.bedrock", ctx.started_at + 0.0123456)
    assert record["duration"] == 12.346 and record["upstream_time"] == 10.445
    assert record["token_latency_ttft"] == 1.5
    assert record["duration"] != 99 and record["llm_input_token"] == 7  # a cost never hides a field
    assert list(record)[:5] == ["start_time", "method", "request.path", "response_code", "duration"]
    assert list(record)[-2:] == ["error", "llm_input_token"]
    started = datetime.fromisoformat(record["start_time"]).timestamp()
    assert before - 0.02 <= started <= time.time() and record["start_time"].endswith("+00:00")
    assert record["gen_ai.request.model"] == "claude-x" and record["gen_ai.original.model"] == "gpt-4o"
    assert record["route"] == "default/route" and record["backend"] == "default/bedrock"
    assert record["x-request-id"] == "r1" and record["session.id"] == "s1" and record["user_agent"] == "ua"
    assert record["gen_ai.usage.cached_input_tokens"] == 2 and record["gen_ai.usage.reasoning_tokens"] == 0
    bare = entry(context(usage=None, rule=None, backend_ref=None, status=0), "", ctx.started_at)
    assert bare["response_code"] == 500 and bare["gen_ai.usage.input_tokens"] is None
    assert bare["route"] is None and bare["gen_ai.provider.name"] is None


def test_access_log_batches_on_an_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    writer = AccessLog(str(path))
    padding = "x" * 3000

    async def write_all() -> None:
        for i in range(2000):  # about 6 MB: buffers fill and go to the writer before the flush timer
            writer.write({"n": i, "pad": padding})
            if i % 300 == 0:
                await asyncio.sleep(0)
        writer.write({"n": "huge", "pad": "y" * (BUFFER_BYTES + 10)})  # longer than a buffer
        writer.write({"n": "last"})

    asyncio.run(write_all())
    writer.close()
    lines = [json.loads(line)["n"] for line in path.read_text().splitlines()]
    assert lines == [*range(2000), "huge", "last"] and writer.dropped == 0
