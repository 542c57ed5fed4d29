"""The openai and anthropic SDKs through a gateway subprocess to Anthropic, OpenAI and Azure backends."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest

from harness import GatewayProcess, backend_yaml
from sluicegate.core.errors import ROUTE_NOT_FOUND
from sluicegate.testing import FakeProviderThread, fake_anthropic
from sluicegate.translate.claude import DEFAULT_MAX_TOKENS

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
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: claude-fake}}]}}]
      backendRefs: [{{name: claude}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: claude-alias}}]}}]
      backendRefs: [{{name: claude, modelNameOverride: claude-real}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-fake}}]}}]
      backendRefs: [{{name: openai}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: azure-model}}]}}]
      backendRefs: [{{name: azure, modelNameOverride: my-deployment}}]
{claude}
{openai}
{azure}
"""
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["CET", "UTC"]}}},
    },
}
CLAUDE_WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": WEATHER["function"]["parameters"],
}
EXPECTED_ARGS = {"city": "Paris", "days": 1}  # what the fakes call get_weather with


@pytest.fixture(scope="module")
def gateway(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = CONFIG.format(
        claude=backend_yaml(
            "claude", fake.port, schema="Anthropic", api_key="sk-ant-upstream", key_type="AnthropicAPIKey"
        ),
        openai=backend_yaml("openai", fake.port, api_key="sk-openai-upstream"),
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
def oai(gateway: GatewayProcess, fake: FakeProviderThread) -> Iterator[openai.OpenAI]:
    fake.reset()
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(gateway: GatewayProcess, fake: FakeProviderThread) -> Iterator[anthropic.Anthropic]:
    fake.reset()
    with anthropic.Anthropic(
        base_url=gateway.url + "/anthropic", api_key="client-key", max_retries=0
    ) as client:
        yield client


def upstream_json(fake: FakeProviderThread) -> dict[str, Any]:
    return orjson.loads(fake.requests[-1].body)


def scenario(name: str) -> dict[str, str]:
    return {"x-fake-scenario": name}


# The openai SDK to the Anthropic backend


def test_openai_unary_to_anthropic(oai: openai.OpenAI, fake: FakeProviderThread) -> None:
    reply = oai.chat.completions.create(
        model="claude-fake",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello claude"}],
        temperature=0.5,
    )
    assert reply.choices[0].message.content == "Echo: hello claude"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "claude-fake" and reply.id.startswith("msg_fake")
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (4, 3, 7)
    upstream = fake.requests[-1]
    assert upstream.path == "/v1/messages"
    assert upstream.headers["x-api-key"] == "sk-ant-upstream"
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert "client-key" not in str(upstream.headers) and "authorization" not in upstream.headers
    body = upstream_json(fake)
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS  # the client sent none: the default, never a 400
    assert body["temperature"] == 0.5


def test_openai_max_tokens_and_override(oai: openai.OpenAI, fake: FakeProviderThread) -> None:
    reply = oai.chat.completions.create(
        model="claude-alias",
        messages=[{"role": "user", "content": "x"}],
        max_completion_tokens=77,
        stop="END",
    )
    body = upstream_json(fake)
    assert (body["model"], body["max_tokens"], body["stop_sequences"]) == ("claude-real", 77, ["END"])
    assert reply.model == "claude-real"


def test_openai_stream_to_anthropic_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="claude-fake",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].usage.prompt_tokens == 3


def test_openai_stream_without_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="claude-fake", messages=[{"role": "user", "content": "a"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks) and chunks[-1].choices


def reassemble(chunks: list[Any]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                entry["name"] += (call.function.name or "") if call.function else ""
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
    return calls


def test_openai_streamed_tool_call(oai: openai.OpenAI, fake: FakeProviderThread) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="claude-fake",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=[WEATHER],
            tool_choice="required",
            stream=True,
            extra_headers=scenario("tool"),
        )
    )
    (call,) = reassemble(chunks).values()
    assert call["name"] == "get_weather" and call["id"].startswith("toolu_fake")
    assert orjson.loads(call["arguments"]) == EXPECTED_ARGS
    pieces = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(pieces) > 2  # delivered incrementally
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    body = upstream_json(fake)
    assert body["tools"] == [CLAUDE_WEATHER] and body["tool_choice"] == {"type": "any"}


def test_openai_parallel_tool_calls_stream(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="claude-fake",
            messages=[{"role": "user", "content": "weather and time?"}],
            tools=[WEATHER, TIME],
            stream=True,
            extra_headers=scenario("parallel-tools"),
        )
    )
    calls = reassemble(chunks)
    assert [calls[0]["name"], calls[1]["name"]] == ["get_weather", "get_time"]
    assert orjson.loads(calls[1]["arguments"]) == {"zone": "CET"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "I will call two tools."


def test_openai_two_turn_tool_conversation(oai: openai.OpenAI, fake: FakeProviderThread) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = oai.chat.completions.create(
        model="claude-fake", messages=messages, tools=[WEATHER], extra_headers=scenario("tool")
    )
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls
    assert orjson.loads(call.function.arguments) == EXPECTED_ARGS
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    second = oai.chat.completions.create(
        model="claude-fake", messages=messages, tools=[WEATHER], extra_headers=scenario("tool")
    )
    assert second.choices[0].message.content == "Tool said: 18C and sunny"
    sent = upstream_json(fake)["messages"]
    assert sent[1]["content"][0] == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": EXPECTED_ARGS,
    }
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}]


def test_openai_thinking_round_trip(oai: openai.OpenAI, fake: FakeProviderThread) -> None:
    messages: list[Any] = [{"role": "user", "content": "think first"}]
    first = oai.chat.completions.create(
        model="claude-fake", messages=messages, reasoning_effort="low", extra_headers=scenario("thinking")
    )
    assert upstream_json(fake)["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    extra = first.choices[0].message.model_extra or {}
    assert extra["reasoning_content"] == fake_anthropic.THINKING_TEXT
    (block,) = extra["thinking_blocks"]
    assert block["signature"] == fake_anthropic.signature(fake_anthropic.THINKING_TEXT)
    stream = oai.chat.completions.create(
        model="claude-fake", messages=messages, stream=True, extra_headers=scenario("thinking")
    )
    chunks = list(stream)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    assert reasoning == fake_anthropic.THINKING_TEXT
    streamed_blocks = [
        b for c in chunks for b in (c.choices[0].delta.model_extra or {}).get("thinking_blocks") or ()
    ]
    assert streamed_blocks == [block]
    # The next turn carries the signed block back; the fake rejects a tampered or missing signature.
    messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "again"}]
    second = oai.chat.completions.create(
        model="claude-fake", messages=messages, extra_headers=scenario("thinking")
    )
    assert second.choices[0].message.content == "Echo: again"
    assert upstream_json(fake)["messages"][1]["content"][0] == block
    messages[1]["thinking_blocks"][0]["signature"] = "forged"
    with pytest.raises(openai.BadRequestError, match="signature"):
        oai.chat.completions.create(model="claude-fake", messages=messages)


def test_openai_cached_usage(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="claude-fake",
        messages=[{"role": "user", "content": "cached words"}],
        extra_headers=scenario("cached"),
    )
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens == 2 + fake_anthropic.CACHE_READ_TOKENS + fake_anthropic.CACHE_CREATION_TOKENS
    assert usage.prompt_tokens_details.cached_tokens == fake_anthropic.CACHE_READ_TOKENS
    assert (usage.prompt_tokens_details.model_extra or {})["cache_creation_tokens"] == 64
    chunks = list(
        oai.chat.completions.create(
            model="claude-fake",
            messages=[{"role": "user", "content": "cached words"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=scenario("cached"),
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == usage.prompt_tokens


def test_openai_upstream_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(
            model="claude-fake",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": "429"},
        )
    assert caught.value.body == {
        "message": "fake error: status 429",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.UnprocessableEntityError, match="tool type"):
        oai.chat.completions.create(
            model="claude-fake",
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "custom", "x": 1}],
        )


# The anthropic SDK to the Anthropic backend (passthrough)


def test_anthropic_passthrough_unary(claude: anthropic.Anthropic, fake: FakeProviderThread) -> None:
    message = claude.messages.create(
        model="claude-fake",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi there"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31", "anthropic-version": "2023-01-01"},
    )
    assert message.content[0].text == "Echo: hi there" and message.usage.output_tokens == 3
    upstream = fake.requests[-1]
    assert upstream.path == "/v1/messages"
    assert upstream.headers["x-api-key"] == "sk-ant-upstream"
    assert upstream.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert upstream.headers["anthropic-version"] == "2023-01-01"  # the client's, not the gateway's default
    assert upstream_json(fake) == {
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi there"}],
        "model": "claude-fake",
    }


def test_anthropic_root_path_and_bearer(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    fake.reset()
    with anthropic.Anthropic(base_url=gateway.url, auth_token="bearer-client", max_retries=0) as client:
        message = client.messages.create(
            model="claude-alias", max_tokens=5, messages=[{"role": "user", "content": "root"}]
        )
    assert message.content[0].text == "Echo: root" and message.model == "claude-real"
    upstream = fake.requests[-1]
    assert upstream.path == "/v1/messages" and upstream_json(fake)["model"] == "claude-real"
    assert "bearer-client" not in str(upstream.headers)


def test_anthropic_passthrough_stream_tool_use(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-fake",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[CLAUDE_WEATHER],
        extra_headers=scenario("tool"),
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use" and final.content[0].input == EXPECTED_ARGS


def test_anthropic_count_tokens(claude: anthropic.Anthropic, fake: FakeProviderThread) -> None:
    counted = claude.messages.count_tokens(
        model="claude-fake", messages=[{"role": "user", "content": "a b c"}]
    )
    assert counted.input_tokens == 3
    assert fake.requests[-1].path == "/v1/messages/count_tokens"
    with pytest.raises(anthropic.UnprocessableEntityError, match="Token counting is not supported"):
        claude.messages.count_tokens(model="gpt-fake", messages=[{"role": "user", "content": "a"}])


# The anthropic SDK to OpenAI and Azure OpenAI backends


@pytest.mark.parametrize("model", ["gpt-fake", "azure-model"])
def test_anthropic_to_openai_unary(claude: anthropic.Anthropic, fake: FakeProviderThread, model: str) -> None:
    message = claude.messages.create(
        model=model,
        max_tokens=30,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello openai"}],
        stop_sequences=["END"],
    )
    assert message.content[0].text == "Echo: hello openai"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 3
    upstream = fake.requests[-1]
    body = upstream_json(fake)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello openai"},
    ]
    assert (body["max_completion_tokens"], body["stop"]) == (30, ["END"])
    if model == "azure-model":
        assert upstream.path == "/openai/deployments/my-deployment/chat/completions"
        assert upstream.query_string == "api-version=2024-10-21"
        assert upstream.headers["api-key"] == "azure-secret"
    else:
        assert upstream.path == "/v1/chat/completions"
        assert upstream.headers["authorization"] == "Bearer sk-openai-upstream"


@pytest.mark.parametrize("model", ["gpt-fake", "azure-model"])
def test_anthropic_to_openai_stream(
    claude: anthropic.Anthropic, fake: FakeProviderThread, model: str
) -> None:
    with claude.messages.stream(
        model=model, max_tokens=30, messages=[{"role": "user", "content": "stream me please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: stream me please"
    assert final.usage.output_tokens == 4 and final.usage.input_tokens == 3
    assert upstream_json(fake)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("model", ["gpt-fake", "azure-model"])
def test_anthropic_to_openai_tool_calls(
    claude: anthropic.Anthropic, fake: FakeProviderThread, model: str
) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather and time?"}]
    tools = [CLAUDE_WEATHER, {"name": "get_time", "input_schema": TIME["function"]["parameters"]}]
    with claude.messages.stream(
        model=model, max_tokens=100, messages=messages, tools=tools, extra_headers=scenario("parallel-tools")
    ) as stream:
        partial = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    first, second = final.content
    assert (first.name, first.input, second.name, second.input) == (
        "get_weather",
        EXPECTED_ARGS,
        "get_time",
        {"zone": "CET"},
    )
    assert len(partial) > 2
    body = upstream_json(fake)
    assert body["tools"][0]["function"]["parameters"] == CLAUDE_WEATHER["input_schema"]
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": first.id, "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": second.id,
                    "content": [{"type": "text", "text": "noon"}],
                },
            ],
        },
    ]
    answer = claude.messages.create(
        model=model, max_tokens=100, messages=messages, tools=tools, extra_headers=scenario("tool")
    )
    assert answer.content[0].text == "Tool said: 18C; noon"
    sent = upstream_json(fake)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert sent[2] == {"role": "tool", "tool_call_id": first.id, "content": "18C"}


# Errors in Anthropic's format


def test_anthropic_unknown_model_404(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": ROUTE_NOT_FOUND},
    }


def test_anthropic_malformed_json_400(gateway: GatewayProcess) -> None:
    for path in ("/anthropic/v1/messages", "/v1/messages"):
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
        connection.request("POST", path, body=b"{not json", headers={"content-type": "application/json"})
        response = connection.getresponse()
        body = orjson.loads(response.read())
        connection.close()
        assert response.status == 400
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["claude-fake", "gpt-fake"])
def test_anthropic_upstream_error(claude: anthropic.Anthropic, model: str) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(
            model=model,
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": "429"},
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"] == {"type": "rate_limit_error", "message": "fake error: status 429"}


def test_anthropic_unsupported_tool_is_422(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.UnprocessableEntityError, match="server tool"):
        claude.messages.create(
            model="gpt-fake",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
