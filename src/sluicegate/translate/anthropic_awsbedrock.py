"""Anthropic Messages client API -> AWS Bedrock Converse (`/model/{id}/converse[-stream]`), any model."""

from __future__ import annotations

import uuid
from typing import Any

from mypy_extensions import mypyc_attr

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.translate import converse as cv
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps, upstream_json_object
from sluicegate.translate.eventstream import EventStreamDecoder

_EVENT_STREAM = b"application/vnd.amazon.eventstream"
_SSE = b"text/event-stream; charset=utf-8"
_UNSUPPORTED_BLOCKS = ("server_tool_use", "web_search_tool_result", "container_upload", "mcp_tool_use")


def _bad(message: str, param: str = "messages") -> GatewayError:
    return GatewayError(400, message, param=param)


def _image(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") != "base64":
        raise cv.unprocessable("AWS Bedrock takes images as base64 data only, not as URLs or file ids")
    return cv.image_block(str(source.get("media_type") or "").lower(), source.get("data") or "")


def _document(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    kind = source.get("type")
    if kind == "base64":
        media_type = str(source.get("media_type") or "").lower()
        return cv.document_block(media_type, source.get("data") or "", block.get("title"))
    if kind == "text":
        name = cv.document_block("text/plain", "", block.get("title"))["document"]["name"]
        return {"document": {"format": "txt", "name": name, "source": {"text": source.get("data") or ""}}}
    raise cv.unprocessable(f"AWS Bedrock does not take documents from a {kind!r} source")


def _tool_result(block: dict[str, Any]) -> dict[str, Any]:
    content = block.get("content")
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append({"text": content})
    elif isinstance(content, list):
        for item in content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text":
                parts.append({"text": item.get("text") or ""})
            elif kind == "image":
                parts.append(_image(item))
            elif kind == "document":
                parts.append(_document(item))
            else:
                raise cv.unprocessable(f"AWS Bedrock tool results cannot hold {kind!r} blocks")
    result: dict[str, Any] = {"toolUseId": block.get("tool_use_id") or "", "content": parts}
    if block.get("is_error") is True:
        result["status"] = "error"
    return {"toolResult": result}


def _block(block: Any) -> dict[str, Any] | None:
    """One Anthropic content block as a Converse content block (None: nothing to send)."""
    if not isinstance(block, dict):
        raise _bad("content blocks must be objects")
    kind = block.get("type")
    if kind == "text":
        return {"text": block.get("text") or ""} if block.get("text") else None
    if kind == "image":
        return _image(block)
    if kind == "document":
        return _document(block)
    if kind == "tool_use":
        use = {
            "toolUseId": block.get("id") or "",
            "name": block.get("name") or "",
            "input": block.get("input"),
        }
        if not isinstance(use["input"], dict):
            use["input"] = {}
        return {"toolUse": use}
    if kind == "tool_result":
        return _tool_result(block)
    if kind == "thinking":
        text = {"text": block.get("thinking") or "", "signature": block.get("signature") or ""}
        return {"reasoningContent": {"reasoningText": text}}
    if kind == "redacted_thinking":
        return {"reasoningContent": {"redactedContent": cv.redacted_to_bedrock(block.get("data") or "")}}
    if kind in _UNSUPPORTED_BLOCKS:
        raise cv.unprocessable(f"AWS Bedrock Converse has no equivalent of {kind} blocks")
    raise cv.unprocessable(f"content block type {kind!r} cannot be sent to AWS Bedrock")


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Anthropic message content (string or blocks) as Converse blocks, cachePoints after cached blocks."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _bad("message content must be a string or a list of blocks")
    out = []
    for block in content:
        converted = _block(block)
        if converted is not None:
            out.append(converted)
        if (point := cv.cache_point(block.get("cache_control"))) is not None:
            out.append(point)
    return out


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"text": system}] if system else []
    if not isinstance(system, list):
        raise _bad("system must be a string or a list of text blocks", "system")
    out = []
    for block in system:
        if isinstance(block, dict) and block.get("type") == "text" and block.get("text"):
            out.append({"text": block["text"]})
            if (point := cv.cache_point(block.get("cache_control"))) is not None:
                out.append(point)
    return out


def _tool_config(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not tools:
        return None
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        choice = {}
    kind = choice.get("type", "auto")
    if kind == "none" and not cv.has_tool_blocks(messages):
        return None  # Converse has no "none": offering no tools says it (unless the history needs them)
    specs = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise _bad("tools must be objects", "tools")
        if tool.get("type") not in (None, "custom"):
            raise cv.unprocessable(f"AWS Bedrock Converse cannot run the server tool {tool.get('type')!r}")
        specs.append(cv.tool_spec(tool.get("name"), tool.get("description"), tool.get("input_schema")))
        if (point := cv.cache_point(tool.get("cache_control"))) is not None:
            specs.append(point)
    config: dict[str, Any] = {"tools": specs}
    if kind == "auto":
        config["toolChoice"] = {"auto": {}}
    elif kind == "any":
        config["toolChoice"] = {"any": {}}
    elif kind == "tool":
        config["toolChoice"] = {"tool": {"name": choice.get("name") or ""}}
    elif kind != "none":
        raise cv.unprocessable(f"tool_choice type {kind!r}")
    return config


def anthropic_to_converse(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as a Converse request body (the model goes in the path)."""
    incoming = body.get("messages")
    if not isinstance(incoming, list) or not incoming:
        raise _bad("messages must be a non-empty list")
    system = _system(body.get("system"))
    messages: list[dict[str, Any]] = []
    for message in incoming:
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":  # some clients send mid-conversation system turns; Converse has one system
            system.extend(b for b in _blocks(message.get("content")) if "text" in b or "cachePoint" in b)
        elif role in ("user", "assistant"):
            blocks = _blocks(message.get("content"))
            if blocks:
                cv.append_message(messages, role, blocks)
        else:
            raise _bad(f"unknown message role {role!r}")
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    inference: dict[str, Any] = {}
    if isinstance(body.get("max_tokens"), int):
        inference["maxTokens"] = body["max_tokens"]
    if body.get("temperature") is not None:
        inference["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        inference["topP"] = body["top_p"]
    if body.get("stop_sequences"):
        inference["stopSequences"] = body["stop_sequences"]
    extra: dict[str, Any] = {}
    if body.get("top_k") is not None:
        extra["top_k"] = body["top_k"]
    if (thinking := cv.thinking_fields(body.get("thinking"))) is not None:
        extra["thinking"] = thinking
        budget = cv.thinking_budget(extra)
        if budget is not None and "maxTokens" not in inference:
            inference["maxTokens"] = budget + cv.THINKING_ANSWER_TOKENS
    if inference:
        out["inferenceConfig"] = inference
    if extra:
        out["additionalModelRequestFields"] = extra
    if (tools := _tool_config(body, messages)) is not None:
        out["toolConfig"] = tools
    output = body.get("output_config")
    fmt = output.get("format") if isinstance(output, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        out["outputConfig"] = cv.json_schema_output(
            fmt.get("schema"), fmt.get("name"), fmt.get("description")
        )
    return out


@mypyc_attr(allow_interpreted_subclasses=True)  # counttokens_aws.py's count-tokens translator
class AnthropicToAWSBedrock:
    """Anthropic Messages -> Converse; the event stream comes back as Anthropic SSE."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.stream = ctx.stream
        self.response_model = ref.model_name_override or ctx.model
        self.request_id = ""
        self._decoder: EventStreamDecoder | None = None
        self._events: cv.ConverseStreamToAnthropic | None = None
        self._parts: list[bytes] = []

    def converse_body(self, ctx: RequestContext) -> dict[str, Any]:
        """The Converse request body for this client request."""
        return anthropic_to_converse(ctx.body or {})

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """POST /model/{id}/converse or /converse-stream."""
        body = apply_body_mutation(self.converse_body(ctx), self.ref)
        if self.stream:
            target = cv.model_target(self.response_model, "converse-stream")
            accept = "application/vnd.amazon.eventstream"
        else:
            target, accept = cv.model_target(self.response_model, "converse"), "application/json"
        headers = [("content-type", "application/json"), ("accept", accept)]
        return UpstreamRequest("POST", target, headers, dumps(body))

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Note the request id; an event stream is re-labelled as the SSE it becomes."""
        out = []
        for name, value in headers:
            lower = name.lower()
            if lower == b"x-amzn-requestid":
                self.request_id = value.decode("latin-1")
            elif lower == b"content-type" and value.startswith(_EVENT_STREAM):
                self._decoder = EventStreamDecoder()
                value = _SSE
            out.append((name, value))
        return out

    def message_id(self) -> str:
        """The response id: Bedrock's request id."""
        return self.request_id or f"msg_{uuid.uuid4().hex}"

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """Translate the stream frame by frame, or the whole JSON body at its end."""
        if self._decoder is None:
            self._parts.append(chunk)
            if not end:
                return b"", None
            response = upstream_json_object(b"".join(self._parts), "AWS Bedrock")
            return self.render_unary(response), cv.converse_usage(response.get("usage"))
        events = self._events
        if events is None:
            events = self._events = cv.ConverseStreamToAnthropic(self.response_model, self.message_id())
        known = events.usage
        rendered = self.render_events(events.frames(self._decoder, chunk))
        if end:
            rendered += self.render_events(events.end()) + self.close_stream()
        return rendered, events.usage if events.usage is not known else None

    def render_unary(self, response: dict[str, Any]) -> bytes:
        """The client's JSON body for a Converse response."""
        return dumps(cv.converse_to_anthropic(response, self.response_model, self.message_id()))

    def render_events(self, events: list[dict[str, Any]]) -> bytes:
        """Anthropic events as SSE."""
        return b"".join(
            b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n" for event in events
        )

    def close_stream(self) -> bytes:
        """Bytes after the last event (none for Anthropic SSE)."""
        return b""

    def error(self, status: int, body: bytes) -> bytes:
        """A Bedrock error ({"message"}) in Anthropic's error envelope."""
        message = cv.error_message(status, body)
        return GatewayError(status, message).anthropic_body()
