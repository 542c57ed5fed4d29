"""OpenAI Chat Completions <-> Anthropic Messages: the conversions every Claude backend shares.

Reasoning on the OpenAI side follows the convention of LiteLLM and vLLM: `reasoning_content` carries the
thinking text, `thinking_blocks` carries Anthropic's blocks with their signatures
(`{"type": "thinking", "thinking", "signature"}` or `{"type": "redacted_thinking", "data"}`); a client
that sends an assistant message back with its `thinking_blocks` gets them back to Claude intact.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from sluicegate.core.usage import Usage
from sluicegate.translate.claude_request import DEFAULT_MAX_TOKENS, REASONING_BUDGETS, openai_to_claude

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "REASONING_BUDGETS",
    "ClaudeStreamToOpenAI",
    "claude_error",
    "claude_error_to_openai",
    "claude_to_openai",
    "claude_usage",
    "finish_reason",
    "openai_to_claude",
    "openai_usage",
]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def claude_usage(usage: dict) -> Usage:
    """Anthropic usage with explicit caching normalised as Envoy AI Gateway does: input includes cache."""
    base = usage.get("input_tokens") or 0
    cached = usage.get("cache_read_input_tokens") or 0
    created = usage.get("cache_creation_input_tokens") or 0
    output = usage.get("output_tokens") or 0
    details = usage.get("output_tokens_details") or {}
    prompt = base + cached + created
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=prompt + output,
        cached_input_tokens=cached,
        cache_creation_input_tokens=created,
        reasoning_tokens=details.get("thinking_tokens") or 0 if isinstance(details, dict) else 0,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    """A Usage as an OpenAI `usage` object."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_creation_tokens": usage.cache_creation_input_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def finish_reason(stop_reason: str | None) -> str:
    """An Anthropic stop_reason as an OpenAI finish_reason."""
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def claude_to_openai(message: dict, model: str) -> dict:
    """An Anthropic message response as a `chat.completion` (model: the message's, else `model`)."""
    texts: list[str] = []
    reasoning: list[str] = []
    thinking: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            call = {
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": arguments},
            }
            calls.append(call)
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
            thinking.append(
                {
                    "type": "thinking",
                    "thinking": block.get("thinking") or "",
                    "signature": block.get("signature") or "",
                }
            )
        elif kind == "redacted_thinking":
            thinking.append({"type": "redacted_thinking", "data": block.get("data") or ""})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        reply["tool_calls"] = calls
    if thinking:
        reply["reasoning_content"] = "".join(reasoning)
        reply["thinking_blocks"] = thinking
    usage = claude_usage(message.get("usage") or {})
    return {
        "id": message.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message.get("stop_reason")),
            }
        ],
        "usage": openai_usage(usage),
    }


class ClaudeStreamToOpenAI:
    """Anthropic stream events in, framed OpenAI `chat.completion.chunk` events out."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.id = ""
        self.error: dict[str, Any] | None = None
        self._raw: dict[str, Any] = {}  # the cumulative Anthropic usage fields seen so far
        self._prefix = b""
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._thinking: dict[int, list[str]] = {}  # content block index -> thinking text pieces
        self._signatures: dict[int, str] = {}
        self._stop_reason: str | None = None
        self._finished = False
        self._started = False

    def _frame(self) -> None:
        created = int(time.time())
        head = {"id": self.id, "object": "chat.completion.chunk", "created": created, "model": self.model}
        self._prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self._prefix:
            self._frame()
        tail = (
            b',"logprobs":null,"finish_reason":null}]}\n\n'
            if finish is None
            else (b',"logprobs":null,"finish_reason":"' + finish.encode() + b'"}]}\n\n')
        )
        return self._prefix + orjson.dumps(delta) + tail

    def _update_usage(self, usage: dict[str, Any]) -> None:
        for name, value in usage.items():
            if value is not None:
                self._raw[name] = value
        self.usage = claude_usage(self._raw)

    def event(self, event: dict) -> bytes:
        """One Anthropic stream event as zero or more OpenAI chunks."""
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            index = event.get("index", 0)
            if dtype == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if dtype == "input_json_delta":
                piece = delta.get("partial_json") or ""
                if not piece or index not in self._tools:
                    return b""
                return self._chunk(
                    {"tool_calls": [{"index": self._tools[index], "function": {"arguments": piece}}]}
                )
            if dtype == "thinking_delta":
                text = delta.get("thinking") or ""
                self._thinking.setdefault(index, []).append(text)
                return self._chunk({"reasoning_content": text}) if text else b""
            if dtype == "signature_delta":
                self._signatures[index] = self._signatures.get(index, "") + (delta.get("signature") or "")
            return b""
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_stop":
            index = event.get("index", 0)
            if index in self._thinking or index in self._signatures:
                text = "".join(self._thinking.pop(index, ()))
                block = {"type": "thinking", "thinking": text, "signature": self._signatures.pop(index, "")}
                return self._chunk({"thinking_blocks": [block]})
            return b""
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self._frame()
            self._update_usage(message.get("usage") or {})
            self._started = True
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop_reason = delta["stop_reason"]
            if isinstance(event.get("usage"), dict):
                self._update_usage(event["usage"])
            return b""
        if kind == "message_stop":
            return self._finish_chunk()
        if kind == "ping":
            return b": ping\n\n"
        if kind == "error":
            error = event.get("error") or {}
            self.error = error
            message = error.get("message") or "the upstream stream reported an error"
            body = {
                "error": {
                    "message": message,
                    "type": error.get("type") or "api_error",
                    "param": None,
                    "code": None,
                }
            }
            return b"data: " + orjson.dumps(body) + b"\n\n"
        return b""

    def _block_start(self, event: dict[str, Any]) -> bytes:
        block = event.get("content_block") or {}
        index = event.get("index", 0)
        kind = block.get("type")
        if kind == "tool_use":
            position = self._tools[index] = len(self._tools)
            tool_input = block.get("input")
            arguments = orjson.dumps(tool_input).decode() if tool_input else ""
            call = {
                "index": position,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": arguments},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        if kind == "thinking":
            self._thinking[index] = [block["thinking"]] if block.get("thinking") else []
            return self._chunk({"reasoning_content": block["thinking"]}) if block.get("thinking") else b""
        if kind == "redacted_thinking":
            return self._chunk(
                {"thinking_blocks": [{"type": "redacted_thinking", "data": block.get("data") or ""}]}
            )
        return b""

    def _finish_chunk(self) -> bytes:
        if self._finished or not self._started:
            return b""
        self._finished = True
        return self._chunk({}, finish_reason(self._stop_reason))

    def finish(self) -> bytes:
        """The finish chunk if not sent yet, the usage chunk when asked for, and `data: [DONE]`."""
        out = self._finish_chunk() if self._stop_reason else b""
        if self.include_usage and self.usage is not None:
            chunk = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model,
                "choices": [],
                "usage": openai_usage(self.usage),
            }
            out += b"data: " + orjson.dumps(chunk) + b"\n\n"
        return out + b"data: [DONE]\n\n"


def _error_message(status: int, body: bytes) -> tuple[str, str | None]:
    """(message, provider error type) from an Anthropic, OpenAI, AWS or plain-text error body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"], error.get("type") if isinstance(error.get("type"), str) else None
        if isinstance(parsed.get("message"), str):
            return parsed["message"], None
        if isinstance(error, str):
            return error, None
    text = body.decode("utf-8", "replace").strip()[:1000]
    return text or f"upstream returned status {status}", None


def claude_error_to_openai(status: int, body: bytes) -> bytes:
    """An Anthropic error envelope (or any error body) as an OpenAI error envelope."""
    message, error_type = _error_message(status, body)
    if error_type is None:
        error_type = "server_error" if status >= 500 else _ERROR_TYPES.get(status, "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": None}})


def claude_error(status: int, body: bytes) -> bytes:
    """Any error body (Anthropic, OpenAI, AWS or text) as an Anthropic error envelope."""
    message, error_type = _error_message(status, body)
    fallback = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    if error_type is None or error_type not in _ANTHROPIC_ERROR_TYPES:
        error_type = fallback
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


_ANTHROPIC_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
    }
)
