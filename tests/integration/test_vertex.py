"""The openai and anthropic SDKs through a gateway subprocess to Vertex AI (Gemini and Claude) on the fake."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import anthropic
import openai
import orjson
import pytest

from harness import GatewayProcess
from sluicegate.testing import FakeProviderThread
from sluicegate.testing.fake_gemini import THINKING_TEXT, service_account_info, state

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
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gemini-3-flash}}]}}]
      backendRefs: [{{name: gemini}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gemini-2.0-flash}}]}}]
      backendRefs: [{{name: gemini}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: text-embedding-004}}]}}]
      backendRefs: [{{name: gemini}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: claude-vertex}}]}}]
      backendRefs: [{{name: claude, modelNameOverride: "claude-sonnet-4@20250514"}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: gemini}}
spec:
  schema: {{name: GCPVertexAI}}
  backendRef: {{name: vertex, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: claude}}
spec:
  schema: {{name: GCPAnthropic}}
  backendRef: {{name: vertex, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: vertex}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: gcp-sa}}
type: Opaque
stringData:
  service_account.json: '{service_account}'
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: gcp}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: gemini}}
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: claude}}
  type: GCPCredentials
  gcpCredentials:
    projectName: p
    region: us-central1
    credentialsFile: {{secretRef: {{name: gcp-sa}}}}
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
ARGS = {"city": "Zürich", "days": 3, "note": 'say "hi"\n'}
CLAUDE_WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": WEATHER["function"]["parameters"],
}


@pytest.fixture(scope="module")
def gateway(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    info = json.dumps(service_account_info(fake.base_url + "/token")).replace("'", "''")
    config = CONFIG.format(port=fake.port, service_account=info)
    process = GatewayProcess(config, tmp_path_factory.mktemp("gw"))
    yield process
    assert process.stop() == 0
    assert "PRIVATE KEY" not in process.output()


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0)


@pytest.fixture
def claude_client(gateway: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="client-key", max_retries=0)


def test_openai_unary_to_gemini(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    fake.reset()
    reply = client.chat.completions.create(
        model="gemini-2.0-flash",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello vertex"}],
        temperature=0.2,
        max_tokens=50,
    )
    assert reply.choices[0].message.content == "Echo: hello vertex"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "gemini-2.0-flash"
    assert reply.usage is not None and reply.usage.total_tokens == reply.usage.prompt_tokens + 3
    upstream = fake.requests[-1]
    assert (
        upstream.path
        == "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
    )
    assert upstream.headers["authorization"].startswith("Bearer ya29.fake-")
    body = upstream.json()
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50}


def test_openai_stream_with_usage(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    stream = client.chat.completions.create(
        model="gemini-2.0-flash",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-scenario": "cached", "x-fake-cached-tokens": "7"},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 7
    assert fake.requests[-1].query_string == "alt=sse"


def test_openai_streamed_tool_call_and_second_turn(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    messages: list = [{"role": "user", "content": "weather in Zürich?"}]
    stream = client.chat.completions.create(
        model="gemini-3-flash",
        messages=messages,
        tools=[WEATHER],
        stream=True,
        extra_headers={"x-fake-scenario": "tool", "x-fake-tool-args": json.dumps(ARGS)},
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += call.id or ""
                slot["name"] += call.function.name or "" if call.function else ""
                slot["arguments"] += call.function.arguments or "" if call.function else ""
    assert finish == "tool_calls"
    assert len(calls) == 1 and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == ARGS
    assert calls[0]["id"].startswith("call_")
    # The second turn: the generated id round-trips, and with it the thought signature gemini-3 demands.
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
    messages.append({"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"})
    reply = client.chat.completions.create(model="gemini-3-flash", messages=messages, tools=[WEATHER])
    assert reply.choices[0].message.content == "Tool said: sunny"
    sent = fake.requests[-1].json()["contents"]
    assert base64.b64decode(sent[1]["parts"][0]["thoughtSignature"]) in state(fake.provider).signatures
    assert sent[2]["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"output": "sunny"}}


def test_openai_parallel_tools_unary(client: openai.OpenAI) -> None:
    second = {**WEATHER, "function": {**WEATHER["function"], "name": "get_time"}}
    reply = client.chat.completions.create(
        model="gemini-2.0-flash",
        messages=[{"role": "user", "content": "weather and time"}],
        tools=[WEATHER, second],
        tool_choice="required",
        extra_headers={"x-fake-scenario": "parallel-tools"},
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    assert reply.choices[0].finish_reason == "tool_calls"


def test_openai_thinking(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gemini-3-flash",
        messages=[{"role": "user", "content": "think"}],
        reasoning_effort="low",
        extra_headers={"x-fake-scenario": "thinking"},
    )
    message = reply.choices[0].message.model_dump()
    assert message["reasoning_content"] == THINKING_TEXT
    assert message["thinking_blocks"][0]["signature"]
    assert reply.usage is not None and reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens > 0


def test_openai_error_translated(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="gemini-2.0-flash",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status": "429"},
        )
    assert caught.value.body["message"] == "fake error: status 429"  # type: ignore[index]
    assert caught.value.body["code"] == "RESOURCE_EXHAUSTED"  # type: ignore[index]


def test_openai_untranslatable_is_422(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model="gemini-2.0-flash",
            messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}],
        )
    assert "file_id" in str(caught.value)


def test_embeddings(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    floats = client.embeddings.create(
        model="text-embedding-004", input=["first text", "second"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) == 8
    assert floats.usage.prompt_tokens == 3
    assert fake.requests[-1].path.endswith("/publishers/google/models/text-embedding-004:predict")
    packed = client.embeddings.create(model="text-embedding-004", input="first text")  # SDK asks base64
    assert packed.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)


def test_anthropic_unary_and_stream_to_gemini(claude_client: anthropic.Anthropic) -> None:
    message = claude_client.messages.create(
        model="gemini-2.0-flash", max_tokens=100, messages=[{"role": "user", "content": "hello claude api"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "Echo: hello claude api"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    with claude_client.messages.stream(
        model="gemini-3-flash",
        max_tokens=100,
        messages=[{"role": "user", "content": "stream me"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"x-fake-scenario": "thinking"},
    ) as stream:
        final = stream.get_final_message()
    kinds = [block.type for block in final.content]
    assert kinds[0] == "thinking" and "text" in kinds
    assert final.content[0].thinking == THINKING_TEXT  # type: ignore[union-attr]
    assert "".join(b.text for b in final.content if b.type == "text") == "Echo: stream me"
    assert any(b.type == "thinking" and b.signature for b in final.content)


def test_anthropic_tool_conversation_to_gemini(
    claude_client: anthropic.Anthropic, fake: FakeProviderThread
) -> None:
    headers = {"x-fake-scenario": "tool", "x-fake-tool-args": json.dumps(ARGS)}
    messages: list = [{"role": "user", "content": "weather?"}]
    with claude_client.messages.stream(
        model="gemini-3-flash",
        max_tokens=100,
        messages=messages,
        tools=[CLAUDE_WEATHER],
        extra_headers=headers,
    ) as stream:
        partial = "".join(e.partial_json for e in stream if e.type == "input_json")
        first = stream.get_final_message()
    assert json.loads(partial) == ARGS
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.input == ARGS
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rainy"}]},
    ]
    second = claude_client.messages.create(
        model="gemini-3-flash",
        max_tokens=100,
        messages=messages,
        tools=[CLAUDE_WEATHER],
        extra_headers=headers,
    )
    assert second.content[0].text == "Tool said: rainy"  # type: ignore[union-attr]


def test_anthropic_error_and_count_tokens(claude_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude_client.messages.create(
            model="gemini-2.0-flash",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status": "404"},
        )
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    counted = claude_client.messages.count_tokens(
        model="gemini-2.0-flash", messages=[{"role": "user", "content": "three words here"}]
    )
    assert counted.input_tokens == 3


def test_openai_to_claude_on_vertex(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    reply = client.chat.completions.create(
        model="claude-vertex", messages=[{"role": "user", "content": "hey"}]
    )
    assert reply.choices[0].message.content == "Echo: hey"
    upstream = fake.requests[-1]
    assert upstream.path == (
        "/v1/projects/p/locations/us-central1/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
    )
    body = upstream.json()
    assert "model" not in body and body["anthropic_version"] == "vertex-2023-10-16"
    assert body["max_tokens"] > 0
    stream = client.chat.completions.create(
        model="claude-vertex",
        messages=[{"role": "user", "content": "tools please"}],
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-scenario": "tool"},
    )
    arguments, usage = "", None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                arguments += call.function.arguments or "" if call.function else ""
    assert orjson.loads(arguments)["city"] == "Paris" and usage is not None
    assert fake.requests[-1].path.endswith(":streamRawPredict")


def test_anthropic_to_claude_on_vertex(claude_client: anthropic.Anthropic, fake: FakeProviderThread) -> None:
    with claude_client.messages.stream(
        model="claude-vertex",
        max_tokens=200,
        messages=[{"role": "user", "content": "think please"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"x-fake-scenario": "thinking"},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].signature
    assert final.content[1].text == "Echo: think please"  # type: ignore[union-attr]
    counted = claude_client.messages.count_tokens(
        model="claude-vertex", messages=[{"role": "user", "content": "three words here"}]
    )
    assert counted.input_tokens == 3
    assert fake.requests[-1].path.endswith("/publishers/anthropic/models/count-tokens:rawPredict")
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude_client.messages.create(
            model="claude-vertex",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-scenario": "error"},
        )
    assert caught.value.status_code == 529
