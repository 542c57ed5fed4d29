"""AWS Bedrock Converse, shared by the OpenAI and Anthropic pairs: paths, blocks, usage, stops, errors."""

from __future__ import annotations

import base64
import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
import orjson

from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage

if TYPE_CHECKING:
    from sluicegate.translate.eventstream import EventStreamDecoder

IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "text/plain": "txt",
    "text/html": "html",
    "text/markdown": "md",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
# Bedrock's stopReason -> (OpenAI finish_reason, Anthropic stop_reason)
STOP_REASONS = {
    "end_turn": ("stop", "end_turn"),
    "stop_sequence": ("stop", "stop_sequence"),
    "max_tokens": ("length", "max_tokens"),
    "model_context_window_exceeded": ("length", "model_context_window_exceeded"),
    "tool_use": ("tool_calls", "tool_use"),
    "content_filtered": ("content_filter", "refusal"),
    "guardrail_intervened": ("content_filter", "refusal"),
}
# The exceptions of a Bedrock stream -> HTTP status they carry in a unary response
EXCEPTION_STATUS = {
    "validationException": 400,
    "accessDeniedException": 403,
    "resourceNotFoundException": 404,
    "modelTimeoutException": 408,
    "modelErrorException": 424,
    "throttlingException": 429,
    "internalServerException": 500,
    "modelStreamErrorException": 500,
    "serviceUnavailableException": 503,
}


class TextDelta(msgspec.Struct, gc=False):
    """The `delta` of a contentBlockDelta event, as far as a text delta needs it."""

    text: str | None = None


class ContentBlockDelta(msgspec.Struct, rename="camel", gc=False):
    """A contentBlockDelta event's payload, as far as a text delta needs it."""

    delta: TextDelta | None = None
    content_block_index: int = 0
    p: str = ""  # Bedrock's padding: read, so that bad UTF-8 in it fails here as it fails orjson


# One typed decode instead of orjson's dicts: about half the time on a Bedrock stream's every token frame.
# Raises ValueError (msgspec.DecodeError, UnicodeDecodeError) where orjson would raise; other fields are
# skipped unread.
decode_content_block_delta = msgspec.json.Decoder(ContentBlockDelta).decode

# When thinking is on and the client gave no max tokens: the budget plus this much room for the answer.
THINKING_ANSWER_TOKENS = 4096


def unprocessable(message: str, param: str | None = None) -> GatewayError:
    """A 422: the request is valid for the client API but cannot be said in Bedrock Converse."""
    return GatewayError(422, message, param=param)


@functools.lru_cache(maxsize=1024)  # quote() costs µs; a gateway sends a few model ids over and over
def model_target(model: str, operation: str) -> str:
    """`/model/{model id}/{operation}`, the id percent-encoded as boto3 does (`:` and `/` included)."""
    return f"/model/{quote(model, safe='')}/{operation}"


def cache_point(cache_control: Any) -> dict[str, Any] | None:
    """An Anthropic-style `cache_control` as a Bedrock cachePoint (ttl kept), or None."""
    if not isinstance(cache_control, dict) or cache_control.get("type") != "ephemeral":
        return None
    point: dict[str, Any] = {"type": "default"}
    if isinstance(cache_control.get("ttl"), str):
        point["ttl"] = cache_control["ttl"]
    return {"cachePoint": point}


def parse_data_uri(uri: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a base64 data URI, else None."""
    if not uri.startswith("data:"):
        return None
    head, sep, data = uri[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head[:-7].split(";")[0].strip().lower(), data


def image_block(media_type: str, data: str) -> dict[str, Any]:
    """A Converse image block from base64 data (blobs travel as base64 in Converse's JSON)."""
    fmt = IMAGE_FORMATS.get(media_type)
    if fmt is None:
        raise unprocessable(f"AWS Bedrock does not accept images of type {media_type or 'unknown'}")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def document_block(media_type: str, data: str, name: str | None) -> dict[str, Any]:
    """A Converse document block from base64 data."""
    fmt = DOCUMENT_FORMATS.get(media_type)
    if fmt is None:
        raise unprocessable(f"AWS Bedrock does not accept documents of type {media_type or 'unknown'}")
    return {"document": {"format": fmt, "name": _document_name(name), "source": {"bytes": data}}}


def _document_name(name: str | None) -> str:
    # Bedrock allows letters, digits, whitespace, hyphens, parentheses and brackets in document names.
    cleaned = "".join(c if c.isalnum() or c in " -()[]" else "-" for c in (name or "document"))
    return cleaned.strip() or "document"


def redacted_to_bedrock(data: str) -> str:
    """Anthropic `redacted_thinking.data` as the base64 blob of Converse's `redactedContent`."""
    return base64.b64encode(data.encode()).decode()


def redacted_from_bedrock(blob: str) -> str:
    """Converse `redactedContent` (base64) as Anthropic's opaque `data` string."""
    try:
        return base64.b64decode(blob).decode()
    except (ValueError, UnicodeDecodeError):
        return blob


def thinking_fields(thinking: Any) -> dict[str, Any] | None:
    """Anthropic-style `thinking` for additionalModelRequestFields (enabled, disabled, adaptive)."""
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
        return None
    return dict(thinking)


def thinking_budget(fields: dict[str, Any] | None) -> int | None:
    """The budget of an enabled thinking config."""
    thinking = (fields or {}).get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        return budget if isinstance(budget, int) else None
    return None


def tool_spec(name: Any, description: Any, schema: Any, strict: Any = None) -> dict[str, Any]:
    """A Converse toolSpec."""
    if not isinstance(name, str) or not name:
        raise GatewayError(400, "Every tool needs a non-empty name.", param="tools")
    spec: dict[str, Any] = {
        "name": name,
        "inputSchema": {"json": schema or {"type": "object", "properties": {}}},
    }
    if isinstance(description, str) and description:
        spec["description"] = description
    if isinstance(strict, bool):
        spec["strict"] = strict
    return {"toolSpec": spec}


def json_schema_output(schema: Any, name: Any = None, description: Any = None) -> dict[str, Any]:
    """Converse structured output (`outputConfig.textFormat`); Bedrock wants the schema as a JSON string."""
    definition: dict[str, Any] = {"schema": orjson.dumps(schema).decode()}
    if isinstance(name, str) and name:
        definition["name"] = name
    if isinstance(description, str) and description:
        definition["description"] = description
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


def append_message(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append a message, merged into the previous one when the role repeats (Converse wants alternation)."""
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    """Whether the history holds toolUse or toolResult blocks (then Bedrock requires a toolConfig)."""
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def converse_usage(usage: Any) -> Usage:
    """Bedrock TokenUsage normalised as Envoy AI Gateway does: input = input + cache read + cache write."""
    if not isinstance(usage, dict):
        return Usage()
    read = usage.get("cacheReadInputTokens") or 0
    write = usage.get("cacheWriteInputTokens") or 0
    prompt = (usage.get("inputTokens") or 0) + read + write
    output = usage.get("outputTokens") or 0
    return Usage(prompt, output, prompt + output, read, write, 0)


def openai_usage(usage: Usage) -> dict[str, Any]:
    """An OpenAI `usage` object."""
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


def anthropic_usage(usage: Any) -> dict[str, Any]:
    """Bedrock TokenUsage as Anthropic's (whose input_tokens excludes cached tokens, as Bedrock's does)."""
    usage = usage if isinstance(usage, dict) else {}
    return {
        "input_tokens": usage.get("inputTokens") or 0,
        "output_tokens": usage.get("outputTokens") or 0,
        "cache_read_input_tokens": usage.get("cacheReadInputTokens") or 0,
        "cache_creation_input_tokens": usage.get("cacheWriteInputTokens") or 0,
    }


def error_message(status: int, body: bytes) -> str:
    """The provider's message from a Bedrock error body ({"message": ...}), or its text."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("message", "Message"):
            if isinstance(parsed.get(key), str):
                return parsed[key]
    text = body.decode("utf-8", "replace").strip()[:1000]
    return text or f"AWS Bedrock returned status {status}"


def exception_message(payload: bytes) -> str:
    """The message of an exception frame of a Bedrock stream."""
    return error_message(500, payload)


def converse_to_anthropic(response: Any, model: str, message_id: str) -> dict[str, Any]:
    """A Converse response as an Anthropic message (GatewayError 502 when it has no output)."""
    output = response.get("output") if isinstance(response, dict) else None
    message = output.get("message") if isinstance(output, dict) else None
    if not isinstance(message, dict):
        stop = response.get("stopReason") if isinstance(response, dict) else None
        raise GatewayError(502, f"AWS Bedrock answered without an output message (stopReason {stop!r}).")
    content: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if "text" in block:
            content.append({"type": "text", "text": block["text"]})
        elif "toolUse" in block:
            use = block["toolUse"]
            content.append(
                {
                    "type": "tool_use",
                    "id": use.get("toolUseId"),
                    "name": use.get("name"),
                    "input": use.get("input"),
                }
            )
        elif "reasoningContent" in block:
            reasoning = block["reasoningContent"]
            if "reasoningText" in reasoning:
                text = reasoning["reasoningText"]
                content.append(
                    {
                        "type": "thinking",
                        "thinking": text.get("text", ""),
                        "signature": text.get("signature", ""),
                    }
                )
            elif "redactedContent" in reasoning:
                data = redacted_from_bedrock(reasoning["redactedContent"])
                content.append({"type": "redacted_thinking", "data": data})
    fields = response.get("additionalModelResponseFields")
    stop_sequence = fields.get("stop_sequence") if isinstance(fields, dict) else None
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(response.get("stopReason") or "end_turn", ("stop", "end_turn"))[1],
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(response.get("usage")),
    }


class ConverseStreamToAnthropic:
    """ConverseStream events in, Anthropic stream events (dicts) out; usage known once metadata arrived.

    Bedrock sends text blocks without a contentBlockStart and sends usage after messageStop, so block
    starts are emitted at the first delta and message_delta waits for the metadata event (or the end).
    """

    def __init__(self, model: str, message_id: str) -> None:
        self.model = model
        self.message_id = message_id
        self.usage: Usage | None = None
        self.stop_reason: str | None = None
        self.done = False  # message_stop (or an error) was emitted
        self._index: dict[int, int] = {}  # Bedrock contentBlockIndex -> our block index
        self._kind: dict[int, str] = {}  # our block index -> block type
        self._stop_sequence: str | None = None

    def event(self, event_type: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The Anthropic events for one ConverseStream event."""
        if event_type == "contentBlockDelta":
            return self._delta(data.get("contentBlockIndex", 0), data.get("delta") or {})
        if event_type == "contentBlockStart":
            start = data.get("start") or {}
            use = start.get("toolUse")
            if not isinstance(use, dict):
                return []
            index = self._open(data.get("contentBlockIndex", 0), "tool_use")
            block = {"type": "tool_use", "id": use.get("toolUseId"), "name": use.get("name"), "input": {}}
            return [{"type": "content_block_start", "index": index, "content_block": block}]
        if event_type == "contentBlockStop":
            index = self._index.pop(data.get("contentBlockIndex", 0), None)
            return [] if index is None else [{"type": "content_block_stop", "index": index}]
        if event_type == "messageStart":
            message = {
                "id": self.message_id,
                "type": "message",
                "role": data.get("role") or "assistant",
                "content": [],
                "model": self.model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            return [{"type": "message_start", "message": message}]
        if event_type == "messageStop":
            self.stop_reason = data.get("stopReason") or "end_turn"
            fields = data.get("additionalModelResponseFields")
            if isinstance(fields, dict) and isinstance(fields.get("stop_sequence"), str):
                self._stop_sequence = fields["stop_sequence"]
            return []
        if event_type == "metadata":
            self.usage = converse_usage(data.get("usage"))
            return self._stop(anthropic_usage(data.get("usage")))
        return []

    def _open(self, bedrock_index: int, kind: str) -> int:
        index = self._index[bedrock_index] = len(self._kind)
        self._kind[index] = kind
        return index

    def _delta(self, bedrock_index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        index = self._index.get(bedrock_index)
        events: list[dict[str, Any]] = []
        if "text" in delta:
            if index is None:
                index = self._open(bedrock_index, "text")
                events.append({"type": "content_block_start", "index": index, "content_block": _EMPTY_TEXT})
            events.append(
                {"type": "content_block_delta", "index": index, "delta": _text_delta(delta["text"])}
            )
        elif "toolUse" in delta:
            if index is not None:
                piece = (delta["toolUse"] or {}).get("input") or ""
                delta_event = {"type": "input_json_delta", "partial_json": piece}
                events.append({"type": "content_block_delta", "index": index, "delta": delta_event})
        elif "reasoningContent" in delta:
            reasoning = delta["reasoningContent"] or {}
            if "redactedContent" in reasoning:
                if index is None:
                    index = self._open(bedrock_index, "redacted_thinking")
                    data = redacted_from_bedrock(reasoning["redactedContent"])
                    block = {"type": "redacted_thinking", "data": data}
                    events.append({"type": "content_block_start", "index": index, "content_block": block})
                return events
            if index is None:
                index = self._open(bedrock_index, "thinking")
                block = {"type": "thinking", "thinking": "", "signature": ""}
                events.append({"type": "content_block_start", "index": index, "content_block": block})
            if reasoning.get("text"):
                thinking = {"type": "thinking_delta", "thinking": reasoning["text"]}
                events.append({"type": "content_block_delta", "index": index, "delta": thinking})
            if reasoning.get("signature"):
                signature = {"type": "signature_delta", "signature": reasoning["signature"]}
                events.append({"type": "content_block_delta", "index": index, "delta": signature})
        return events

    def _stop(self, usage: dict[str, Any]) -> list[dict[str, Any]]:
        if self.done:
            return []
        self.done = True
        events = [{"type": "content_block_stop", "index": index} for index in sorted(self._index.values())]
        self._index.clear()
        stop = STOP_REASONS.get(self.stop_reason or "end_turn", ("stop", "end_turn"))[1]
        delta = {"stop_reason": stop, "stop_sequence": self._stop_sequence}
        events.append({"type": "message_delta", "delta": delta, "usage": usage})
        events.append({"type": "message_stop"})
        return events

    def frames(self, decoder: EventStreamDecoder, chunk: bytes) -> list[dict[str, Any]]:
        """The events of the frames this chunk completes; a broken frame ends the stream with an error."""
        out: list[dict[str, Any]] = []
        for frame in decoder.feed(chunk) if chunk else ():
            if self.done:
                break
            if frame.message_type == "event":
                try:
                    data = orjson.loads(frame.payload)
                except orjson.JSONDecodeError:
                    data = None
                if isinstance(data, dict):
                    out += self.event(frame.event_type, data)
                else:
                    out += self.exception("", b"AWS Bedrock sent a stream event that is not a JSON object.")
            else:
                out += self.exception(frame.event_type, frame.payload)
        if decoder.error is not None and not self.done:
            out += self.exception("", f"AWS Bedrock sent a broken event stream: {decoder.error}".encode())
        return out

    def exception(self, exception_type: str, payload: bytes) -> list[dict[str, Any]]:
        """An exception frame as an Anthropic `error` event; nothing follows it."""
        self.done = True
        status = EXCEPTION_STATUS.get(exception_type, 500)
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        message = (
            f"{exception_message(payload)} ({exception_type})"
            if exception_type
            else exception_message(payload)
        )
        return [{"type": "error", "error": {"type": kind, "message": message}}]

    def end(self) -> list[dict[str, Any]]:
        """What the end of the upstream body still owes: the stop without usage, or an error if cut short."""
        if self.done:
            return []
        if self.stop_reason is not None:
            return self._stop({"output_tokens": 0})
        self.done = True
        error = {"type": "api_error", "message": "AWS Bedrock ended the stream before the model finished."}
        return [{"type": "error", "error": error}]


_EMPTY_TEXT = {"type": "text", "text": ""}
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def _text_delta(text: str) -> dict[str, str]:
    return {"type": "text_delta", "text": text}
