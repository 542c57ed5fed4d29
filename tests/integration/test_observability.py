"""Metrics, traces and the access log of a real gateway process after a known set of requests."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE
from prometheus_client.parser import text_string_to_metric_families

from harness import GatewayProcess, backend_yaml
from sluicegate.testing import FakeProviderThread

SECRET = "sk-obs-Secret-7f3a9c"
PROMPT = "Please keep this prompt text private 4b1d"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
ROUTE = "default/obs"
LIMITED = "default/limited"

CONFIG = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: obs}}
spec:
  llmRequestCosts:
    - {{metadataKey: llm_input_token, type: InputToken}}
    - {{metadataKey: llm_output_token, type: OutputToken}}
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: obs-model}}]}}]
      backendRefs: [{{name: fake}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: limited}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: obs-limited}}]}}]
      backendRefs: [{{name: fake}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: one-per-tenant}}
spec:
  targetRefs: [{{name: limited, kind: AIGatewayRoute, group: aigateway.envoyproxy.io}}]
  rateLimit:
    type: Local
    local:
      rules:
        - clientSelectors: [{{headers: [{{name: x-tenant-id, type: Distinct}}]}}]
          limit: {{requests: 1, unit: Hour}}
{fake}
"""


class OtlpReceiver:
    """An OTLP/HTTP trace and metrics receiver on a loopback port that decodes each protobuf export."""

    def __init__(self) -> None:
        self.spans: list = []
        self.metric_exports: list[ExportMetricsServiceRequest] = []
        self.metric_headers: list[dict[str, str]] = []
        self.content_types: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.content_types.append(self.headers["content-type"])
                if self.path == "/v1/metrics":
                    metrics = ExportMetricsServiceRequest()
                    metrics.ParseFromString(body)
                    receiver.metric_exports.append(metrics)
                    receiver.metric_headers.append({k.lower(): v for k, v in self.headers.items()})
                else:
                    assert self.path == "/v1/traces", self.path
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    for resource_spans in request.resource_spans:
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend(scope_spans.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attributes(span) -> dict:
    """A decoded span's attributes as a plain dict."""
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def chat(url: str, model: str, headers: dict[str, str], stream: bool = False) -> httpx.Response:
    body: dict = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def run(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One gateway, one known set of requests; what it exported, logged and printed."""
    tmp = tmp_path_factory.mktemp("observability")
    receiver = OtlpReceiver()
    log_path = tmp / "access.log"
    env = {
        **__import__("os").environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-otlp-token=t%20k,x-other=1",
        "OTEL_SERVICE_NAME": "obs-gw",
    }
    env.pop("OTEL_SDK_DISABLED", None)
    env.pop("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", None)
    config = CONFIG.format(fake=backend_yaml("fake", fake.port, api_key=SECRET))
    args = ["--access-log", str(log_path), "--metrics-header-labels", "x-tenant-id:tenant"]
    gateway = GatewayProcess(config, tmp, args=args, env=env)
    fake.reset()
    try:
        tokens = {"x-fake-prompt-tokens": "7", "x-fake-completion-tokens": "5", "x-tenant-id": "acme"}
        first = chat(
            gateway.url,
            "obs-model",
            {
                **tokens,
                "traceparent": CLIENT_PARENT,
                "x-request-id": "req-1",
                "agent-session-id": "sess-9",
                "user-agent": "obs-test/1.0",
            },
        )
        assert first.status_code == 200, first.text
        assert chat(gateway.url, "obs-model", tokens).status_code == 200
        streamed = chat(
            gateway.url,
            "obs-model",
            {"x-fake-prompt-tokens": "3", "x-fake-completion-tokens": "9", "x-tenant-id": "acme"},
            stream=True,
        )
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        failed = chat(gateway.url, "obs-model", {"x-fake-status": "500", "x-tenant-id": "other"})
        assert failed.status_code == 500
        assert chat(gateway.url, "obs-limited", {"x-tenant-id": "t1"}).status_code == 200
        assert chat(gateway.url, "obs-limited", {"x-tenant-id": "t1"}).status_code == 429
        upstream = [dict(r.headers) for r in fake.requests]
        scraped = httpx.get(gateway.admin_url + "/metrics", timeout=10).text
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(receiver.spans) < 11:  # 6 server + at least 5 attempt spans
            time.sleep(0.05)
    finally:
        code = gateway.stop()
        receiver.close()
    assert code == 0
    yield {
        "metrics": scraped,
        "metric_exports": list(receiver.metric_exports),
        "metric_headers": list(receiver.metric_headers),
        "spans": list(receiver.spans),
        "content_types": receiver.content_types,
        "upstream": upstream,
        "log": log_path.read_text(),
        "output": gateway.output(),
    }


def samples(text: str, name: str, **labels: str) -> list:
    """The samples called `name` whose labels include `labels`."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                out.append(sample)
    return out


def total(text: str, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(text, name, **labels))


def test_requests_by_route_backend_status(run: dict) -> None:
    text = run["metrics"]
    backend = "default/fake"
    assert total(text, "sluicegate_requests_total", route=ROUTE, backend=backend, status="200") == 3
    assert total(text, "sluicegate_requests_total", route=ROUTE, backend=backend, status="500") == 1
    assert total(text, "sluicegate_requests_total", route=LIMITED, status="200") == 1
    assert total(text, "sluicegate_requests_total", route=LIMITED, status="429") == 1
    assert total(text, "sluicegate_requests_total") == 6
    assert total(text, "sluicegate_overhead_seconds_count") == 6


def test_genai_token_usage_sums_and_counts(run: dict) -> None:
    text = run["metrics"]
    common = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_original_model": "obs-model",
        "gen_ai_request_model": "obs-model",
    }
    assert total(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **common) == 7 + 7 + 3
    assert total(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **common) == 5 + 5 + 9
    assert total(text, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **common) == 3
    assert total(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", tenant="acme") == 17
    # powers-of-4 buckets: 7 input tokens fall in le=16, not le=4
    buckets = samples(text, "gen_ai_client_token_usage_bucket", gen_ai_token_type="input", **common)
    assert sum(s.value for s in buckets if s.labels["le"] == "4.0") == 1  # the stream's 3
    assert sum(s.value for s in buckets if s.labels["le"] == "16.0") == 3
    les = sorted({float(s.labels["le"]) for s in buckets if s.labels["le"] != "+Inf"})
    assert les[:3] == [1.0, 4.0, 16.0] and les[-1] == 4**13


def test_genai_durations_errors_and_stream_latency(run: dict) -> None:
    text = run["metrics"]
    model = {"gen_ai_original_model": "obs-model"}
    name = "gen_ai_server_request_duration_seconds_count"
    assert total(text, name, error_type="", **model) == 3
    assert total(text, name, error_type="_OTHER", **model) == 1
    les = {s.labels["le"] for s in samples(text, "gen_ai_server_request_duration_seconds_bucket")}
    assert "0.01" in les and "81.92" in les
    assert total(text, "gen_ai_server_time_to_first_token_seconds_count", **model) == 1
    assert total(text, "gen_ai_server_time_per_output_token_seconds_count", **model) == 1


def test_costs_rate_limits_and_connections(run: dict) -> None:
    text = run["metrics"]
    cost = "sluicegate_llm_request_cost_total"
    assert total(text, cost, route=ROUTE, model="obs-model", key="llm_input_token") == 17
    assert total(text, cost, route=ROUTE, model="obs-model", key="llm_output_token") == 19
    decisions = "sluicegate_ratelimit_decisions_total"
    assert total(text, decisions, route=LIMITED, decision="allowed") == 1
    assert total(text, decisions, route=LIMITED, decision="limited") == 1
    assert total(text, decisions, route=ROUTE) == 0  # no rule applies there
    assert total(text, "sluicegate_upstream_connections_open") >= 1
    assert total(text, "sluicegate_upstream_connections_idle") >= 1


def test_traces_continue_the_client_trace_and_reach_the_upstream(run: dict) -> None:
    spans = run["spans"]
    assert run["content_types"] and set(run["content_types"]) == {"application/x-protobuf"}
    servers = [s for s in spans if s.kind == s.SPAN_KIND_SERVER]
    clients = [s for s in spans if s.kind == s.SPAN_KIND_CLIENT]
    attempts = sum(json.loads(line)["attempts"] for line in run["log"].splitlines())
    assert attempts >= 5  # the 429 never reached a backend; the 500 may have been retried
    assert len(servers) == 6 and len(clients) == attempts
    first = next(s for s in servers if s.trace_id.hex() == TRACE_ID)
    assert first.parent_span_id.hex() == "b7ad6b7169203331"
    attrs = attributes(first)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "obs-model"
    assert attrs["gen_ai.response.model"]
    assert attrs["gen_ai.usage.input_tokens"] == 7 and attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["session.id"] == "sess-9"
    assert "gen_ai.input.messages" not in attrs  # content capture is off
    assert not any("gen_ai.output.messages" in attributes(s) for s in spans)
    child = next(s for s in clients if s.trace_id.hex() == TRACE_ID)
    assert child.parent_span_id == first.span_id
    # the backend saw our attempt span as its parent, in the client's trace
    sent = [h["traceparent"] for h in run["upstream"] if "traceparent" in h]
    assert f"00-{TRACE_ID}-{child.span_id.hex()}-01" in sent
    assert len(sent) == attempts and len(set(sent)) == attempts  # one span, one traceparent per attempt
    failed = next(s for s in servers if attributes(s).get("http.response.status_code") == 500)
    assert failed.status.code == failed.status.STATUS_CODE_ERROR


def otlp_points(export: ExportMetricsServiceRequest, name: str) -> tuple[str, list]:
    """(the data kind, the points) of the metric called `name` in one metrics export."""
    for resource_metrics in export.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    kind = metric.WhichOneof("data")
                    return kind, list(getattr(metric, kind).data_points)
    return "", []


def test_metrics_are_exported_over_otlp(run: dict) -> None:
    exports, headers = run["metric_exports"], run["metric_headers"]
    assert len(exports) >= 2  # on the interval, and once more on shutdown
    assert all(h["x-otlp-token"] == "t k" and h["x-other"] == "1" for h in headers)
    assert all(h["content-type"] == "application/x-protobuf" for h in headers)
    last = exports[-1]  # cumulative: the final flush has every request
    resource = attributes(last.resource_metrics[0].resource)
    assert resource["service.name"] == "obs-gw"

    kind, points = otlp_points(last, "gen_ai.client.token.usage")
    assert kind == "histogram"
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.original.model": "obs-model",
        "gen_ai.request.model": "obs-model",
    }
    inputs = [
        p
        for p in points
        if all(attributes(p).get(k) == v for k, v in {**common, "gen_ai.token.type": "input"}.items())
    ]
    assert sum(p.sum for p in inputs) == 7 + 7 + 3 and sum(p.count for p in inputs) == 3
    assert {attributes(p)["tenant"] for p in inputs} == {"acme"}
    first = inputs[0]
    assert list(first.explicit_bounds[:3]) == [1.0, 4.0, 16.0] and first.explicit_bounds[-1] == 4**13
    assert len(first.bucket_counts) == len(first.explicit_bounds) + 1
    assert sum(first.bucket_counts) == first.count
    # per-bucket counts, not Prometheus' cumulative ones: the stream's 3 in (1, 4], the two 7s in (4, 16]
    assert sum(p.bucket_counts[1] for p in inputs) == 1
    assert sum(p.bucket_counts[2] for p in inputs) == 2
    outputs = [
        p
        for p in points
        if all(attributes(p).get(k) == v for k, v in {**common, "gen_ai.token.type": "output"}.items())
    ]
    assert sum(p.sum for p in outputs) == 5 + 5 + 9

    kind, points = otlp_points(last, "sluicegate_requests")
    assert kind == "sum"
    counted = {
        (attributes(p)["route"], attributes(p).get("backend", ""), attributes(p)["status"]): p.as_double
        for p in points
    }
    assert counted[(ROUTE, "default/fake", "200")] == 3
    assert counted[(ROUTE, "default/fake", "500")] == 1
    assert counted[(LIMITED, "", "429")] == 1
    assert sum(counted.values()) == 6
    sum_metric = next(
        m for m in last.resource_metrics[0].scope_metrics[0].metrics if m.name == "sluicegate_requests"
    )
    assert sum_metric.sum.is_monotonic
    assert sum_metric.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE

    kind, points = otlp_points(last, "gen_ai.server.request.duration")
    assert kind == "histogram"
    failed = [p for p in points if attributes(p).get("error.type") == "_OTHER"]
    assert sum(p.count for p in failed if attributes(p)["gen_ai.original.model"] == "obs-model") == 1
    assert not any("error.type" in attributes(p) for p in points if p not in failed)  # "" is no attribute
    assert otlp_points(last, "gen_ai.server.time_to_first_token")[0] == "histogram"
    assert otlp_points(last, "sluicegate_upstream_connections_open")[0] == "gauge"


def test_completion_content_is_captured_when_asked(fake: FakeProviderThread, tmp_path: Path) -> None:
    receiver = OtlpReceiver()
    env = {
        **__import__("os").environ,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{receiver.port}/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
    }
    env.pop("OTEL_SDK_DISABLED", None)
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    route = "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\n"
    route += "spec:\n  rules: [{backendRefs: [{name: fake}]}]\n"
    gateway = GatewayProcess(backend_yaml("fake", fake.port) + route, tmp_path, env=env)
    replies = {"plain": "The unary reply 5e1a", "stream": "The streamed reply 9c2b"}
    try:
        assert chat(gateway.url, "m", {"x-fake-reply": replies["plain"]}).status_code == 200
        streamed = chat(gateway.url, "m", {"x-fake-reply": replies["stream"]}, stream=True)
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(receiver.spans) < 4:
            time.sleep(0.05)
    finally:
        assert gateway.stop() == 0
        receiver.close()
    assert not receiver.metric_exports  # only the traces endpoint was given
    servers = [attributes(s) for s in receiver.spans if s.kind == s.SPAN_KIND_SERVER]
    assert len(servers) == 2
    for reply in replies.values():
        span = next(a for a in servers if reply in a.get("gen_ai.output.messages", ""))
        messages = json.loads(span["gen_ai.output.messages"])
        assert messages[0]["role"] == "assistant"
        assert messages[0]["parts"] == [{"type": "text", "content": reply}]
        assert PROMPT in span["gen_ai.input.messages"]


def test_access_log_lines(run: dict) -> None:
    lines = [json.loads(line) for line in run["log"].splitlines()]
    assert len(lines) == 6
    first = next(line for line in lines if line["x-request-id"] == "req-1")
    assert first["method"] == "POST" and first["request.path"] == "/v1/chat/completions"
    assert first["response_code"] == 200 and first["duration"] > 0
    assert first["gen_ai.request.model"] == "obs-model" and first["gen_ai.response.model"]
    assert first["gen_ai.provider.name"] == "openai"
    assert first["gen_ai.usage.input_tokens"] == 7 and first["gen_ai.usage.output_tokens"] == 5
    assert first["llm_input_token"] == 7 and first["llm_output_token"] == 5
    assert first["backend"] == "default/fake" and first["route"] == ROUTE and first["attempts"] == 1
    assert first["session.id"] == "sess-9" and first["user_agent"] == "obs-test/1.0"
    stream = next(line for line in lines if line["stream"])
    assert stream["token_latency_ttft"] > 0 and stream["gen_ai.usage.output_tokens"] == 9
    assert sorted(line["response_code"] for line in lines) == [200, 200, 200, 200, 429, 500]


def test_no_secret_or_content_anywhere(run: dict) -> None:
    spans = "".join(str(s) for s in run["spans"])
    for text in (run["log"], run["output"], run["metrics"], spans):
        assert SECRET not in text
        assert PROMPT not in text
    assert run["upstream"] and all(h.get("authorization") == f"Bearer {SECRET}" for h in run["upstream"])


def test_access_log_to_stdout_and_off(fake: FakeProviderThread, tmp_path: Path) -> None:
    config = backend_yaml("fake", fake.port)
    route = """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  rules: [{backendRefs: [{name: fake}]}]
"""
    outputs = {}
    for mode in ("-", "off"):
        gateway = GatewayProcess(config + route, tmp_path, args=["--access-log", mode])
        try:
            assert chat(gateway.url, "any", {"x-request-id": f"stdout-{mode}"}).status_code == 200
        finally:
            assert gateway.stop() == 0
        outputs[mode] = gateway.output()
    logged = [json.loads(x) for x in outputs["-"].splitlines() if x.startswith("{")]
    assert [line["x-request-id"] for line in logged] == ["stdout--"]
    assert "stdout-off" not in outputs["off"]


def test_dashboard_uses_only_metrics_the_gateway_exposes(run: dict) -> None:
    dashboard = Path(__file__).parents[2] / "deploy/grafana/sluicegate-dashboard.json"
    text = dashboard.read_text()
    json.loads(text)
    exposed = {family.name for family in text_string_to_metric_families(run["metrics"])}
    used = {
        re.sub(r"_(total|bucket|sum|count)$", "", m) for m in re.findall(r"\b(?:gen_ai|sluicegate)_\w+", text)
    }
    used -= {"sluicegate_ai_traffic", "gen_ai_request_model", "gen_ai_token_type"}  # the uid and labels
    assert used and used <= exposed, used - exposed


def test_a_stdout_nobody_reads_does_not_hold_up_requests_or_shutdown(
    fake: FakeProviderThread, tmp_path: Path
) -> None:
    route = "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\n"
    route += "spec:\n  rules: [{backendRefs: [{name: fake}]}]\n"
    gateway = GatewayProcess(backend_yaml("fake", fake.port) + route, tmp_path)  # access log on stdout
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            for _ in range(250):  # ~170 KB of log lines: more than a pipe holds while nobody reads
                assert client.post(
                    "/v1/chat/completions", json=body, headers={"user-agent": "u" * 300}
                ).is_success
    finally:
        assert gateway.stop(timeout=15) == 0
    assert gateway.output().count('"request.path":"/v1/chat/completions"') == 250
