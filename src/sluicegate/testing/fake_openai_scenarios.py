"""OpenAI chat scenarios for the fake provider: tool calls, parallel tool calls, reasoning content.

A chat request with `x-fake-scenario: tool | parallel-tools | thinking` is answered here; every other chat
request goes on to the fake's ordinary OpenAI handler. A request whose last message is a tool result is
answered with text ("Tool said: ..."), so a two-turn tool conversation ends naturally.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from sluicegate.testing import fake_anthropic
from sluicegate.testing import openai_format as fmt
from sluicegate.testing.dialects import Dialect
from sluicegate.testing.knobs import Knobs

if TYPE_CHECKING:
    from sluicegate.testing.fake_provider import FakeProvider

SCENARIOS = ("tool", "parallel-tools", "thinking")
REASONING_TEXT = "The user wants an answer. I will think briefly, then reply."
_ids = itertools.count(1)


def _tool_call(
    tool: dict[str, Any] | None, n: int, arguments: dict[str, Any] | None = None
) -> dict[str, Any]:
    function = (tool or {}).get("function") or {}
    anthropic_shape = {"name": function.get("name"), "input_schema": function.get("parameters")}
    call = fake_anthropic.tool_use_block(anthropic_shape if function.get("name") else None, n, arguments)
    arguments = orjson.dumps(call["input"]).decode()
    return {
        "id": f"call_fake{next(_ids):012d}",
        "type": "function",
        "function": {"name": call["name"], "arguments": arguments},
    }


def _answer(data: dict[str, Any], scenario: str, knobs: Knobs) -> tuple[dict[str, Any], str]:
    """(the assistant message, finish_reason) for a scenario."""
    messages = data.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    tools = [t for t in data.get("tools") or () if isinstance(t, dict)]
    if last.get("role") == "tool" or scenario == "thinking":
        if last.get("role") == "tool":
            tail = itertools.takewhile(
                lambda m: isinstance(m, dict) and m.get("role") == "tool", reversed(messages)
            )
            text = "Tool said: " + "; ".join(reversed([fmt.text_of(m.get("content")) for m in tail]))
        else:
            text = fmt.chat_reply(messages)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": knobs.reply if knobs.reply is not None else text,
        }
        if scenario == "thinking":
            message["reasoning_content"] = REASONING_TEXT
        return message, "stop"
    args = knobs.tool_args
    calls = [_tool_call(tools[0] if tools else None, 0, args)]
    if scenario == "parallel-tools":
        second = (tools[1], 0) if len(tools) > 1 else (tools[0] if tools else None, 1)
        calls.append(_tool_call(*second, args))
    return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"


def _deltas(message: dict[str, Any], chunks: int | None) -> list[dict[str, Any]]:
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": None if message.get("tool_calls") else ""}
    ]
    if message.get("reasoning_content"):
        deltas += [{"reasoning_content": p} for p in fmt.split_reply(message["reasoning_content"])]
    if message.get("content"):
        deltas += [{"content": p} for p in fmt.split_reply(message["content"], chunks)]
    for index, call in enumerate(message.get("tool_calls") or ()):
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        arguments = call["function"]["arguments"]
        size = max(len(arguments) // 3, 1)
        for i in range(0, len(arguments), size):
            deltas.append(
                {"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + size]}}]}
            )
    return deltas


async def handle(
    provider: FakeProvider, request: web.BaseRequest, body: bytes, knobs: Knobs
) -> web.StreamResponse:
    """The scenario answer, or the fake's ordinary chat answer."""
    from sluicegate.testing import fake_provider  # the fake imports the dialects, not the other way round

    scenario = request.headers.get("x-fake-scenario", "").strip().lower()
    try:
        data = fake_provider._json_object(body)
        if scenario not in SCENARIOS:
            return await provider._chat(request, data, knobs)
        model = fake_provider._model_of(data, request.path)
    except fake_provider._BadRequest as exc:
        return fake_provider._error(400, str(exc), exc.param)
    message, finish = _answer(data, scenario, knobs)
    cid, created = f"chatcmpl-fake{next(_ids):012d}", int(time.time())
    completion_tokens = knobs.completion_tokens if knobs.completion_tokens is not None else 5
    prompt = (
        knobs.prompt_tokens if knobs.prompt_tokens is not None else fmt.chat_prompt_tokens(data["messages"])
    )
    reasoning = (
        knobs.reasoning_tokens if knobs.reasoning_tokens is not None else (3 if scenario == "thinking" else 0)
    )
    use = fmt.usage(prompt, completion_tokens, knobs.cached_tokens or 0, reasoning)
    head = {"id": cid, "created": created, "model": model, "system_fingerprint": fmt.SYSTEM_FINGERPRINT}
    if data.get("stream") is not True:
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        completion = {**head, "object": "chat.completion", "choices": [choice], "usage": use}
        return await fake_anthropic.unary_response(provider, request, orjson.dumps(completion), knobs)
    frames = []
    for delta in [*_deltas(message, knobs.chunks), {}]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None if delta else finish}
        frames.append(
            b"data: "
            + orjson.dumps({**head, "object": "chat.completion.chunk", "choices": [choice]})
            + b"\n\n"
        )
    options = data.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        frames.append(
            b"data: "
            + orjson.dumps({**head, "object": "chat.completion.chunk", "choices": [], "usage": use})
            + b"\n\n"
        )
    frames.append(fmt.DONE)
    return await fake_anthropic.stream_response(provider, request, frames, knobs)


def _status(knobs: Knobs) -> web.Response:
    from sluicegate.testing import fake_provider

    return fake_provider._status_response(knobs)


def _matches(method: str, path: str) -> bool:
    return method == "POST" and path.endswith("/chat/completions")


DIALECT = Dialect(name="openai-scenarios", matches=_matches, handle=handle, error=_status)
