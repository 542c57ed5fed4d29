"""Anthropic Messages -> OpenAI Chat Completions: requests out, completions and chunks back as Claude's.

Also the writer of Anthropic stream events (`ClaudeEvents`), for any translator that builds an Anthropic
stream from another provider's one.
"""

from __future__ import annotations

from typing import Any

import orjson

from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# thinking budget_tokens -> reasoning_effort: the smallest effort whose budget covers it
_EFFORTS = ((1024, "low"), (8192, "medium"))


def _unsupported(what: str) -> GatewayError:
    return GatewayError(422, f"Cannot translate this request for an OpenAI backend: {what}.")


def _invalid(what: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, what, param=param)


def _source_url(block: dict[str, Any]) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{block.get('type')} blocks need a source", "messages")
    kind = source.get("type")
    if kind == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if kind == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise _unsupported(f"{block.get('type')} source type {kind!r}")


def _user_part(block: dict[str, Any]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text") or ""}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _source_url(block)}}
    if kind == "document":
        url = _source_url(block)
        if not url.startswith("data:application/pdf;"):
            raise _unsupported("documents other than base64 PDFs")
        return {"type": "file", "file": {"filename": block.get("title") or "document.pdf", "file_data": url}}
    if kind in ("thinking", "redacted_thinking"):
        return None
    raise _unsupported(f"content block type {kind!r}")


def _tool_message(block: dict[str, Any]) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):
        parts = [p for p in (_user_part(b) for b in content if isinstance(b, dict)) if p is not None]
        if all(p["type"] == "text" for p in parts):
            content = "".join(p["text"] for p in parts)
        else:
            content = parts
    elif content is None:
        content = ""
    if block.get("is_error") and isinstance(content, str):
        content = f"Error: {content}"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id") or "", "content": content}


def _user_messages(content: Any) -> list[dict[str, Any]]:
    """One Anthropic user turn: its tool results as tool messages, the rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise _invalid("message content must be a string or a list of blocks", "messages")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise _invalid("content blocks must be objects", "messages")
        if block.get("type") == "tool_result":
            out.append(_tool_message(block))
        elif (part := _user_part(block)) is not None:
            parts.append(part)
    if parts:
        text_only = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if text_only else parts})
    return out


def _assistant_message(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name") or "", "arguments": arguments}
            calls.append({"id": block.get("id") or "", "type": "function", "function": function})
        elif kind not in ("thinking", "redacted_thinking"):  # OpenAI cannot take Claude's signed thinking
            raise _unsupported(f"assistant content block type {kind!r}")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _system(system: Any) -> dict[str, Any] | None:
    if isinstance(system, str):
        return {"role": "system", "content": system} if system else None
    if isinstance(system, list):
        text = "\n".join(
            b.get("text") or "" for b in system if isinstance(b, dict) and b.get("type") == "text"
        )
        return {"role": "system", "content": text} if text else None
    return None


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise _unsupported(f"server tool {kind!r} (only client tools with an input_schema)")
        function: dict[str, Any] = {"name": tool.get("name") or ""}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        if tool.get("strict") is True:
            function["strict"] = True
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict[str, Any], out: dict[str, Any]) -> None:
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and choice.get("name"):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _unsupported(f"tool_choice {choice!r}")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def claude_request_to_openai(body: dict) -> dict:
    """An Anthropic Messages request as an OpenAI chat request (GatewayError when it cannot be)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required", "messages")
    out_messages: list[dict[str, Any]] = []
    if (system := _system(body.get("system"))) is not None:
        out_messages.append(system)
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            out_messages.extend(_user_messages(message.get("content")))
        elif role == "assistant":
            out_messages.append(_assistant_message(message.get("content")))
        else:
            raise _invalid(f"messages: role must be 'user' or 'assistant', not {role!r}", "messages")
    out: dict[str, Any] = {"model": body.get("model"), "messages": out_messages}
    if body.get("max_tokens") is not None:
        out["max_completion_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    if isinstance(body.get("tool_choice"), dict) and body.get("tools"):
        _tool_choice(body["tool_choice"], out)
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        budget = thinking.get("budget_tokens") or 0
        out["reasoning_effort"] = next((effort for limit, effort in _EFFORTS if budget <= limit), "high")
    output_format = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        schema = {"name": "output", "schema": output_format.get("schema") or {}, "strict": True}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        out["user"] = user
    return out


def claude_usage_of(usage: Usage) -> dict[str, int]:
    """A Usage as Anthropic's usage object (input_tokens excludes the cached part)."""
    cached, created = usage.cached_input_tokens, usage.cache_creation_input_tokens
    return {
        "input_tokens": max(usage.input_tokens - cached - created, 0),
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.output_tokens,
    }


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": arguments}  # not JSON: keep what the model said rather than lose it
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def openai_to_claude_message(completion: dict, model: str) -> tuple[dict, Usage]:
    """A `chat.completion` as an Anthropic message, with its usage."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    for block in message.get("thinking_blocks") or ():
        if isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking"):
            content.append(block)
    if not content and message.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    elif message.get("refusal"):
        content.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        tool_input = _tool_input(function.get("arguments"))
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": tool_input,
            }
        )
    usage = Usage.from_openai(completion.get("usage") or {})
    reply = {
        "id": completion.get("id") or "",
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": claude_usage_of(usage),
    }
    return reply, usage


def _sse(kind: str, event: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class ClaudeEvents:
    """Writes an Anthropic SSE stream: message_start, one content block open at a time, the end."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.stopped = False
        self._index: dict[Any, int] = {}  # key of every block opened so far -> its index
        self._current: tuple[str, Any] | None = None  # the open block's (kind, key)

    def start(self, message_id: str, usage: dict[str, int] | None = None) -> bytes:
        """message_start (once)."""
        if self.started:
            return b""
        self.started = True
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 0, "output_tokens": 0},
        }
        return _sse("message_start", {"type": "message_start", "message": message})

    def close(self) -> bytes:
        """content_block_stop for the open block, if any."""
        if self._current is None:
            return b""
        index = self._index[self._current]
        self._current = None
        return _sse("content_block_stop", {"type": "content_block_stop", "index": index})

    def _open(self, key: tuple[str, Any], block: dict[str, Any]) -> bytes:
        out = self.close()
        index = self._index[key] = len(self._index)
        self._current = key
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return out + _sse("content_block_start", start)

    def _delta(self, key: tuple[str, Any], delta: dict[str, Any]) -> bytes:
        event = {"type": "content_block_delta", "index": self._index[key], "delta": delta}
        return _sse("content_block_delta", event)

    def text(self, text: str) -> bytes:
        """A text_delta, opening a text block when another kind of block is open."""
        out = b""
        if self._current is None or self._current[0] != "text":
            out = self._open(("text", len(self._index)), {"type": "text", "text": ""})
        return out + self._delta(self._current, {"type": "text_delta", "text": text})

    def thinking(self, text: str = "", signature: str = "") -> bytes:
        """A thinking_delta and/or signature_delta, opening a thinking block when needed."""
        out = b""
        if self._current is None or self._current[0] != "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
            out = self._open(("thinking", len(self._index)), block)
        if text:
            out += self._delta(self._current, {"type": "thinking_delta", "thinking": text})
        if signature:
            out += self._delta(self._current, {"type": "signature_delta", "signature": signature})
        return out

    def redacted_thinking(self, data: str) -> bytes:
        """A whole redacted_thinking block."""
        out = self._open(("redacted", len(self._index)), {"type": "redacted_thinking", "data": data})
        return out + self.close()

    def tool_start(self, key: Any, tool_id: str, name: str) -> bytes:
        """Open a tool_use block for the tool call known by `key`."""
        return self._open(("tool", key), {"type": "tool_use", "id": tool_id, "name": name, "input": {}})

    def tool_arguments(self, key: Any, piece: str) -> bytes:
        """An input_json_delta for the tool call `key` (by its index even if another block opened since)."""
        if ("tool", key) not in self._index or not piece:
            return b""
        return self._delta(("tool", key), {"type": "input_json_delta", "partial_json": piece})

    def has_tool(self, key: Any) -> bool:
        """Whether a tool_use block was opened for `key`."""
        return ("tool", key) in self._index

    def stop(self, stop_reason: str, usage: dict[str, int]) -> bytes:
        """Close the open block, then message_delta and message_stop (once)."""
        if self.stopped:
            return b""
        self.stopped = True
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        end = {"type": "message_delta", "delta": delta, "usage": usage}
        return self.close() + _sse("message_delta", end) + _sse("message_stop", {"type": "message_stop"})

    @staticmethod
    def error(error_type: str, message: str) -> bytes:
        """An `error` event."""
        return _sse("error", {"type": "error", "error": {"type": error_type, "message": message}})


class OpenAIStreamToClaude:
    """OpenAI chat chunks in, Anthropic SSE events out; usage known at the end."""

    def __init__(self, model: str) -> None:
        self.events = ClaudeEvents(model)
        self.model = model
        self.usage: Usage | None = None
        self._finish: str | None = None
        self._id = ""

    def chunk(self, chunk: dict) -> bytes:
        """One parsed OpenAI chunk as zero or more Anthropic events."""
        events = self.events
        out = b""
        if not events.started:
            self._id = chunk.get("id") or ""
            if chunk.get("model"):
                self.model = events.model = chunk["model"]
            out = events.start(self._id)
        error = chunk.get("error")
        if isinstance(error, dict):
            return out + events.error("api_error", str(error.get("message") or "upstream stream error"))
        if isinstance(chunk.get("usage"), dict):
            self.usage = Usage.from_openai(chunk["usage"])
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                out += events.thinking(reasoning)
            for block in delta.get("thinking_blocks") or ():
                kind = block.get("type") if isinstance(block, dict) else None
                if kind == "thinking" and block.get("signature"):
                    out += events.thinking(signature=block["signature"])
                elif kind == "redacted_thinking" and block.get("data"):
                    out += events.redacted_thinking(block["data"])
            if delta.get("content"):
                out += events.text(delta["content"])
            for call in delta.get("tool_calls") or ():
                key = call.get("index", 0)
                function = call.get("function") or {}
                if not events.has_tool(key):
                    out += events.tool_start(key, call.get("id") or f"call_{key}", function.get("name") or "")
                out += events.tool_arguments(key, function.get("arguments") or "")
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def finish(self) -> bytes:
        """Close the message: message_delta with stop reason and usage, then message_stop."""
        if not self.events.started:
            return b""
        usage = claude_usage_of(self.usage or Usage())
        return self.events.stop(STOP_REASONS.get(self._finish or "stop", "end_turn"), usage)
