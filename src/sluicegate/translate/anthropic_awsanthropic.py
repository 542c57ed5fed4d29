"""Anthropic Messages client API -> Claude on AWS Bedrock InvokeModel (`/model/{id}/invoke[-with-...]`).

The body is the Messages body without `model` and `stream`, plus `anthropic_version` (schema.version,
default bedrock-2023-05-31) and `anthropic_beta` from the client's anthropic-beta header. The answer is
Anthropic's own JSON; a stream is an event stream whose `chunk` frames carry `{"bytes": base64(event)}`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.translate import claude
from sluicegate.translate import converse as cv
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps, upstream_json_object
from sluicegate.translate.eventstream import EventStreamDecoder

DEFAULT_ANTHROPIC_VERSION = "bedrock-2023-05-31"
_EVENT_STREAM = b"application/vnd.amazon.eventstream"
_SSE = b"text/event-stream; charset=utf-8"
_METRICS = b"amazon-bedrock-invocationMetrics"
# Not part of Claude's InvokeModel body: Bedrock rejects them as "extraneous key ... is not permitted".
_NOT_ON_BEDROCK = ("model", "stream", "metadata", "service_tier")


class AnthropicToAWSAnthropic:
    """Anthropic Messages -> InvokeModel, same body; the stream's chunks unwrapped into Anthropic SSE."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.stream = ctx.stream
        self.response_model = ref.model_name_override or ctx.model
        self._decoder: EventStreamDecoder | None = None
        self._parts: list[bytes] = []
        self._raw_usage: dict[str, Any] = {}
        self._usage: Usage | None = None
        self._finished = False  # message_stop or an error went out

    def claude_body(self, ctx: RequestContext) -> dict[str, Any]:
        """The Anthropic Messages body (model and stream are dropped later)."""
        body = dict(ctx.body or {})
        if not isinstance(body.get("max_tokens"), int):
            body["max_tokens"] = claude.DEFAULT_MAX_TOKENS
        beta = ctx.request.headers.get("anthropic-beta")
        if beta and "anthropic_beta" not in body:
            body["anthropic_beta"] = [b.strip() for b in beta.split(",") if b.strip()]
        return body

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """POST /model/{id}/invoke or /invoke-with-response-stream."""
        body = self.claude_body(ctx)
        for name in _NOT_ON_BEDROCK:
            body.pop(name, None)
        body["anthropic_version"] = self.ref.backend.schema.version or DEFAULT_ANTHROPIC_VERSION
        body = apply_body_mutation(body, self.ref)
        if self.stream:
            target = cv.model_target(self.response_model, "invoke-with-response-stream")
            headers = [
                ("content-type", "application/json"),
                ("accept", "application/vnd.amazon.eventstream"),
                ("x-amzn-bedrock-accept", "application/json"),
            ]
        else:
            target = cv.model_target(self.response_model, "invoke")
            headers = [("content-type", "application/json"), ("accept", "application/json")]
        return UpstreamRequest("POST", target, headers, dumps(body))

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """An event stream is re-labelled as the SSE it becomes."""
        out = []
        for name, value in headers:
            if name.lower() == b"content-type" and value.startswith(_EVENT_STREAM):
                self._decoder = EventStreamDecoder()
                value = _SSE
            out.append((name, value))
        return out

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """The unary JSON at its end, or the stream's events as they complete."""
        if self._decoder is None:
            self._parts.append(chunk)
            if not end:
                return b"", None
            body = b"".join(self._parts)
            message = upstream_json_object(body, "AWS Bedrock")
            self.response_model = message.get("model") or self.response_model
            usage = message.get("usage")
            return self.render_unary(message, body), claude.claude_usage(
                usage if isinstance(usage, dict) else {}
            )
        known = self._usage
        out = []
        decoder = self._decoder
        for frame in decoder.feed(chunk) if chunk else ():
            if self._finished:
                break
            if frame.message_type != "event":
                status = cv.EXCEPTION_STATUS.get(frame.event_type, 500)
                message = f"{cv.exception_message(frame.payload)} ({frame.event_type})"
                kind = (
                    "rate_limit_error"
                    if status == 429
                    else "api_error"
                    if status >= 500
                    else "invalid_request_error"
                )
                out.append(self._error_event(kind, message))
            elif frame.event_type == "chunk":
                out.append(self._chunk(frame.payload))
        if decoder.error is not None and not self._finished:
            out.append(
                self._error_event("api_error", f"AWS Bedrock sent a broken event stream: {decoder.error}")
            )
        if end and not self._finished:
            out.append(
                self._error_event("api_error", "AWS Bedrock ended the stream before the model finished.")
            )
        rendered = b"".join(out)
        if end:
            rendered += self.close_stream()
        return rendered, self._usage if self._usage is not known else None

    def _chunk(self, payload: bytes) -> bytes:
        try:
            raw = base64.b64decode(orjson.loads(payload)["bytes"])
            event = orjson.loads(raw)
            if not isinstance(event, dict):
                raise TypeError(type(event).__name__)
        except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error):
            return self._error_event(
                "api_error", "AWS Bedrock sent a stream chunk that is not an Anthropic event."
            )
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._count(message.get("usage"))
            self.response_model = message.get("model") or self.response_model
        elif kind == "message_delta":
            self._count(event.get("usage"))
        elif kind == "message_stop":
            self._finished = True
            if _METRICS in raw:
                event.pop(_METRICS.decode(), None)
                raw = dumps(event)
        elif kind == "error":
            self._finished = True
        return self.render_event(kind or "", event, raw)

    def _count(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._raw_usage.update((k, v) for k, v in usage.items() if v is not None)
            self._usage = claude.claude_usage(self._raw_usage)

    def _error_event(self, kind: str, message: str) -> bytes:
        self._finished = True
        event = {"type": "error", "error": {"type": kind, "message": message}}
        return self.render_event("error", event, dumps(event))

    def render_unary(self, message: dict[str, Any], raw: bytes) -> bytes:
        """The client's body for Claude's JSON answer: that answer as it came."""
        return raw

    def render_event(self, kind: str, event: dict[str, Any], raw: bytes) -> bytes:
        """One Anthropic event as SSE (its JSON as Claude sent it)."""
        return b"event: " + kind.encode() + b"\ndata: " + raw + b"\n\n"

    def close_stream(self) -> bytes:
        """Bytes after the last event (none for Anthropic SSE)."""
        return b""

    def error(self, status: int, body: bytes) -> bytes:
        """A Bedrock error ({"message"}) in Anthropic's error envelope."""
        return GatewayError(status, cv.error_message(status, body)).anthropic_body()
