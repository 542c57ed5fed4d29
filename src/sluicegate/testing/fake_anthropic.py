"""Anthropic's Messages API for the fake provider: JSON and SSE, scenarios, errors in Anthropic's envelope.

The builders (`reply_message`, `stream_events`, `sse`, `error_body`, ...) are shared with the dialects that
carry Anthropic bodies inside other wire formats (Claude on Bedrock InvokeModel, Claude on Vertex rawPredict).
Scenarios come from the `x-fake-scenario` request header: text (default), tool, parallel-tools, thinking,
cached, error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from sluicegate.testing import openai_format as fmt
from sluicegate.testing.dialects import Dialect
from sluicegate.testing.knobs import Knobs

if TYPE_CHECKING:
    from sluicegate.testing.fake_provider import FakeProvider

SCENARIOS = ("text", "tool", "parallel-tools", "thinking", "cached", "error")
THINKING_TEXT = "The user wants an answer. I will think briefly, then reply."
DEFAULT_TOOL = {"name": "get_weather", "input": {"city": "Paris"}}
CACHE_READ_TOKENS = 128  # the cached scenario's defaults when no x-fake-cached-tokens is given
CACHE_CREATION_TOKENS = 64
MESSAGE_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "output_config",
        "output_format",
    }
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_ids = itertools.count(1)


class BadRequest(Exception):
    """A request the fake answers with a 400 invalid_request_error."""


def error_type(status: int) -> str:
    """Anthropic's error `type` for an HTTP status."""
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str) -> bytes:
    """Anthropic's error envelope."""
    error = {"type": error_type(status), "message": message}
    return orjson.dumps({"type": "error", "error": error, "request_id": f"req_fake{next(_ids):012d}"})


def status_error(knobs: Knobs) -> web.Response:
    """The answer to x-fake-status: Anthropic's envelope, or x-fake-error-body as it is."""
    status = knobs.status or 500
    if knobs.error_body is not None:
        try:
            orjson.loads(knobs.error_body)
            content_type = _JSON
        except orjson.JSONDecodeError:
            content_type = "text/plain"
        return web.Response(status=status, body=knobs.error_body.encode(), content_type=content_type)
    return web.Response(
        status=status, body=error_body(status, f"fake error: status {status}"), content_type=_JSON
    )


def scenario_of(headers: dict[str, str]) -> str:
    """The requested scenario (lower-cased header names); BadRequest for an unknown one."""
    scenario = headers.get("x-fake-scenario", "text").strip().lower() or "text"
    if scenario not in SCENARIOS:
        raise BadRequest(f"x-fake-scenario must be one of {', '.join(SCENARIOS)}, not {scenario!r}")
    return scenario


def signature(thinking: str) -> str:
    """The signature the fake gives a thinking text (and checks when the block comes back)."""
    return base64.b64encode(hashlib.sha256(b"fake-claude:" + thinking.encode()).digest()).decode()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return sum(_words(v) for k, v in value.items() if k in ("text", "content", "thinking"))
    return 0


def prompt_tokens(data: dict[str, Any]) -> int:
    """Whitespace-separated words over system and messages, at least 1."""
    return max(_words(data.get("system")) + _words(data.get("messages")), 1)


def check_request(data: dict[str, Any], extra_fields: Iterable[str] = (), require_model: bool = True) -> None:
    """Reject what Anthropic rejects: missing fields, unknown fields, bad turns, tampered signatures."""
    allowed = MESSAGE_FIELDS.union(extra_fields)
    for name in data:
        if name not in allowed:
            raise BadRequest(f"{name}: Extra inputs are not permitted")
    if require_model and not (isinstance(data.get("model"), str) and data["model"]):
        raise BadRequest("model: Field required")
    if not isinstance(data.get("max_tokens"), int) or data["max_tokens"] < 1:
        raise BadRequest("max_tokens: Field required")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required")
    previous_tools: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        if not isinstance(content, (str, list)):
            raise BadRequest(f"messages.{i}.content: Input should be a valid list")
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "tool_result" and block.get("tool_use_id") not in previous_tools:
                raise BadRequest(
                    f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message."
                )
            if kind == "thinking" and block.get("signature") != signature(block.get("thinking") or ""):
                raise BadRequest(f"messages.{i}.content: Invalid `signature` in `thinking` block")
        previous_tools = {b.get("id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"}


def _schema_value(name: str, schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "test"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "Paris" if name in ("city", "location", "place") else "test"


def tool_input(tool: dict[str, Any]) -> dict[str, Any]:
    """A small input for a tool: one value per property of its schema, or {"city": "Paris"}."""
    schema = tool.get("input_schema") or {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        return {"city": "Paris"}
    return {name: _schema_value(name, sub) for name, sub in properties.items()}


def tool_use_block(
    tool: dict[str, Any] | None, n: int, arguments: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A tool_use block calling `tool` (an Anthropic tool definition; None: get_weather), with `arguments`
    (x-fake-tool-args) as its input when given."""
    if tool is None or not tool.get("name"):
        name, default = DEFAULT_TOOL["name"], dict(DEFAULT_TOOL["input"])
    else:
        name, default = tool["name"], tool_input(tool)
    arguments = dict(arguments) if arguments is not None else default
    if n:  # a second call to the same tool asks about something else
        arguments = {k: (f"{v} {n + 1}" if isinstance(v, str) else v) for k, v in arguments.items()}
    return {"type": "tool_use", "id": f"toolu_fake{next(_ids):012d}", "name": name, "input": arguments}


def _answering_tool_result(messages: list[Any]) -> str | None:
    """The text of the tool results when the last user turn carries them, else None."""
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(last.get("content"), list):
        return None
    results = [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
    if not results:
        return None
    return "; ".join(_text(b.get("content")) for b in results)


def reply_text(messages: list[Any]) -> str:
    """The echo reply: "Echo: " + the last user text, or what the tools answered."""
    answered = _answering_tool_result(messages)
    if answered is not None:
        return f"Tool said: {answered}"
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = _text(message.get("content"))
            if text:
                return f"Echo: {text}"
    return fmt.DEFAULT_REPLY


def reply_message(
    data: dict[str, Any], knobs: Knobs, scenario: str, model: str | None = None
) -> dict[str, Any]:
    """The Anthropic message the fake answers `data` with in a scenario."""
    messages = data.get("messages") or []
    tools = [t for t in data.get("tools") or () if isinstance(t, dict)]
    text = knobs.reply if knobs.reply is not None else reply_text(messages)
    calls_tool = scenario in ("tool", "parallel-tools") and _answering_tool_result(messages) is None
    content: list[dict[str, Any]] = []
    if scenario == "thinking":
        content.append({"type": "thinking", "thinking": THINKING_TEXT, "signature": signature(THINKING_TEXT)})
    if calls_tool and scenario == "parallel-tools":
        content.append({"type": "text", "text": "I will call two tools."})
        second = tools[1] if len(tools) > 1 else (tools[0] if tools else None)
        content += [
            tool_use_block(tools[0] if tools else None, 0, knobs.tool_args),
            tool_use_block(second, 0 if len(tools) > 1 else 1, knobs.tool_args),
        ]
    elif calls_tool:
        content.append(tool_use_block(tools[0] if tools else None, 0, knobs.tool_args))
    else:
        content.append({"type": "text", "text": text})
    pieces = len(fmt.split_reply(text, knobs.chunks)) if not calls_tool else 5
    usage = {
        "input_tokens": knobs.prompt_tokens if knobs.prompt_tokens is not None else prompt_tokens(data),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": knobs.cached_tokens or 0,
        "output_tokens": knobs.completion_tokens if knobs.completion_tokens is not None else max(pieces, 1),
    }
    if scenario == "cached":
        usage["cache_read_input_tokens"] = (
            knobs.cached_tokens if knobs.cached_tokens is not None else CACHE_READ_TOKENS
        )
        usage["cache_creation_input_tokens"] = CACHE_CREATION_TOKENS
    return {
        "id": f"msg_fake{next(_ids):012d}",
        "type": "message",
        "role": "assistant",
        "model": model or data.get("model") or "claude-fake",
        "content": content,
        "stop_reason": "tool_use" if calls_tool else "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def _json_pieces(value: dict[str, Any]) -> list[str]:
    """A tool input as Claude streams it: an empty first piece, then the JSON in a few parts."""
    text = orjson.dumps(value).decode()
    size = max(len(text) // 3, 1)
    return ["", *(text[i : i + size] for i in range(0, len(text), size))]


def stream_events(
    message: dict[str, Any], knobs: Knobs | None = None, error: bool = False
) -> list[dict[str, Any]]:
    """The stream events that build `message`; with `error`, an overloaded error after the first delta."""
    chunks = knobs.chunks if knobs is not None else None
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in fmt.split_reply(block["text"], chunks)]
        elif kind == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _json_pieces(block["input"])]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in fmt.split_reply(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opening, deltas = block, []
        events.append({"type": "content_block_start", "index": index, "content_block": opening})
        for delta in deltas:
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
            if error:
                events.append(
                    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                )
                return events
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message.get("stop_sequence")}
    events.append({"type": "message_delta", "delta": delta, "usage": usage})
    events.append({"type": "message_stop"})
    return events


def sse(event: dict[str, Any]) -> bytes:
    """One event in Anthropic's SSE framing: `event: <type>` and `data: <json>`."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def count_tokens(data: dict[str, Any]) -> int:
    """The count_tokens answer: words of system, messages and tool names and descriptions."""
    tools = sum(
        len(str(t.get("name", "")).split()) + _words(t.get("description")) for t in data.get("tools") or ()
    )
    return prompt_tokens(data) + tools


def _close(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.close()


async def stream_response(
    provider: FakeProvider,
    request: web.BaseRequest,
    frames: list[bytes],
    knobs: Knobs,
    content_type: str | None = None,
) -> web.StreamResponse:
    """Write frames one by one, honouring x-fake-chunk-delay-ms and x-fake-drop-after (counted in frames)."""
    headers = dict(_SSE_HEADERS) if content_type is None else {"Content-Type": content_type}
    resp = web.StreamResponse(headers=headers)
    delay = (knobs.chunk_delay_ms or 0) / 1000
    try:
        await resp.prepare(request)
        for i, frame in enumerate(frames):
            if i == knobs.drop_after:
                _close(request)
                provider.streams_dropped += 1
                return resp
            if delay and i:
                await asyncio.sleep(delay)
            await resp.write(frame)
        await resp.write_eof()
    except ConnectionError:
        provider.streams_aborted += 1
        return resp
    provider.streams_completed += 1
    return resp


async def unary_response(
    provider: FakeProvider, request: web.BaseRequest, body: bytes, knobs: Knobs, status: int = 200
) -> web.StreamResponse:
    """A JSON answer; with x-fake-drop-after, only that many bytes of it before the connection closes."""
    headers = {"request-id": f"req_fake{next(_ids):012d}"}
    if knobs.drop_after is None:
        return web.Response(status=status, body=body, content_type=_JSON, headers=headers)
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_type = _JSON
    resp.content_length = len(body)
    try:
        await resp.prepare(request)
        await resp.write(body[: knobs.drop_after])
    except ConnectionError:
        return resp
    _close(request)
    provider.streams_dropped += 1
    return resp


def _bad(message: str) -> web.Response:
    return web.Response(status=400, body=error_body(400, message), content_type=_JSON)


async def handle(
    provider: FakeProvider, request: web.BaseRequest, body: bytes, knobs: Knobs
) -> web.StreamResponse:
    """POST .../messages and .../messages/count_tokens."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _bad("There was an error parsing the body of your request: invalid JSON")
    if not isinstance(data, dict):
        return _bad("The request body must be a JSON object")
    if not headers.get("anthropic-version"):
        return _bad("anthropic-version: header is required")
    if request.path.endswith("/count_tokens"):
        if not data.get("model") or not isinstance(data.get("messages"), list):
            return _bad("model and messages: Field required")
        return web.json_response({"input_tokens": count_tokens(data)})
    try:
        scenario = scenario_of(headers)
        check_request(data)
    except BadRequest as exc:
        return _bad(str(exc))
    message = reply_message(data, knobs, scenario)
    if data.get("stream") is True:
        events = stream_events(message, knobs, error=scenario == "error")
        return await stream_response(provider, request, [sse(e) for e in events], knobs)
    if scenario == "error":
        return web.Response(status=529, body=error_body(529, "Overloaded"), content_type=_JSON)
    return await unary_response(provider, request, orjson.dumps(message), knobs)


def _matches(method: str, path: str) -> bool:
    return method == "POST" and (path.endswith("/messages") or path.endswith("/messages/count_tokens"))


DIALECT = Dialect(name="anthropic", matches=_matches, handle=handle, error=status_error)
