"""The official openai SDK through a gateway subprocess to the fake provider: the SDK judges our bytes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import openai
import orjson
import pytest

from harness import GatewayProcess, backend_yaml
from sluicegate.testing import FakeProviderThread

CONFIG = """
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
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: demo}}]}}]
      backendRefs: [{{name: fake}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: fake-embedding}}]}}]
      backendRefs: [{{name: fake}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-virtual}}]}}]
      backendRefs: [{{name: fake, modelNameOverride: fake-gpt}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: azure-model}}]}}]
      backendRefs: [{{name: azure, modelNameOverride: my-deployment}}]
{fake}
{azure}
"""


@pytest.fixture(scope="module")
def gateway(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = CONFIG.format(
        fake=backend_yaml("fake", fake.port, api_key="sk-upstream-secret"),
        azure=backend_yaml(
            "azure",
            fake.port,
            schema="AzureOpenAI",
            extra_schema=", version: 2024-10-21",
            api_key="azure-secret",
            key_type="AzureAPIKey",
        ),
    )
    process = GatewayProcess(config, tmp_path_factory.mktemp("gw"))
    yield process
    assert process.stop() == 0


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0)


def test_chat_unary(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    fake.reset()
    reply = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hello gateway"}]
    )
    assert reply.choices[0].message.content == "Echo: hello gateway"
    assert reply.model == "demo"
    assert reply.usage is not None and reply.usage.total_tokens == reply.usage.prompt_tokens + 3
    upstream = fake.requests[-1]
    assert upstream.path == "/v1/chat/completions"
    assert upstream.headers["authorization"] == "Bearer sk-upstream-secret"  # the client's key never leaves
    assert "client-key" not in str(upstream.headers)


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_chat_streaming_without_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "a b"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: a b"
    assert all(c.usage is None for c in chunks)


def test_completions_unary_and_stream(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="demo", prompt="say this")
    assert "say this" in reply.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="demo", prompt="say that", stream=True)
        if c.choices
    )
    assert "say that" in streamed


def test_embeddings_base64_and_float(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    default = client.embeddings.create(model="fake-embedding", input=["first", "second"])
    assert len(default.data) == 2 and len(default.data[0].embedding) > 0
    floats = client.embeddings.create(model="fake-embedding", input="first", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(default.data[0].embedding, rel=1e-6)
    assert fake.requests[-1].path == "/v1/embeddings"


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models]
    assert ids == ["demo", "fake-embedding", "gpt-virtual", "azure-model"]
    assert all(m.owned_by == "Envoy AI Gateway" for m in models)


def test_model_name_override(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    reply = client.chat.completions.create(model="gpt-virtual", messages=[{"role": "user", "content": "x"}])
    assert orjson.loads(fake.requests[-1].body)["model"] == "fake-gpt"
    assert reply.model == "fake-gpt"


def test_azure_backend_shape(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    reply = client.chat.completions.create(
        model="azure-model", messages=[{"role": "user", "content": "hi az"}]
    )
    assert reply.choices[0].message.content == "Echo: hi az"
    upstream = fake.requests[-1]
    assert upstream.path == "/openai/deployments/my-deployment/chat/completions"
    assert upstream.query_string == "api-version=2024-10-21"
    assert upstream.headers["api-key"] == "azure-secret"
    assert "authorization" not in upstream.headers
    stream = client.chat.completions.create(
        model="azure-model", messages=[{"role": "user", "content": "streamed az"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: streamed az"


def test_embeddings_to_azure(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    client.embeddings.create(model="azure-model", input="vector me")
    assert fake.requests[-1].path == "/openai/deployments/my-deployment/embeddings"


def test_async_client_unary_and_stream(gateway: GatewayProcess) -> None:
    async def main() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0) as client:
            unary, stream = await asyncio.gather(
                client.chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": "async one"}]
                ),
                client.chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": "async two"}], stream=True
                ),
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return unary.choices[0].message.content or "", text

    unary, streamed = asyncio.run(main())
    assert unary == "Echo: async one"
    assert streamed == "Echo: async two"


def test_concurrent_async_requests(gateway: GatewayProcess) -> None:
    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0) as client:
            replies = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="demo", messages=[{"role": "user", "content": f"n{i}"}]
                    )
                    for i in range(50)
                )
            )
            return [r.choices[0].message.content or "" for r in replies]

    assert asyncio.run(main()) == [f"Echo: n{i}" for i in range(50)]


def test_upstream_error_passes_through(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "x"}], extra_headers={"x-fake-status": "429"}
        )
    assert caught.value.status_code == 429
    assert isinstance(caught.value.body, dict) and caught.value.body.get("message")


def test_upstream_non_json_error_is_wrapped(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": "503", "x-fake-error-body": "upstream is melting"},
        )
    assert caught.value.status_code == 503
    assert caught.value.body["message"] == "upstream is melting"


def test_usage_overrides_reach_the_client(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={
            "x-fake-prompt-tokens": "11",
            "x-fake-completion-tokens": "7",
            "x-fake-cached-tokens": "3",
        },
    )
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (11, 7)


def test_embedding_base64_bytes_unchanged(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    import urllib.request

    body = orjson.dumps({"model": "fake-embedding", "input": "abc", "encoding_format": "base64"})
    request = urllib.request.Request(
        gateway.url + "/v1/embeddings", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        through = orjson.loads(response.read())
    direct_request = urllib.request.Request(
        fake.base_url + "/v1/embeddings", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(direct_request) as response:
        direct = orjson.loads(response.read())
    assert base64.b64decode(through["data"][0]["embedding"]) == base64.b64decode(
        direct["data"][0]["embedding"]
    )
