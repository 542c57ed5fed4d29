"""The fake provider's Anthropic dialect, judged by the official anthropic SDK pointed straight at it."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest

from sluicegate.testing import FakeProviderThread, fake_anthropic
from sluicegate.testing.knobs import Knobs

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    },
}
TIME = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"zone": {"enum": ["CET", "UTC"]}}},
}
USER = [{"role": "user", "content": "hello there world"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderThread]:
    with FakeProviderThread() as running:
        yield running


@pytest.fixture
def client(fake: FakeProviderThread) -> Iterator[anthropic.Anthropic]:
    fake.reset()
    with anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0) as sdk:
        yield sdk


def scenario(name: str, **knobs: str) -> dict[str, str]:
    return {"x-fake-scenario": name, **{f"x-fake-{k.replace('_', '-')}": v for k, v in knobs.items()}}


def test_unary_echo_and_usage(client: anthropic.Anthropic, fake: FakeProviderThread) -> None:
    message = client.messages.create(model="claude-x", max_tokens=20, system="Be brief.", messages=USER)
    assert message.content[0].type == "text" and message.content[0].text == "Echo: hello there world"
    assert (message.stop_reason, message.model, message.role) == ("end_turn", "claude-x", "assistant")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)
    recorded = fake.requests[-1]
    assert recorded.path == "/v1/messages"
    assert "k" in (
        recorded.headers.get("x-api-key"),
        recorded.headers.get("authorization", "").removeprefix("Bearer "),
    )


def test_knobs_reply_chunks_and_tokens(client: anthropic.Anthropic) -> None:
    headers = {"x-fake-reply": "abcdef", "x-fake-chunks": "3", "x-fake-prompt-tokens": "11"}
    with client.messages.stream(model="m", max_tokens=5, messages=USER, extra_headers=headers) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["ab", "cd", "ef"]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 3)


def test_stream_text_events(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="m", max_tokens=5, messages=USER) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "text", "content_block_stop", "message_delta"} <= set(kinds)
    assert final.content[0].text == "Echo: hello there world"


def test_tool_use_unary_and_stream(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="m", max_tokens=50, messages=USER, tools=[WEATHER], extra_headers=scenario("tool")
    )
    (block,) = message.content
    assert message.stop_reason == "tool_use"
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "Paris", "days": 1})
    with client.messages.stream(
        model="m", max_tokens=50, messages=USER, tools=[WEATHER], extra_headers=scenario("tool")
    ) as stream:
        partial = [event.partial_json for event in stream if event.type == "input_json"]
        final = stream.get_final_message()
    assert len(partial) > 2 and partial[0] == ""  # streamed in pieces, the first one empty as Claude does
    assert orjson.loads("".join(partial)) == final.content[0].input == {"city": "Paris", "days": 1}


def test_parallel_tools(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="m",
        max_tokens=50,
        messages=USER,
        tools=[WEATHER, TIME],
        extra_headers=scenario("parallel-tools"),
    ) as stream:
        final = stream.get_final_message()
    text, first, second = final.content
    assert text.text == "I will call two tools."
    assert (first.name, second.name, second.input) == ("get_weather", "get_time", {"zone": "CET"})
    assert first.id != second.id


def test_tool_result_turn_is_answered_with_text(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model="m", max_tokens=50, messages=USER, tools=[WEATHER], extra_headers=scenario("tool")
    )
    call = first.content[0]
    messages: list[Any] = [
        *USER,
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]},
    ]
    second = client.messages.create(
        model="m", max_tokens=50, messages=messages, tools=[WEATHER], extra_headers=scenario("tool")
    )
    assert second.stop_reason == "end_turn" and second.content[0].text == "Tool said: 18C"
    messages[2]["content"][0]["tool_use_id"] = "toolu_unknown"
    with pytest.raises(anthropic.BadRequestError, match="tool_use_id"):
        client.messages.create(model="m", max_tokens=50, messages=messages, tools=[WEATHER])


def test_thinking_with_signature(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="m", max_tokens=50, messages=USER, extra_headers=scenario("thinking")
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    thinking, text = final.content
    assert "thinking" in kinds and "signature" in kinds
    assert thinking.type == "thinking" and thinking.thinking == fake_anthropic.THINKING_TEXT
    assert thinking.signature == fake_anthropic.signature(thinking.thinking)
    assert text.text == "Echo: hello there world"
    history: list[Any] = [
        *USER,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
        {"role": "user", "content": "next"},
    ]
    assert client.messages.create(model="m", max_tokens=5, messages=history).content[0].text == "Echo: next"
    history[1]["content"][0]["signature"] = "tampered"
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        client.messages.create(model="m", max_tokens=5, messages=history)


def test_cached_usage(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="m", max_tokens=5, messages=USER, extra_headers=scenario("cached"))
    assert message.usage.cache_read_input_tokens == fake_anthropic.CACHE_READ_TOKENS
    assert message.usage.cache_creation_input_tokens == fake_anthropic.CACHE_CREATION_TOKENS
    with client.messages.stream(
        model="m", max_tokens=5, messages=USER, extra_headers={"x-fake-cached-tokens": "7"}
    ) as stream:
        assert stream.get_final_message().usage.cache_read_input_tokens == 7


@pytest.mark.parametrize(
    ("status", "error_class", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.InternalServerError, "overloaded_error"),
    ],
)
def test_status_knob_uses_anthropic_errors(
    client: anthropic.Anthropic, status: int, error_class: type[Exception], kind: str
) -> None:
    with pytest.raises(error_class) as caught:
        client.messages.create(
            model="m", max_tokens=5, messages=USER, extra_headers={"x-fake-status": str(status)}
        )
    body = caught.value.body  # type: ignore[attr-defined]
    assert body["type"] == "error" and body["error"]["type"] == kind


def test_error_scenario_unary_and_mid_stream(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="m", max_tokens=5, messages=USER, extra_headers=scenario("error"))
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        with client.messages.stream(
            model="m", max_tokens=5, messages=USER, extra_headers=scenario("error")
        ) as s:
            list(s)


def test_drop_after_cuts_the_stream(client: anthropic.Anthropic, fake: FakeProviderThread) -> None:
    with pytest.raises(Exception, match=r"incomplete|closed|Connection"):  # the SDK's HTTP layer notices
        with client.messages.stream(
            model="m", max_tokens=5, messages=USER, extra_headers={"x-fake-drop-after": "3"}
        ) as stream:
            list(stream)
    assert fake.streams_dropped == 1


def test_count_tokens(client: anthropic.Anthropic, fake: FakeProviderThread) -> None:
    counted = client.messages.count_tokens(model="m", messages=USER, system="two words", tools=[WEATHER])
    assert counted.input_tokens == 3 + 2 + 1 + 5  # messages, system, tool name, tool description
    assert fake.requests[-1].path == "/v1/messages/count_tokens"


def raw_post(fake: FakeProviderThread, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        connection.request(
            "POST", "/v1/messages", body=body, headers={"content-type": "application/json", **headers}
        )
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b'{"model":"m","max_tokens":5,"messages":[]}', {}, "anthropic-version"),
        (
            b'{"model":"m","messages":[{"role":"user","content":"x"}]}',
            {"anthropic-version": "1"},
            "max_tokens",
        ),
        (
            b'{"model":"m","max_tokens":5,"stream_options":{},"messages":[{"role":"user","content":"x"}]}',
            {"anthropic-version": "1"},
            "stream_options: Extra inputs are not permitted",
        ),
        (
            b'{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}',
            {"anthropic-version": "1"},
            "role",
        ),
        (b"{nope", {"anthropic-version": "1"}, "invalid JSON"),
        (
            b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}',
            {"anthropic-version": "1", "x-fake-scenario": "poetry"},
            "x-fake-scenario",
        ),
    ],
)
def test_rejects_what_anthropic_rejects(
    fake: FakeProviderThread, body: bytes, headers: dict[str, str], message: str
) -> None:
    status, error = raw_post(fake, body, headers)
    assert status == 400 and error["type"] == "error" and message in error["error"]["message"]


def test_builders_are_reusable() -> None:
    knobs = Knobs({})
    data = {"model": "m", "max_tokens": 5, "messages": USER, "tools": [WEATHER]}
    message = fake_anthropic.reply_message(data, knobs, "tool", model="claude-on-bedrock")
    assert message["model"] == "claude-on-bedrock" and message["content"][0]["input"] == {
        "city": "Paris",
        "days": 1,
    }
    events = fake_anthropic.stream_events(message, knobs)
    assert [e["type"] for e in events[:2]] == ["message_start", "ping"] and events[-1][
        "type"
    ] == "message_stop"
    assert fake_anthropic.sse(events[-1]) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    fake_anthropic.check_request(
        {**data, "anthropic_version": "x"}, extra_fields=("anthropic_version",), require_model=False
    )
