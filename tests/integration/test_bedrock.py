"""The openai and anthropic SDKs through a gateway subprocess to AWSBedrock and AWSAnthropic backends.

Every upstream request is SigV4-signed by the gateway and verified by the fake (403 on mismatch); the
fake answers `x-fake-sigv4: valid`, which the gateway passes back to the client.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from harness import GatewayProcess, backend_yaml
from sluicegate.testing import FakeProviderThread
from sluicegate.testing.fake_bedrock import FAKE_ACCESS_KEY, FAKE_SECRET_KEY

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"
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
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: converse-claude}}]}}]
      backendRefs: [{{name: bedrock, modelNameOverride: "{claude}"}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: amazon.nova-pro-v1:0}}]}}]
      backendRefs: [{{name: bedrock}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: invoke-claude}}]}}]
      backendRefs: [{{name: awsanthropic, modelNameOverride: "{claude}"}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: titan}}]}}]
      backendRefs: [{{name: bedrock, modelNameOverride: "{titan}"}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: unsigned}}]}}]
      backendRefs: [{{name: unsigned, modelNameOverride: "{claude}"}}]
{bedrock}
{awsanthropic}
{unsigned}
---
apiVersion: v1
kind: Secret
metadata: {{name: aws-creds}}
type: Opaque
stringData:
  credentials: |
    [default]
    aws_access_key_id = {access_key}
    aws_secret_access_key = {secret_key}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: aws-policy}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}}
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: awsanthropic}}
  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    credentialsFile:
      secretRef: {{name: aws-creds}}
"""
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLAUDE_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
OPENAI_MODELS = ("converse-claude", "invoke-claude")


@pytest.fixture(scope="module")
def gateway(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = CONFIG.format(
        claude=CLAUDE,
        titan=TITAN,
        access_key=FAKE_ACCESS_KEY,
        secret_key=FAKE_SECRET_KEY,
        bedrock=backend_yaml("bedrock", fake.port, schema="AWSBedrock"),
        awsanthropic=backend_yaml("awsanthropic", fake.port, schema="AWSAnthropic"),
        unsigned=backend_yaml("unsigned", fake.port, schema="AWSBedrock"),
    )
    process = GatewayProcess(config, tmp_path_factory.mktemp("gw"))
    yield process
    assert process.stop() == 0
    assert FAKE_SECRET_KEY not in process.output()


def _openai(gateway: GatewayProcess, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, default_headers=headers or None
    )


def _anthropic(gateway: GatewayProcess, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway.url, api_key="client-key", max_retries=0, default_headers=headers or None
    )


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_unary(gateway: GatewayProcess, fake: FakeProviderThread, model: str) -> None:
    fake.reset()
    raw = _openai(gateway).chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello bedrock"}],
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "Echo: hello bedrock"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 4  # system and user words
    assert raw.headers["x-fake-sigv4"] == "valid"
    upstream = fake.requests[-1]
    operation = "converse" if model == "converse-claude" else "invoke"
    assert upstream.path == f"/model/{CLAUDE}/{operation}"
    assert "client-key" not in str(upstream.headers)


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_stream_with_usage(gateway: GatewayProcess, model: str) -> None:
    stream = _openai(gateway, **{"x-fake-chunks": "3"}).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3 and chunks[-1].usage.prompt_tokens == 3


def test_openai_nova_without_override(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    reply = _openai(gateway).chat.completions.create(
        model="amazon.nova-pro-v1:0", messages=[{"role": "user", "content": "hi nova"}], max_tokens=20
    )
    assert reply.choices[0].message.content == "Echo: hi nova" and reply.model == "amazon.nova-pro-v1:0"
    assert fake.requests[-1].json()["inferenceConfig"] == {"maxTokens": 20}


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_streamed_tool_call_then_second_turn(gateway: GatewayProcess, model: str) -> None:
    client = _openai(gateway, **{"x-fake-scenario": "tool"})
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in Paris?"}]
    chunks = list(
        client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], stream=True)
    )
    calls: dict[int, dict[str, str]] = {}
    pieces = 0
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.id or ""
            entry["name"] += (call.function.name or "") if call.function else ""
            entry["arguments"] += (call.function.arguments or "") if call.function else ""
            pieces += bool(call.function and call.function.arguments)
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert pieces > 1  # delivered incrementally
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 21 C"})
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "Tool said: sunny, 21 C"


def test_openai_parallel_tools_unary(gateway: GatewayProcess) -> None:
    reply = _openai(gateway, **{"x-fake-scenario": "parallel-tools"}).chat.completions.create(
        model="converse-claude", messages=[{"role": "user", "content": "two"}], tools=[WEATHER_TOOL]
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Paris 2"}]
    assert reply.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_thinking_round_trip(gateway: GatewayProcess, model: str) -> None:
    client = _openai(gateway, **{"x-fake-scenario": "thinking"})
    messages: list[dict[str, Any]] = [{"role": "user", "content": "think first"}]
    first = client.chat.completions.create(model=model, messages=messages, reasoning_effort="low")
    extra = first.choices[0].message.model_extra or {}
    assert extra["reasoning_content"] and extra["thinking_blocks"][0]["signature"]
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content, **extra},
        {"role": "user", "content": "and again"},
    ]
    # the fake rejects a thinking block whose signature does not match its text
    second = client.chat.completions.create(model=model, messages=messages, reasoning_effort="low")
    assert second.choices[0].message.content == "Echo: and again"
    chunks = list(client.chat.completions.create(model=model, messages=messages[:1], stream=True))
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks if c.choices
    )
    blocks = [
        b
        for c in chunks
        if c.choices
        for b in (c.choices[0].delta.model_extra or {}).get("thinking_blocks", [])
    ]
    assert reasoning == extra["reasoning_content"]
    assert blocks == extra["thinking_blocks"]


def test_openai_cached_usage(gateway: GatewayProcess) -> None:
    reply = _openai(gateway, **{"x-fake-scenario": "cached"}).chat.completions.create(
        model="converse-claude", messages=[{"role": "user", "content": "cached prompt"}]
    )
    assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 128
    assert reply.usage.prompt_tokens == 2 + 128 + 64


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_openai_errors_translated(gateway: GatewayProcess, model: str) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        _openai(gateway, **{"x-fake-status": "429"}).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["message"] == "fake error: status 429"  # type: ignore[index]
    with pytest.raises(openai.APIError) as stream_info:
        list(
            _openai(gateway, **{"x-fake-scenario": "error"}).chat.completions.create(
                model=model, messages=[{"role": "user", "content": "a b c"}], stream=True
            )
        )
    assert stream_info.value.message


def test_openai_image_url_is_422(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        _openai(gateway).chat.completions.create(
            model="converse-claude",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
            ],
        )
    assert "base64" in info.value.message


def test_openai_data_uri_image(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    pixel = base64.b64encode(b"\x89PNG fake").decode()
    _openai(gateway).chat.completions.create(
        model="converse-claude",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
                ],
            }
        ],
    )
    content = fake.requests[-1].json()["messages"][0]["content"]
    assert content[1] == {"image": {"format": "png", "source": {"bytes": pixel}}}


def test_embeddings_titan(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    client = _openai(gateway)
    floats = client.embeddings.create(model="titan", input="a b c", dimensions=256, encoding_format="float")
    assert len(floats.data[0].embedding) == 256 and floats.usage.prompt_tokens == 3
    assert fake.requests[-1].json() == {"inputText": "a b c", "dimensions": 256}
    default = client.embeddings.create(model="titan", input=["a b c"], dimensions=256)  # SDK asks for base64
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding)
    raw = client.embeddings.with_raw_response.create(
        model="titan", input="a b c", dimensions=256, encoding_format="base64"
    )
    packed = base64.b64decode(json.loads(raw.content)["data"][0]["embedding"])
    assert list(struct.unpack("<256f", packed)) == pytest.approx(floats.data[0].embedding)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.embeddings.create(model="titan", input=["one", "two"])
    assert "one text per request" in info.value.message


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_anthropic_unary_and_stream(gateway: GatewayProcess, model: str) -> None:
    client = _anthropic(gateway)
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "hello claude"}]
    )
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "Echo: hello claude"
    assert message.stop_reason == "end_turn" and message.usage.input_tokens == 2
    assert raw.headers["x-fake-sigv4"] == "valid"
    with client.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "stream me please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: stream me please"
    assert final.usage.input_tokens == 3 and final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_anthropic_stream_tool_use_then_result(gateway: GatewayProcess, model: str) -> None:
    client = _anthropic(gateway, **{"x-fake-scenario": "tool"})
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather?"}]
    with client.messages.stream(
        model=model, max_tokens=100, messages=messages, tools=[CLAUDE_TOOL]
    ) as stream:
        partials = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    use = final.content[0]
    assert use.type == "tool_use" and use.input == {"city": "Paris"}
    assert len([p for p in partials if p]) > 1 and final.stop_reason == "tool_use"
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in final.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rain"}]},
    ]
    second = client.messages.create(model=model, max_tokens=100, messages=messages, tools=[CLAUDE_TOOL])
    assert second.content[0].text == "Tool said: rain"  # type: ignore[union-attr]


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_anthropic_thinking_round_trip(gateway: GatewayProcess, model: str) -> None:
    client = _anthropic(gateway, **{"x-fake-scenario": "thinking"})
    messages: list[dict[str, Any]] = [{"role": "user", "content": "think"}]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with client.messages.stream(model=model, max_tokens=2048, messages=messages, thinking=thinking) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "thinking" and block.signature
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in final.content]},
        {"role": "user", "content": "more"},
    ]
    again = client.messages.create(model=model, max_tokens=2048, messages=messages, thinking=thinking)
    assert again.content[-1].text == "Echo: more"  # type: ignore[union-attr]


def test_anthropic_cached_usage_and_missing_max_tokens(
    gateway: GatewayProcess, fake: FakeProviderThread
) -> None:
    client = _anthropic(gateway, **{"x-fake-scenario": "cached"})
    message = client.messages.create(
        model="converse-claude",
        max_tokens=100,
        system=[{"type": "text", "text": "long system", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "q"}],
    )
    assert message.usage.cache_read_input_tokens == 128 and message.usage.cache_creation_input_tokens == 64
    assert fake.requests[-1].json()["system"] == [
        {"text": "long system"},
        {"cachePoint": {"type": "default"}},
    ]
    # a Messages request without max_tokens (raw HTTP: the SDK insists on it) still works on InvokeModel
    raw = client.post(
        "/v1/messages",
        body={"model": "invoke-claude", "messages": [{"role": "user", "content": "x"}]},
        cast_to=object,
    )
    assert raw["content"][0]["text"] == "Echo: x"  # type: ignore[index]
    assert fake.requests[-1].json()["max_tokens"] == 4096


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_anthropic_errors_translated(gateway: GatewayProcess, model: str) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        _anthropic(gateway, **{"x-fake-status": "429"}).messages.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["error"]["message"] == "fake error: status 429"  # type: ignore[index]
    with pytest.raises(anthropic.APIStatusError):
        with _anthropic(gateway, **{"x-fake-scenario": "error"}).messages.stream(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "a b c"}]
        ) as stream:
            list(stream)


def test_unsigned_backend_reaches_the_fake_unsigned(gateway: GatewayProcess) -> None:
    raw = _openai(gateway).chat.completions.with_raw_response.create(
        model="unsigned", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-fake-sigv4"] == "absent"


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_mid_stream_drop_reaches_the_client_as_a_broken_stream(gateway: GatewayProcess, model: str) -> None:
    stream = _openai(gateway, **{"x-fake-drop-after": "3"}).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "one two three four five"}], stream=True
    )
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        list(stream)


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_anthropic_count_tokens(gateway: GatewayProcess, fake: FakeProviderThread, model: str) -> None:
    """count_tokens to both schemas: Bedrock's CountTokens, Converse input or InvokeModel input."""
    fake.reset()
    counted = _anthropic(gateway).messages.count_tokens(
        model=model,
        system="Be brief.",
        messages=[{"role": "user", "content": "count these four words"}],
        tools=[CLAUDE_TOOL],  # type: ignore[list-item]
    )
    assert counted.input_tokens == 2 + 4 + 1 + 5  # system, messages, tool name, tool description
    upstream = fake.requests[-1]
    assert upstream.path == f"/model/{CLAUDE}/count-tokens"
    assert upstream.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")
    counted_input = upstream.json()["input"]
    if model == "converse-claude":
        assert set(counted_input["converse"]) == {"messages", "system", "toolConfig"}
    else:
        invoke = json.loads(base64.b64decode(counted_input["invokeModel"]["body"]))
        assert invoke["anthropic_version"] == "bedrock-2023-05-31" and "model" not in invoke
    with pytest.raises(anthropic.RateLimitError) as info:
        _anthropic(gateway, **{"x-fake-status": "429"}).messages.count_tokens(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["error"]["message"] == "fake error: status 429"  # type: ignore[index]
    assert info.value.body["type"] == "error"  # type: ignore[index]
