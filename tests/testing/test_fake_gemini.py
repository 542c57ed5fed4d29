"""The fake Vertex AI judged by the providers' own SDKs: google-genai and AnthropicVertex, directly."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest
from google import genai
from google.auth.transport.requests import Request as GoogleRequest
from google.genai import errors, types
from google.oauth2 import service_account

from sluicegate.testing import FakeProviderThread
from sluicegate.testing.fake_gemini import THINKING_TEXT, service_account_info, state

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather in a city",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)


def credentials(fake: FakeProviderThread) -> service_account.Credentials:
    info = service_account_info(fake.base_url + "/token")
    return service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])


@pytest.fixture
def client(fake: FakeProviderThread) -> genai.Client:
    return genai.Client(
        vertexai=True,
        project="p",
        location="us-central1",
        credentials=credentials(fake),
        http_options=types.HttpOptions(base_url=fake.base_url),
    )


def config(scenario: str, **headers: str) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        http_options=types.HttpOptions(headers={"x-fake-scenario": scenario, **headers}),
    )


def test_token_endpoint_and_bearer_check(fake: FakeProviderThread) -> None:
    creds = credentials(fake)
    creds.refresh(GoogleRequest())
    assert creds.token is not None and creds.token.startswith("ya29.fake-")
    assert creds.token in state(fake.provider).tokens
    url = (
        fake.base_url + "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    denied = httpx.post(url, json=body, headers={"authorization": "Bearer ya29.forged"})
    assert denied.status_code == 401 and denied.json()["error"]["status"] == "UNAUTHENTICATED"
    allowed = httpx.post(url, json=body, headers={"authorization": f"Bearer {creds.token}"})
    assert allowed.status_code == 200


def test_text_unary_and_stream(client: genai.Client, fake: FakeProviderThread) -> None:
    reply = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="hello fake",
        config=types.GenerateContentConfig(
            system_instruction="be brief", temperature=0.1, max_output_tokens=20
        ),
    )
    assert reply.text == "Echo: hello fake"
    assert reply.usage_metadata is not None and reply.usage_metadata.candidates_token_count == 3
    assert reply.candidates and reply.candidates[0].finish_reason == types.FinishReason.STOP
    assert reply.model_version == "gemini-2.5-flash" and reply.response_id
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="one two three"))
    assert "".join(c.text or "" for c in chunks) == "Echo: one two three"
    assert chunks[-1].usage_metadata is not None and chunks[-1].usage_metadata.total_token_count
    assert fake.requests[-1].query_string == "alt=sse"


def test_function_calling_round_trip(client: genai.Client) -> None:
    args = {"city": "Lyon"}
    first = client.models.generate_content(
        model="gemini-3-flash",
        contents="weather?",
        config=config("tool", **{"x-fake-tool-args": json.dumps(args)}),
    )
    assert first.function_calls and first.function_calls[0].name == "get_weather"
    assert first.function_calls[0].args == args
    model_turn = first.candidates[0].content  # type: ignore[index]
    assert model_turn is not None and model_turn.parts and model_turn.parts[0].thought_signature
    answer = types.Part.from_function_response(name="get_weather", response={"output": "mild"})
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="weather?")]),
        model_turn,
        types.Content(role="user", parts=[answer]),
    ]
    second = client.models.generate_content(model="gemini-3-flash", contents=history, config=config("tool"))
    assert second.text == "Tool said: mild"
    # gemini-3 wants the signature back on the function call, as Vertex does
    model_turn.parts[0].thought_signature = None
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-3-flash", contents=history, config=config("tool"))
    assert caught.value.code == 400 and "thought_signature" in str(caught.value)


def test_parallel_tools_thinking_cached(client: genai.Client) -> None:
    parallel = client.models.generate_content(
        model="gemini-2.5-flash", contents="two cities", config=config("parallel-tools")
    )
    assert [c.args for c in parallel.function_calls or ()] == [{"city": "Paris"}, {"city": "Paris 2"}]
    thinking = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="think",
        config=types.GenerateContentConfig(
            thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=100),
            http_options=types.HttpOptions(headers={"x-fake-scenario": "thinking"}),
        ),
    )
    parts = thinking.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert parts is not None and parts[0].thought and parts[0].text == THINKING_TEXT
    assert parts[1].thought_signature and thinking.usage_metadata.thoughts_token_count  # type: ignore[union-attr]
    cached = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="cache",
        config=types.GenerateContentConfig(
            http_options=types.HttpOptions(headers={"x-fake-scenario": "cached"})
        ),
    )
    assert cached.usage_metadata is not None and cached.usage_metadata.cached_content_token_count == 128


def test_errors_and_drops(client: genai.Client, fake: FakeProviderThread) -> None:
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(
            model="gemini-2.5-flash",
            contents="x",
            config=types.GenerateContentConfig(
                http_options=types.HttpOptions(headers={"x-fake-status": "429"})
            ),
        )
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(errors.ServerError):
        client.models.generate_content(
            model="gemini-2.5-flash",
            contents="x",
            config=types.GenerateContentConfig(
                http_options=types.HttpOptions(headers={"x-fake-scenario": "error"})
            ),
        )
    dropped = fake.streams_dropped
    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces a cut stream as some transport error
        list(
            client.models.generate_content_stream(
                model="gemini-2.5-flash",
                contents="one two three four",
                config=types.GenerateContentConfig(
                    http_options=types.HttpOptions(headers={"x-fake-drop-after": "1"})
                ),
            )
        )
    assert fake.streams_dropped == dropped + 1
    with pytest.raises(errors.ClientError) as unknown:
        client.models.generate_content(
            model="gemini-2.5-flash", contents="x", config={"http_options": {"extra_body": {"bogus": 1}}}
        )
    assert "Unknown name" in str(unknown.value)


def test_embeddings_predict(client: genai.Client) -> None:
    result = client.models.embed_content(
        model="text-embedding-004",
        contents=["first text", "second"],
        config=types.EmbedContentConfig(output_dimensionality=4, task_type="RETRIEVAL_QUERY"),
    )
    assert result.embeddings is not None and [len(e.values or ()) for e in result.embeddings] == [4, 4]
    stats = result.embeddings[0].statistics
    assert stats is not None and stats.token_count == 2


def test_claude_raw_predict_with_anthropic_vertex(fake: FakeProviderThread) -> None:
    creds = credentials(fake)
    creds.refresh(GoogleRequest())
    claude = anthropic.AnthropicVertex(
        region="us-east5",
        project_id="p",
        access_token=creds.token,
        base_url=fake.base_url + "/v1",
        max_retries=0,
    )
    message = claude.messages.create(
        model="claude-sonnet-4@20250514", max_tokens=50, messages=[{"role": "user", "content": "hi vertex"}]
    )
    assert message.content[0].text == "Echo: hi vertex"  # type: ignore[union-attr]
    assert message.model == "claude-sonnet-4@20250514"
    assert fake.requests[-1].path.endswith("/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict")
    with claude.messages.stream(
        model="claude-sonnet-4@20250514",
        max_tokens=50,
        messages=[{"role": "user", "content": "stream"}],
        extra_headers={"x-fake-scenario": "tool"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].type == "tool_use"
    counted = claude.messages.count_tokens(
        model="claude-sonnet-4@20250514", messages=[{"role": "user", "content": "three words here"}]
    )
    assert counted.input_tokens == 3
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model="claude-sonnet-4@20250514",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": "429"},
        )
