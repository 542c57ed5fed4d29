"""Anthropic Messages -> Gemini on Vertex AI; the answer comes back as an Anthropic message or SSE stream."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.translate import gemini as g
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps, upstream_json_object
from sluicegate.translate.claude_openai import ClaudeEvents, claude_usage_of
from sluicegate.translate.sse import SSEEvents


class AnthropicToGCPVertexAI:
    """Messages in, generateContent out; tool_use ids are generated and carry thought signatures."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.model = ref.model_name_override or ctx.model
        self.response_model = self.model
        self.stream = ctx.stream
        self._parts: list[bytes] = []
        self._state: _StreamToClaude | None = None

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The generateContent request for the Messages body."""
        body = apply_body_mutation(to_gemini(ctx.body or {}, self.model), self.ref)
        return g.generate_request(body, self.model, self.stream)

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """SSE for streams, JSON otherwise."""
        if self.stream:
            self._state = _StreamToClaude(self.model)
            return g.with_content_type(headers, b"text/event-stream")
        return g.with_content_type(headers, b"application/json")

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """Anthropic events per Gemini event, or the whole message once the body is complete."""
        state = self._state
        if state is not None:
            out = state.feed(chunk) if chunk else b""
            if end:
                out += state.finish()
            self.response_model = state.events.model
            return out, state.usage if end else None
        self._parts.append(chunk)
        if not end:
            return b"", None
        response = upstream_json_object(b"".join(self._parts), "The Vertex AI backend")
        message, usage = to_claude(response, self.model)
        self.response_model = message["model"]
        return dumps(message), usage

    def error(self, status: int, body: bytes) -> bytes:
        """Google's error in Anthropic's envelope."""
        return g.gemini_error(status, body, "anthropic")


class AnthropicCountTokensToGCPVertexAI:
    """POST .../messages/count_tokens -> Gemini `:countTokens`; `totalTokens` becomes `input_tokens`."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.model = ref.model_name_override or ctx.model
        self.response_model = self.model
        self._parts: list[bytes] = []

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The countTokens request: contents, system instruction and tools of the Messages body."""
        full = apply_body_mutation(to_gemini(ctx.body or {}, self.model), self.ref)
        body = {k: v for k, v in full.items() if k in ("contents", "systemInstruction", "tools")}
        target = g.model_target("google", self.model, "countTokens")
        return UpstreamRequest("POST", target, list(g.JSON_HEADERS), dumps(body))

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """JSON."""
        return g.with_content_type(headers, b"application/json")

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """`{"input_tokens": totalTokens}`."""
        self._parts.append(chunk)
        if not end:
            return b"", None
        counted = upstream_json_object(b"".join(self._parts), "The Vertex AI backend")
        total = counted.get("totalTokens")
        return dumps({"input_tokens": total if isinstance(total, int) else 0}), None

    def error(self, status: int, body: bytes) -> bytes:
        """Google's error in Anthropic's envelope."""
        return g.gemini_error(status, body, "anthropic")


def to_gemini(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A GenerateContentRequest for an Anthropic Messages body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "messages: at least one message is required.")
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_use id -> tool name, from the assistant turns so far
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise GatewayError(400, f"messages.{i}: must be an object.")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise GatewayError(400, f"messages.{i}.content: must be a string or a list of blocks.")
        role = message.get("role")
        if role == "user":
            parts = _user_parts(content, names, i)
            role = "user"
        elif role == "assistant":
            parts = _assistant_parts(content, names, i)
            role = "model"
        else:
            raise GatewayError(400, f"messages.{i}.role: must be 'user' or 'assistant'.")
        if parts:
            contents.append({"role": role, "parts": parts})
    request: dict[str, Any] = {"contents": contents}
    system = _system(body.get("system"))
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = [_declaration(tool, model) for tool in body.get("tools") or ()]
    if tools:
        request["tools"] = [{"functionDeclarations": tools}]
    choice = _tool_config(body.get("tool_choice"))
    if choice is not None:
        request["toolConfig"] = choice
    request["generationConfig"] = _generation_config(body, model)
    return request


def _system(system: Any) -> list[dict[str, Any]]:
    if isinstance(system, str):
        return [{"text": system}] if system else []
    if isinstance(system, list):
        return [{"text": b["text"]} for b in system if isinstance(b, dict) and b.get("text")]
    return []


def _source_part(block: dict[str, Any], what: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    default = "application/pdf" if what == "document" else "image/jpeg"
    if kind == "base64":
        mime = source.get("media_type") or default
        return {"inlineData": {"mimeType": mime, "data": source.get("data") or ""}}
    if kind == "url":
        return g.part_from_url(source.get("url") or "", default, what)
    if kind == "text" and what == "document":
        return {"text": source.get("data") or ""}
    raise GatewayError(422, f"A {what} source of type {kind!r} is not supported by Gemini.")


def _user_parts(blocks: list[Any], names: dict[str, str], i: int) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []  # images and documents of tool results, after the function responses
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if block.get("text"):
                parts.append({"text": block["text"]})
        elif kind in ("image", "document"):
            parts.append(_source_part(block, kind))
        elif kind == "tool_result":
            call_id = block.get("tool_use_id")
            name = names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise GatewayError(
                    422,
                    f"messages.{i}: tool_result for {call_id!r} has no tool_use before it; "
                    "Gemini matches tool results by function name.",
                )
            texts, extra = _tool_result_content(block.get("content"))
            key = "error" if block.get("is_error") else "output"
            parts.append({"functionResponse": {"name": name, "response": {key: texts}}})
            media += extra
        else:
            raise GatewayError(422, f"messages.{i}: content block type {kind!r} is not supported by Gemini.")
    return parts + media


def _tool_result_content(content: Any) -> tuple[str, list[dict[str, Any]]]:
    """The text of a tool result, and its images as parts of their own."""
    if isinstance(content, str) or content is None:
        return content or "", []
    texts, extra = [], []
    for block in content if isinstance(content, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind in ("image", "document"):
            extra.append(_source_part(block, kind))
    return "".join(texts), extra


def _assistant_parts(blocks: list[Any], names: dict[str, str], i: int) -> list[dict[str, Any]]:
    items: list[tuple[str, Any]] = []
    signature = None
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            items.append(("text", block.get("text") or ""))
        elif kind == "thinking":
            items.append(("thought", block.get("thinking") or ""))
            signature = signature or block.get("signature") or None
        elif kind == "tool_use":
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(name, str) or not name:
                raise GatewayError(400, f"messages.{i}: tool_use needs a name.")
            if isinstance(call_id, str):
                names[call_id] = name
            own = g.signature_of_id(call_id) if isinstance(call_id, str) else None
            items.append(("call", (name, block.get("input") or {}, own)))
        elif kind != "redacted_thinking":
            raise GatewayError(422, f"messages.{i}: content block type {kind!r} is not supported by Gemini.")
    return g.model_parts(items, signature)


def _declaration(tool: Any, model: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise GatewayError(400, "tools: every tool must be an object.")
    if tool.get("type") not in (None, "custom"):
        raise GatewayError(422, f"Server tool {tool.get('type')!r} is not supported by Gemini.")
    return g.function_declaration(tool.get("name"), tool.get("description"), tool.get("input_schema"), model)


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    modes = {"auto": "AUTO", "any": "ANY", "none": "NONE"}
    if kind in modes:
        return {"functionCallingConfig": {"mode": modes[kind]}}
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["name"]]}}
    raise GatewayError(422, f"tool_choice {choice!r} is not supported; use auto, any, tool or none.")


def _generation_config(body: dict[str, Any], model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for source, target in (
        ("max_tokens", "maxOutputTokens"),
        ("temperature", "temperature"),
        ("top_p", "topP"),
    ):
        if body.get(source) is not None:
            config[target] = body[source]
    if body.get("top_k") is not None:
        config["topK"] = body["top_k"]
    if body.get("stop_sequences"):
        config["stopSequences"] = body["stop_sequences"]
    output = body.get("output_config")
    output = output if isinstance(output, dict) else {}
    fmt = output.get("format") or body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        g.response_schema(config, fmt.get("schema"), model)
    if output.get("effort") is not None:
        config["thinkingConfig"] = g.thinking_from_effort(output["effort"], model)
    thinking = g.thinking_from_anthropic(body.get("thinking"))
    if thinking is not None:
        config["thinkingConfig"] = thinking
    return config


def _stop_reason(reason: Any, has_calls: bool) -> str:
    stop = g.ANTHROPIC_STOP.get(reason, "end_turn") if reason else "end_turn"
    return "tool_use" if has_calls and stop == "end_turn" else stop


def to_claude(response: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage]:
    """An Anthropic message for a GenerateContentResponse (its first candidate), and its usage."""
    candidates = response.get("candidates") or ()
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    thoughts, text, calls, signature = g.read_parts((candidate.get("content") or {}).get("parts"))
    content: list[dict[str, Any]] = []
    if thoughts or signature:
        content.append({"type": "thinking", "thinking": thoughts, "signature": signature or ""})
    if text:
        content.append({"type": "text", "text": text})
    for name, args, sig in calls:
        content.append({"type": "tool_use", "id": g.new_tool_call_id(sig), "name": name, "input": args})
    reason = candidate.get("finishReason")
    if not candidates and (response.get("promptFeedback") or {}).get("blockReason"):
        reason = "SAFETY"
    usage = g.usage_of(response.get("usageMetadata"))
    message = {
        "id": "msg_" + (response.get("responseId") or uuid.uuid4().hex),
        "type": "message",
        "role": "assistant",
        "model": response.get("modelVersion") or model,
        "content": content,
        "stop_reason": _stop_reason(reason, bool(calls)),
        "stop_sequence": None,
        "usage": claude_usage_of(usage),
    }
    return message, usage


class _StreamToClaude:
    """Gemini SSE events -> Anthropic SSE events; usage and stop reason go out at the end."""

    def __init__(self, model: str) -> None:
        self.events = ClaudeEvents(model)
        self.usage: Usage | None = None
        self._sse = SSEEvents()
        self._reason: str | None = None
        self._calls = 0
        self._failed = False  # an error event ended the stream

    def feed(self, chunk: bytes) -> bytes:
        """The Anthropic events for the Gemini events this chunk completes."""
        return b"".join([self._event(event) for event in self._sse.objects(chunk)])

    def finish(self) -> bytes:
        """Any last event, then message_delta (stop reason, usage) and message_stop."""
        out = self.feed(b"\n\n")
        if self._failed:
            return out
        if not self.events.started:
            out += self.events.start("msg_" + uuid.uuid4().hex)
        usage = claude_usage_of(self.usage or Usage())
        return out + self.events.stop(_stop_reason(self._reason, self._calls > 0), usage)

    def _event(self, event: dict[str, Any]) -> bytes:
        events = self.events
        if self._failed:
            return b""
        if isinstance(error := event.get("error"), dict):
            self._failed = True
            kind = "overloaded_error" if error.get("code") == 503 else "api_error"
            return events.error(kind, error.get("message") or "the Vertex AI stream failed")
        if event.get("usageMetadata"):
            self.usage = g.usage_of(event["usageMetadata"])
        out = b""
        if not events.started:
            events.model = event.get("modelVersion") or events.model
            usage = claude_usage_of(self.usage or Usage())
            out = events.start(
                "msg_" + (event.get("responseId") or uuid.uuid4().hex), {**usage, "output_tokens": 0}
            )
        candidates = event.get("candidates") or ()
        candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
        for part in (candidate.get("content") or {}).get("parts") or ():
            if not isinstance(part, dict):
                continue
            call = part.get("functionCall")
            sig = part.get("thoughtSignature")
            if isinstance(call, dict):
                key = self._calls
                self._calls += 1
                out += events.tool_start(key, g.new_tool_call_id(sig), call.get("name") or "")
                out += events.tool_arguments(key, orjson.dumps(call.get("args") or {}).decode())
                continue
            text = part.get("text")
            if part.get("thought"):
                out += events.thinking(text or "", sig or "")
                continue
            if text:
                out += events.text(text)
            if sig:
                out += events.thinking(signature=sig)
        if candidate.get("finishReason"):
            self._reason = candidate["finishReason"]
        elif not candidates and (event.get("promptFeedback") or {}).get("blockReason"):
            self._reason = "SAFETY"
        return out
