"""Rate limits through real gateway processes: token budgets, CEL costs, quotas, Redis shared by replicas."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from harness import GatewayProcess, backend_yaml
from ratelimit.redis_server import RedisServer
from sluicegate.testing import FakeProviderThread

EXAMPLE = Path(__file__).parents[1] / "config/fixtures/envoy-ai-gateway/token_ratelimit/token_ratelimit.yaml"
EXAMPLE_HOST = (
    "hostname: envoy-ai-gateway-token-ratelimit-tesetupstream.default.svc.cluster.local\n        port: 80"
)
TEXT = "Count these words slowly and carefully please, then answer with the very same words back."  # 90 bytes


def avoid_window_edge(window: int, margin: float = 20.0) -> None:
    """Sleep past a window boundary that is less than `margin` seconds away, so a test stays in one window."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.05)


def chat(
    url: str, model: str, headers: dict[str, str], stream: bool = False, **body: object
) -> httpx.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": TEXT}], "stream": stream, **body}
    return httpx.post(url + "/v1/chat/completions", json=payload, headers=headers, timeout=30)


def ratelimit_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit") or k == "retry-after"}


# --- the Envoy AI Gateway example, unchanged but for its backend address -------------------------------


@pytest.fixture(scope="module")
def example(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    text = EXAMPLE.read_text()
    assert EXAMPLE_HOST in text
    config = text.replace(EXAMPLE_HOST, f"hostname: 127.0.0.1\n        port: {fake.port}")
    process = GatewayProcess(config, tmp_path_factory.mktemp("example"))
    yield process
    assert process.stop() == 0


def test_envoy_example_gives_each_tenant_its_budget(example: GatewayProcess) -> None:
    avoid_window_edge(3600)
    tenant, other = f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"
    # rule 0: 10 input tokens per hour per x-tenant-id; the request that crosses the budget succeeds
    first = chat(example.url, "rate-limit-funky-model", {"x-tenant-id": tenant, "x-fake-prompt-tokens": "6"})
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit"] == "10, 10;w=3600"
    assert first.headers["x-ratelimit-remaining"] == "10"
    second = chat(example.url, "rate-limit-funky-model", {"x-tenant-id": tenant, "x-fake-prompt-tokens": "6"})
    assert second.status_code == 200 and second.headers["x-ratelimit-remaining"] == "4"  # it goes down
    third = chat(example.url, "rate-limit-funky-model", {"x-tenant-id": tenant, "x-fake-prompt-tokens": "1"})
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert third.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(third.headers["retry-after"]) <= 3600
    assert third.headers["retry-after"] == third.headers["x-ratelimit-reset"]
    # a distinct x-tenant-id has its own budget
    assert chat(example.url, "rate-limit-funky-model", {"x-tenant-id": other}).status_code == 200
    # no x-tenant-id: the Distinct selector does not apply, so no rule does
    assert "x-ratelimit-limit" not in chat(example.url, "rate-limit-funky-model", {}).headers


def test_envoy_example_cel_rule(example: GatewayProcess) -> None:
    avoid_window_edge(3600)
    tenant = f"t-{uuid.uuid4().hex}"
    # "input_tokens == uint(3) ? 100000000 : 0" against a budget of 1000 per hour
    headers = {"x-tenant-id": tenant, "x-fake-prompt-tokens": "3"}
    assert chat(example.url, "rate-limit-funky-model", headers).status_code == 200
    refused = chat(
        example.url, "rate-limit-funky-model", {"x-tenant-id": tenant, "x-fake-prompt-tokens": "1"}
    )
    assert refused.status_code == 429 and refused.headers["x-ratelimit-limit"] == "1000, 1000;w=3600"


# --- one process, counters in memory ----------------------------------------------------------------------

MEMORY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: sluicegate
  listeners: [{{name: http, protocol: HTTP, port: 1975}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: tokens}}
spec:
  parentRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  llmRequestCosts:
    - {{metadataKey: weighted, type: CEL, cel: "input_tokens / 1.0 + output_tokens * 3.0"}}
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: tokens}}]}}]
      backendRefs: [{{name: fake}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: plain}}
spec:
  parentRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: count}}]}}]
      backendRefs: [{{name: fake}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: quota}}]}}]
      backendRefs: [{{name: quota, modelNameOverride: quota-model}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: tokens}}
spec:
  targetRefs: [{{name: tokens, kind: AIGatewayRoute, group: aigateway.envoyproxy.io}}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{{headers: [{{name: x-tenant-id, type: Distinct}}]}}]
          limit: {{requests: 100, unit: Hour}}
          cost:
            request: {{from: Number, number: 0}}
            response: {{from: Metadata, metadata: {{namespace: io.envoy.ai_gateway, key: weighted}}}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: count}}
spec:
  targetRefs: [{{name: plain, kind: HTTPRoute, group: gateway.networking.k8s.io}}]
  rateLimit:
    type: Local
    local:
      rules:
        - clientSelectors:
            - headers:
                - {{name: x-tenant-id, type: Distinct}}
                - {{name: x-ai-eg-model, type: Exact, value: count}}
          limit: {{requests: 2, unit: Second}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {{name: quota}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: quota}}]
  perModelQuotas:
    - modelName: quota-model
      quota:
        defaultBucket: {{limit: 20, duration: 1h}}
        bucketRules:
          - clientSelectors: [{{headers: [{{name: x-tier, type: Exact, value: premium}}]}}]
            quota: {{limit: 1000, duration: 1h}}
{fake}
{quota}
"""


@pytest.fixture(scope="module")
def memory(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = MEMORY.format(fake=backend_yaml("fake", fake.port), quota=backend_yaml("quota", fake.port))
    process = GatewayProcess(config, tmp_path_factory.mktemp("memory"))
    yield process
    assert process.stop() == 0


def test_cel_cost_budget_with_the_openai_sdk(memory: GatewayProcess) -> None:
    avoid_window_edge(3600)
    tenant = f"t-{uuid.uuid4().hex}"
    client = openai.OpenAI(base_url=memory.url + "/v1", api_key="k", max_retries=0)
    headers = {"x-tenant-id": tenant, "x-fake-prompt-tokens": "10", "x-fake-completion-tokens": "7"}
    remaining = []
    for _ in range(3):  # 10 / 1.0 + 7 * 3.0 = 31 each: 0, 31, 62 spent before each of them
        raw = client.chat.completions.with_raw_response.create(
            model="tokens", messages=[{"role": "user", "content": "x"}], extra_headers=headers
        )
        remaining.append(int(raw.headers["x-ratelimit-remaining"]))
    assert remaining == [100, 69, 38]
    client.chat.completions.create(
        model="tokens", messages=[{"role": "user", "content": "x"}], extra_headers=headers
    )
    with pytest.raises(openai.RateLimitError) as caught:  # 124 spent
        client.chat.completions.create(
            model="tokens", messages=[{"role": "user", "content": "x"}], extra_headers=headers
        )
    assert caught.value.response.headers["retry-after"]
    assert caught.value.body["code"] == "rate_limit_exceeded"


def test_stream_usage_is_counted_but_not_shown(memory: GatewayProcess, fake: FakeProviderThread) -> None:
    avoid_window_edge(3600)
    tenant = f"t-{uuid.uuid4().hex}"
    client = openai.OpenAI(base_url=memory.url + "/v1", api_key="k", max_retries=0)
    headers = {"x-tenant-id": tenant, "x-fake-prompt-tokens": "4", "x-fake-completion-tokens": "12"}
    stream = client.chat.completions.create(
        model="tokens",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        extra_headers=headers,
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: one two three"
    assert all(c.choices and c.usage is None for c in chunks)  # exactly the stream the client asked for
    assert "usage" not in str([c.model_dump(exclude_none=True) for c in chunks])
    assert fake.requests[-1].json()["stream_options"] == {"include_usage": True}
    # the stream cost 4 + 12 * 3 = 40
    after = chat(memory.url, "tokens", headers)
    assert after.headers["x-ratelimit-remaining"] == "60"
    # a client that asks for usage gets it, and pays the same way
    with_usage = client.chat.completions.create(
        model="tokens",
        messages=[{"role": "user", "content": "a"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    last = list(with_usage)[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 12


def test_request_count_windows_reset(memory: GatewayProcess) -> None:
    tenant = f"t-{uuid.uuid4().hex}"
    headers = {"x-tenant-id": tenant}
    with httpx.Client(base_url=memory.url, timeout=10) as client:
        for _ in range(5):  # three requests inside one second; retried if a second boundary falls between
            avoid_window_edge(1, margin=0.6)
            codes = [client.post("/v1/chat/completions", json=_body("count"), headers=headers).status_code]
            codes += [client.post("/v1/chat/completions", json=_body("count"), headers=headers).status_code]
            third = client.post("/v1/chat/completions", json=_body("count"), headers=headers)
            if codes == [200, 200] and third.status_code == 429:
                break
        else:
            pytest.fail(
                f"never saw two admitted then one refused in one second: {codes}, {third.status_code}"
            )
        assert third.headers["retry-after"] == "1"
        time.sleep(1 - time.time() % 1 + 0.05)  # the next window
        assert client.post("/v1/chat/completions", json=_body("count"), headers=headers).status_code == 200


def _body(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def test_quota_policy_buckets(memory: GatewayProcess, fake: FakeProviderThread) -> None:
    avoid_window_edge(3600)
    # the default bucket: 20 total tokens per hour for quota-model on the backend
    spent = {"x-fake-prompt-tokens": "15", "x-fake-completion-tokens": "10"}
    assert chat(memory.url, "quota", spent).status_code == 200
    assert fake.requests[-1].json()["model"] == "quota-model"
    refused = chat(memory.url, "quota", {})
    assert refused.status_code == 429
    # a premium request matches a second bucket with room: one bucket with room is enough (Shared mode)
    premium = chat(memory.url, "quota", {"x-tier": "premium"})
    assert premium.status_code == 200 and premium.headers["x-ratelimit-limit"] == "1000, 1000;w=3600"


# --- three replicas sharing one Redis ---------------------------------------------------------------------

SHARED = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: sluicegate
  listeners: [{{name: http, protocol: HTTP, port: 1975}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  llmRequestCosts: [{{metadataKey: input, type: InputToken}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: check}}]}}]
      backendRefs: [{{name: fake}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: reserve}}]}}]
      backendRefs: [{{name: fake}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: count}}]}}]
      backendRefs: [{{name: fake}}]
{policies}
{fake}
"""
POLICY = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: {model}
  annotations: {{"sluicegate.io/ratelimit-mode": {mode}}}
spec:
  targetRefs: [{{name: route, kind: AIGatewayRoute, group: aigateway.envoyproxy.io}}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors:
            - headers:
                - {{name: x-tenant-id, type: Distinct}}
                - {{name: x-ai-eg-model, type: Exact, value: {model}}}
          limit: {{requests: {limit}, unit: Hour}}
          cost:
            request: {{from: Number, number: {request}}}
            response: {response}
"""
TOKENS = "{from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: input}}"
LIMIT = 400


def shared_config(fake: FakeProviderThread) -> str:
    policies = POLICY.format(model="check", mode="check", limit=LIMIT, request=0, response=TOKENS)
    policies += POLICY.format(model="reserve", mode="reserve", limit=LIMIT, request=0, response=TOKENS)
    policies += POLICY.format(
        model="count", mode="check", limit=5, request=1, response="{from: Number, number: 0}"
    )
    return SHARED.format(policies=policies, fake=backend_yaml("fake", fake.port))


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def replicas(
    redis: RedisServer, fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[GatewayProcess]]:
    config, folder = shared_config(fake), tmp_path_factory.mktemp("replicas")
    modes = ["open", "open", "closed"]
    gateways = [
        GatewayProcess(config, folder, ["--redis-url", redis.url, "--ratelimit-failure-mode", mode])
        for mode in modes
    ]
    yield gateways
    for gateway in gateways:
        assert gateway.stop() == 0


async def _load(urls: list[str], model: str, clients: int, budget: int) -> tuple[list[int], int]:
    """Many clients, round robin over the replicas, until each sees three refusals in a row."""
    tenant = f"t-{uuid.uuid4().hex}"
    admitted: list[int] = []
    refused = 0
    rng = random.Random(5)

    async def client(i: int) -> None:
        nonlocal refused
        streak, n = 0, 0
        async with httpx.AsyncClient(timeout=30) as http:
            while streak < 3 and n < budget:
                cost = rng.randint(5, 25)
                url = urls[(i + n) % len(urls)]
                n += 1
                headers = {"x-tenant-id": tenant, "x-fake-prompt-tokens": str(cost), "x-fake-delay-ms": "15"}
                response = await http.post(
                    url + "/v1/chat/completions", json=_chat_body(model), headers=headers
                )
                if response.status_code == 200:
                    admitted.append(cost)
                    streak = 0
                else:
                    assert response.status_code == 429, response.text
                    refused += 1
                    streak += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return admitted, refused


def _chat_body(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": TEXT}]}


def test_check_then_charge_overshoots_by_at_most_one_request(replicas: list[GatewayProcess]) -> None:
    avoid_window_edge(3600, margin=60)
    admitted, refused = asyncio.run(_load([g.url for g in replicas], "check", clients=24, budget=40))
    assert refused >= 24
    assert LIMIT * 0.75 <= sum(admitted) <= LIMIT + max(admitted)  # and not 3 x LIMIT: the replicas share it


def test_reservation_never_overshoots(replicas: list[GatewayProcess]) -> None:
    avoid_window_edge(3600, margin=60)
    admitted, refused = asyncio.run(_load([g.url for g in replicas], "reserve", clients=24, budget=40))
    assert refused >= 24
    assert LIMIT * 0.75 <= sum(admitted) <= LIMIT


def test_workers_share_the_limit_through_redis(
    redis: RedisServer, fake: FakeProviderThread, tmp_path: Path, replicas: list[GatewayProcess]
) -> None:
    avoid_window_edge(3600)
    gateway = GatewayProcess(shared_config(fake), tmp_path, ["--workers", "2", "--redis-url", redis.url])
    try:
        tenant = {"x-tenant-id": f"t-{uuid.uuid4().hex}"}
        codes = []
        for i in range(8):  # a new connection each time: both workers and a replica answer
            url = gateway.url if i % 3 else replicas[0].url
            with httpx.Client(timeout=10) as client:
                codes.append(
                    client.post(url + "/v1/chat/completions", json=_body("count"), headers=tenant).status_code
                )
        assert codes == [200] * 5 + [429] * 3
    finally:
        assert gateway.stop() == 0


def test_workers_without_redis_refuse_to_start(fake: FakeProviderThread, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(shared_config(fake))
    src = str(Path(__file__).resolve().parents[2] / "src")
    result = subprocess.run(
        [sys.executable, "-m", "sluicegate", "run", "-c", str(path), "--workers", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "Global rate limits" in result.stderr and "--redis-url" in result.stderr


def test_redis_outage_fails_open_or_closed_and_recovers(
    redis: RedisServer, replicas: list[GatewayProcess]
) -> None:
    open_gateway, closed_gateway = replicas[0], replicas[2]
    tenant = {"x-tenant-id": f"t-{uuid.uuid4().hex}"}
    assert "x-ratelimit-remaining" in chat(open_gateway.url, "count", tenant).headers
    redis.stop()
    try:
        served = chat(open_gateway.url, "count", tenant)
        assert served.status_code == 200 and "x-ratelimit-remaining" not in served.headers
        refused = chat(closed_gateway.url, "count", tenant)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_unavailable"
        metrics = httpx.get(open_gateway.admin_url + "/metrics").text
        failures = re.search(
            r'sluicegate_ratelimit_store_errors_total\{operation="check",store="redis"\} (\S+)', metrics
        )
        assert failures is not None and float(failures.group(1)) >= 1
    finally:
        redis.start()
    deadline = time.monotonic() + 15
    while True:  # no restart needed: the gateways reconnect on their own
        back = chat(closed_gateway.url, "count", tenant)
        if back.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert back.status_code == 200 and back.headers["x-ratelimit-remaining"] == "4"  # Redis came back empty
    assert "x-ratelimit-remaining" in chat(open_gateway.url, "count", tenant).headers
