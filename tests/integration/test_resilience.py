"""Fallback, retries, resting, timeouts and broken streams through a gateway subprocess.

Faults come from the fake provider's `x-fake-*` knobs, set per backendRef with a headerMutation, so that
only the primary misbehaves; a closed port refuses connections; a small http.server answers 429 with
Retry-After.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from harness import GatewayProcess, backend_yaml, free_port
from sluicegate.testing import FakeProviderThread
from sluicegate.testing.fake_bedrock import FAKE_ACCESS_KEY, FAKE_SECRET_KEY

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
FALLBACK_FIXTURE = (
    Path(__file__).parents[1] / "config/fixtures/envoy-ai-gateway/provider_fallback/fallback.yaml"
)


def _rule(model: str, primary: str, fallback: str, knobs: dict[str, str], extra: str = "") -> str:
    mutation = ", ".join(f'{{name: {k}, value: "{v}"}}' for k, v in knobs.items())
    head = f"headerMutation: {{set: [{mutation}]}}, " if knobs else ""
    return f"""
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
      backendRefs:
        - {{name: {primary}, {head}priority: 0}}
        - {{name: {fallback}, priority: 1}}
{extra}"""


def _aws() -> str:
    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: aws-creds}}
type: Opaque
stringData:
  credentials: |
    [default]
    aws_access_key_id = {FAKE_ACCESS_KEY}
    aws_secret_access_key = {FAKE_SECRET_KEY}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: aws-policy}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}}]
  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    credentialsFile: {{secretRef: {{name: aws-creds}}}}
"""


class _Limited(BaseHTTPRequestHandler):
    """Always 429 with Retry-After: 60, counting the requests."""

    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"error": {"message": "slow down", "type": "rate_limit_error"}}'
        self.send_response(429)
        self.send_header("content-type", "application/json")
        self.send_header("retry-after", "60")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def limited() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Limited)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def good() -> Iterator[FakeProviderThread]:
    with FakeProviderThread() as fake:
        yield fake


@pytest.fixture(scope="module")
def bad() -> Iterator[FakeProviderThread]:
    with FakeProviderThread() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    good: FakeProviderThread, bad: FakeProviderThread, limited: ThreadingHTTPServer, tmp_path_factory
) -> Iterator[GatewayProcess]:
    dead = free_port()
    backends = [backend_yaml("dead", dead), backend_yaml("limited", limited.server_address[1])]
    backends += [backend_yaml(f"good-{n}", good.port) for n in range(8)]
    backends += [backend_yaml(f"bad-{n}", bad.port) for n in range(8)]
    backends.append(backend_yaml("bedrock", good.port, schema="AWSBedrock"))
    azure = ", version: 2024-10-21"
    backends.append(backend_yaml("azure", bad.port, "AzureOpenAI", azure, "az-key", "AzureAPIKey"))
    rules = [
        _rule("refused", "dead", "good-0", {}),
        _rule("azure-bedrock", "azure", "bedrock", {"x-fake-status": "503"}),
        _rule("rest", "limited", "good-1", {}),
        _rule(
            "hang", "bad-0", "good-2", {"x-fake-delay-ms": "5000"}, "      timeouts: {backendRequest: 300ms}"
        ),
        _rule("midstream", "bad-1", "good-3", {"x-fake-drop-after": "2", "x-fake-chunks": "5"}),
        _rule("bad-request", "bad-2", "good-4", {"x-fake-status": "400"}),
    ]
    rules[1] = rules[1].replace(
        "{name: bedrock, priority: 1}", f'{{name: bedrock, modelNameOverride: "{CLAUDE}", priority: 1}}'
    )
    counted = _rule("counted", "bad-3", "bad-4", {}).replace(
        "priority: 0}", 'priority: 0, headerMutation: {set: [{name: x-fake-status, value: "500"}]}}'
    )
    counted = counted.replace(
        "{name: bad-4, priority: 1}",
        '{name: bad-4, priority: 1, headerMutation: {set: [{name: x-fake-status, value: "500"}]}}',
    )
    config = f"""
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: main}}
spec:
  rules:{"".join(rules)}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: counted}}
spec:
  rules:{counted}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: counted}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: counted}}]
  retry:
    numRetries: 3
    retryOn: {{httpStatusCodes: [500], triggers: [retriable-status-codes]}}
    perRetry: {{backOff: {{baseInterval: 1ms, maxInterval: 2ms}}}}
  healthCheck: {{passive: {{consecutive5XxErrors: 0}}}}
{"".join(backends)}{_aws()}"""
    folder = tmp_path_factory.mktemp("gw")
    process = GatewayProcess(config, folder, args=["--access-log", str(folder / "access.log")])
    process.access_log = folder / "access.log"  # type: ignore[attr-defined]
    yield process
    assert process.stop() == 0


def _client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)


def _chat(gateway: GatewayProcess, model: str, **body: object) -> httpx.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi there"}], **body}
    return httpx.post(gateway.url + "/v1/chat/completions", json=payload, timeout=10)


def test_refused_connection_falls_back(gateway: GatewayProcess, good: FakeProviderThread) -> None:
    raw = _client(gateway).chat.completions.with_raw_response.create(
        model="refused", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().choices[0].message.content == "Echo: hello"
    assert raw.headers["x-sluicegate-attempts"] == "2"
    assert raw.headers["x-sluicegate-backend"] == "default/good-0"


def test_azure_503_falls_back_to_bedrock(
    gateway: GatewayProcess, good: FakeProviderThread, bad: FakeProviderThread
) -> None:
    bad.reset()
    good.reset()
    raw = _client(gateway).chat.completions.with_raw_response.create(
        model="azure-bedrock", messages=[{"role": "user", "content": "cross schema"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "Echo: cross schema"
    assert reply.object == "chat.completion"
    assert raw.headers["x-sluicegate-backend"] == "default/bedrock"
    assert "/openai/deployments/" in bad.requests[-1].path  # translated for Azure first
    assert bad.requests[-1].headers["api-key"] == "az-key"
    assert good.requests[-1].path.endswith("/converse")  # then again for Bedrock, SigV4-signed
    assert good.requests[-1].headers["authorization"].startswith("AWS4-HMAC-SHA256")
    stream = _client(gateway).chat.completions.create(
        model="azure-bedrock", messages=[{"role": "user", "content": "cross stream"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: cross stream"


def test_retry_after_rests_the_backend(gateway: GatewayProcess, limited: ThreadingHTTPServer) -> None:
    first = _chat(gateway, "rest")
    assert first.status_code == 200 and first.headers["x-sluicegate-attempts"] == "2"
    hits = _Limited.hits
    assert hits >= 1
    for _ in range(3):
        again = _chat(gateway, "rest")
        assert again.status_code == 200
        assert again.headers["x-sluicegate-attempts"] == "1"
        assert again.headers["x-sluicegate-backend"] == "default/good-1"
    assert _Limited.hits == hits  # resting: skipped for the Retry-After period


def test_hang_before_first_byte_times_out_and_falls_back(gateway: GatewayProcess) -> None:
    response = _chat(gateway, "hang")
    assert response.status_code == 200
    assert response.headers["x-sluicegate-attempts"] == "2"
    assert response.headers["x-sluicegate-backend"] == "default/good-2"


def test_midstream_break_ends_with_an_error_event(gateway: GatewayProcess, good: FakeProviderThread) -> None:
    good.reset()
    stream = _client(gateway).chat.completions.create(
        model="midstream", messages=[{"role": "user", "content": "one two three four five"}], stream=True
    )
    pieces = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            pieces.append(chunk)
    assert pieces  # the stream had started: no fallback after bytes went out
    assert "broke off" in caught.value.message
    assert not good.requests
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": "midstream", "messages": [{"role": "user", "content": "a b c d e"}], "stream": True},
        timeout=10,
    ) as response:
        body = response.read()  # a clean chunked end: httpx raises on a truncated body
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1].startswith(b'data: {"error":')


def test_midstream_break_in_anthropic_format(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(
            model="midstream", max_tokens=50, messages=[{"role": "user", "content": "one two three four"}]
        ) as stream:
            for _ in stream:
                pass
    assert "broke off" in str(caught.value)


def test_400_is_never_retried(gateway: GatewayProcess, good: FakeProviderThread) -> None:
    good.reset()
    response = _chat(gateway, "bad-request")
    assert response.status_code == 400
    assert response.headers["x-sluicegate-attempts"] == "1"
    assert not good.requests


def test_retries_never_exceed_the_policy(gateway: GatewayProcess, bad: FakeProviderThread) -> None:
    bad.reset()
    response = _chat(gateway, "counted")
    assert response.status_code == 500
    assert response.headers["x-sluicegate-attempts"] == "4"  # numRetries: 3
    assert len(bad.requests) == 4


def test_metrics_count_attempts(gateway: GatewayProcess) -> None:
    _chat(gateway, "refused")
    text = httpx.get(gateway.admin_url + "/metrics").text
    assert 'sluicegate_upstream_attempts_total{backend="default/dead",outcome="connect-failure"}' in text
    assert 'sluicegate_upstream_failovers_total{backend="default/dead",to="default/good-0"}' in text
    assert 'sluicegate_upstream_attempts_total{backend="default/bad-1",outcome="broken"}' in text


def test_envoy_provider_fallback_example(good: FakeProviderThread, tmp_path: Path) -> None:
    """examples/provider_fallback: the primary speaks plain HTTP to a TLS client; fallback.yaml unchanged."""
    base = f"""
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: provider-fallback, namespace: default}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: us.meta.llama3-2-1b-instruct-v1:0}}]}}]
      backendRefs:
        - {{name: provider-fallback-always-failing-upstream, priority: 0}}
        - {{name: provider-fallback-aws, priority: 1}}
{backend_yaml("provider-fallback-always-failing-upstream", good.port)}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {{name: always-failing-tls}}
spec:
  targetRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: provider-fallback-always-failing-upstream-backend
  validation: {{wellKnownCACertificates: System, hostname: failing.example}}
{backend_yaml("provider-fallback-aws", good.port, schema="AWSBedrock")}
{_aws().replace("name: bedrock", "name: provider-fallback-aws")}
---
{FALLBACK_FIXTURE.read_text()}"""
    process = GatewayProcess(base, tmp_path)
    try:
        good.reset()
        raw = httpx.post(
            process.url + "/v1/chat/completions",
            json={
                "model": "us.meta.llama3-2-1b-instruct-v1:0",
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=10,
        )
        assert raw.status_code == 200, raw.text
        assert raw.json()["choices"][0]["message"]["content"] == "Echo: hi"
        assert raw.headers["x-sluicegate-backend"] == "default/provider-fallback-aws"
        assert [r.path for r in good.requests] == ["/model/us.meta.llama3-2-1b-instruct-v1:0/converse"]
    finally:
        assert process.stop() == 0


def _eventually(condition: Callable[[], object], seconds: float = 15.0) -> None:
    """Poll until condition() is truthy, at most `seconds` (never a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_access_log_lists_the_attempts(gateway: GatewayProcess) -> None:
    response = _chat(gateway, "refused", user="access-log-attempts")
    assert response.status_code == 200
    path: Path = gateway.access_log  # type: ignore[attr-defined]
    found: list[dict] = []

    def logged() -> bool:
        lines = path.read_text().splitlines() if path.exists() else []
        found[:] = [r for r in map(json.loads, lines) if r.get("gen_ai.original.model") == "refused"]
        return bool(found)

    _eventually(logged)
    assert found[-1]["upstream_attempts"] == ["default/dead:connect-failure", "default/good-0:ok"]
    assert found[-1]["attempts"] == 2


class _Flaky(BaseHTTPRequestHandler):
    """An OpenAI-ish backend with a health endpoint; `up` switches both between 200 and 503."""

    protocol_version = "HTTP/1.1"
    up = True
    chats = 0

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        up = type(self).up
        self._answer(200 if up else 503, b'{"status": "ok"}' if up else b'{"status": "down"}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).chats += 1
        if not type(self).up:
            self._answer(503, b'{"error": {"message": "down", "type": "server_error"}}')
            return
        reply = {
            "id": "chatcmpl-flaky",
            "object": "chat.completion",
            "created": 1,
            "model": "hc",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "primary"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self._answer(200, json.dumps(reply).encode())

    def log_message(self, *args: object) -> None:
        pass


def test_active_health_check_moves_traffic_and_back(good: FakeProviderThread, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = f"""
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: checked}}
spec:
  rules:{_rule("hc", "hc-primary", "hc-fallback", {})}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: checked}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: checked}}]
  healthCheck:
    passive: {{consecutive5XxErrors: 0}}  # only the active check takes the primary out
    active:
      type: HTTP
      interval: 100ms
      timeout: 1s
      unhealthyThreshold: 2
      healthyThreshold: 1
      # the fake provider (the fallback) answers 404 on /healthz: that counts as healthy here
      http: {{path: /healthz, expectedStatuses: [200, 404]}}
{backend_yaml("hc-primary", server.server_address[1])}{backend_yaml("hc-fallback", good.port)}"""
    process = GatewayProcess(config, tmp_path)
    primary = 'sluicegate_upstream_healthy{backend="default/hc-primary"}'

    def gauge(value: str) -> Callable[[], bool]:
        return lambda: f"{primary} {value}" in httpx.get(process.admin_url + "/metrics").text

    try:
        _Flaky.up = True
        _eventually(gauge("1.0"))
        assert (
            'sluicegate_upstream_healthy{backend="default/hc-fallback"} 1.0'
            in httpx.get(process.admin_url + "/metrics").text
        )
        served = _chat(process, "hc")
        assert served.status_code == 200 and served.headers["x-sluicegate-backend"] == "default/hc-primary"

        _Flaky.up = False
        _eventually(gauge("0.0"))
        chats = _Flaky.chats
        for _ in range(3):
            response = _chat(process, "hc")
            assert response.status_code == 200
            assert response.headers["x-sluicegate-attempts"] == "1"  # no failed attempt on the primary first
            assert response.headers["x-sluicegate-backend"] == "default/hc-fallback"
        assert _Flaky.chats == chats

        _Flaky.up = True
        _eventually(gauge("1.0"))
        back = _chat(process, "hc")
        assert back.headers["x-sluicegate-attempts"] == "1"
        assert back.headers["x-sluicegate-backend"] == "default/hc-primary"
    finally:
        assert process.stop() == 0
        server.shutdown()
