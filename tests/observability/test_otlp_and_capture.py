"""OTLP metric conversion and the parsing of captured completion content, without a gateway."""

from __future__ import annotations

import json

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sluicegate.observability.otlp_metrics import convert, metrics_url, parse_headers
from sluicegate.observability.tracing import CAPTURE_TEXT, _output_content


def test_registry_to_otlp() -> None:
    registry = CollectorRegistry()
    Counter("sluicegate_requests", "d", ["route", "backend"], registry=registry).labels("r", "").inc(3)
    tokens = Histogram(
        "gen_ai_client_token_usage",
        "d",
        ["gen_ai_token_type", "error_type"],
        buckets=(1, 4, 16),
        registry=registry,
    )
    for value in (3, 7, 100):
        tokens.labels("input", "").observe(value)
    Gauge("open", "d", registry=registry).set(2)
    metrics = {m.name: m for m in convert(registry.collect(), 2_000, 1_000)}
    requests = metrics["sluicegate_requests"].sum
    assert requests.is_monotonic and requests.data_points[0].as_double == 3
    assert [(a.key, a.value.string_value) for a in requests.data_points[0].attributes] == [("route", "r")]
    usage = metrics["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    point = usage.histogram.data_points[0]
    assert list(point.explicit_bounds) == [1, 4, 16] and list(point.bucket_counts) == [0, 1, 1, 1]
    assert point.count == 3 and point.sum == 110
    assert [a.key for a in point.attributes] == ["gen_ai.token.type"]
    assert metrics["open"].gauge.data_points[0].as_double == 2


def test_endpoints_and_headers() -> None:
    assert metrics_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == "http://c:4318/v1/metrics"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m/x",
    }
    assert metrics_url(env) == "http://m/x"
    assert parse_headers("Api-Key=a%3Db, x=1,bad") == {"api-key": "a=b", "x": "1"}


def parts(data: bytes) -> list:
    text = _output_content(data)
    assert text is not None
    return [m["parts"] for m in json.loads(text)]


def test_output_formats() -> None:
    openai = {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]}
    assert parts(orjson.dumps(openai)) == [[{"type": "text", "content": "hi"}]]
    sse = b'data: {"choices":[{"index":0,"delta":{"content":"he"}}]}\n\n'
    sse += b'data: {"choices":[{"index":0,"delta":{"content":"llo"}}]}\n\ndata: [DONE]\n\n'
    assert parts(sse) == [[{"type": "text", "content": "hello"}]]
    anthropic = {"type": "message", "content": [{"type": "text", "text": "yo"}], "stop_reason": "end_turn"}
    assert parts(orjson.dumps(anthropic)) == [[{"type": "text", "content": "yo"}]]
    events = b""
    for piece in ("ab", "cd"):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        events += b"event: content_block_delta\ndata: " + orjson.dumps(delta) + b"\n\n"
    assert parts(events) == [[{"type": "text", "content": "abcd"}]]
    assert _output_content(b'{"choices":[{"mess') is None  # cut off
    long = {"choices": [{"message": {"content": "x" * (CAPTURE_TEXT + 10)}}]}
    assert len(parts(orjson.dumps(long))[0][0]["content"]) == CAPTURE_TEXT
