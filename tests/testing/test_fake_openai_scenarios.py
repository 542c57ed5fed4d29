"""The fake's OpenAI chat scenarios (tool calls, reasoning), judged by the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from sluicegate.testing import FakeProviderThread
from sluicegate.testing.fake_openai_scenarios import REASONING_TEXT

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
USER = [{"role": "user", "content": "weather please"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderThread]:
    with FakeProviderThread() as running:
        yield running


@pytest.fixture
def client(fake: FakeProviderThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url + "/v1", api_key="x", max_retries=0) as sdk:
        yield sdk


def headers(name: str) -> dict[str, str]:
    return {"x-fake-scenario": name}


def test_tool_call_unary(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="m", messages=USER, tools=[WEATHER], extra_headers=headers("tool")
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and orjson.loads(call.function.arguments) == {"city": "Paris"}


def test_parallel_tool_calls_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=USER,
        tools=[WEATHER, TIME],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers("parallel-tools"),
    )
    calls: dict[int, dict[str, str]] = {}
    chunks = list(stream)
    for chunk in chunks:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
    assert [calls[0]["name"], calls[1]["name"]] == ["get_weather", "get_time"]
    assert orjson.loads(calls[0]["arguments"]) == {"city": "Paris"} and orjson.loads(
        calls[1]["arguments"]
    ) == {"city": "Paris"}
    assert chunks[-1].usage is not None and chunks[-2].choices[0].finish_reason == "tool_calls"


def test_tool_result_is_answered(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        *USER,
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    reply = client.chat.completions.create(model="m", messages=messages, extra_headers=headers("tool"))
    assert reply.choices[0].message.content == "Tool said: sunny"


def test_reasoning_content(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=USER, extra_headers=headers("thinking"))
    assert (reply.choices[0].message.model_extra or {})["reasoning_content"] == REASONING_TEXT
    assert reply.choices[0].message.content == "Echo: weather please"
    stream = client.chat.completions.create(
        model="m", messages=USER, stream=True, extra_headers=headers("thinking")
    )
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in stream)
    assert reasoning == REASONING_TEXT


def test_other_requests_reach_the_ordinary_chat(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=USER)
    assert reply.choices[0].message.content == "Echo: weather please"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=USER, extra_headers={"x-fake-status": "429"})
