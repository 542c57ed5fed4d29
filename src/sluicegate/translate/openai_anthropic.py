"""OpenAI client API -> Anthropic's native Messages API (`/{prefix}/messages`), streaming included."""

from __future__ import annotations

from typing import Any

import orjson

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.usage import Usage
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps, overridden_body
from sluicegate.translate.claude import (
    ClaudeStreamToOpenAI,
    claude_error_to_openai,
    claude_to_openai,
    claude_usage,
    openai_to_claude,
)
from sluicegate.translate.sse import SSEEvents

ANTHROPIC_VERSION = "2023-06-01"  # sent when the client did not send an anthropic-version header


def messages_target(ref: BackendRef, path: str = "messages") -> str:
    """`/{prefix}/{path}`, prefix `v1` unless the schema says otherwise."""
    prefix = ref.backend.schema.prefix
    prefix = "v1" if prefix is None else prefix.strip("/")
    return f"/{prefix}/{path}" if prefix else f"/{path}"


def anthropic_headers(ctx: RequestContext) -> list[tuple[str, str]]:
    """content-type, plus anthropic-version when the client did not choose one."""
    headers = [("content-type", "application/json")]
    if "anthropic-version" not in ctx.request.headers:
        headers.append(("anthropic-version", ANTHROPIC_VERSION))
    return headers


def _events(payloads: list[bytes]) -> list[dict[str, Any]]:
    """The JSON objects among SSE data payloads; anything else is skipped."""
    events = []
    for payload in payloads:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


class ClaudeResponseToOpenAI:
    """The response half shared by every OpenAI -> Claude translator: JSON or Anthropic SSE to OpenAI."""

    response_model: str

    def _init_response(self, ctx: RequestContext) -> None:
        self.response_model = ""
        self.model = ctx.model
        self.include_usage = False
        self._stream: ClaudeStreamToOpenAI | None = None
        self._events: SSEEvents | None = None
        self._parts: list[bytes] = []

    def _expect(self, body: dict[str, Any], model: str) -> None:
        """Remember what the response translation needs from the request."""
        self.model = model
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Start the stream converter when the answer is SSE."""
        for name, value in headers:
            if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                self._events = SSEEvents()
                self._stream = ClaudeStreamToOpenAI(self.model, self.include_usage)
        return headers

    def stream_event(self, event: dict[str, Any]) -> bytes:
        """One Anthropic event through the stream converter."""
        assert self._stream is not None
        return self._stream.event(event)

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """Anthropic JSON or SSE in, OpenAI JSON or SSE out."""
        stream = self._stream
        if stream is not None:
            assert self._events is not None
            out = [self.stream_event(event) for event in _events(self._events.feed(chunk))]
            if end:
                out.append(stream.finish())
            self.response_model = stream.model
            return b"".join(out), stream.usage
        self._parts.append(chunk)
        if not end:
            return b"", None
        body = b"".join(self._parts)
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None
        if not isinstance(message, dict) or message.get("type") == "error":
            return body, None
        completion = claude_to_openai(message, self.model)
        self.response_model = completion["model"]
        return dumps(completion), claude_usage(message.get("usage") or {})

    def error(self, status: int, body: bytes) -> bytes:
        """Anthropic's error envelope as OpenAI's."""
        return claude_error_to_openai(status, body)


class OpenAIToAnthropic(ClaudeResponseToOpenAI):
    """Chat Completions in, Messages out; x-api-key comes from the AnthropicAPIKey policy."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self._init_response(ctx)

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The Messages request for `/{prefix}/messages`."""
        body = overridden_body(ctx, self.ref)
        claude = openai_to_claude(body)
        self._expect(body, claude.get("model") or ctx.model)
        claude = apply_body_mutation(claude, self.ref)
        return UpstreamRequest("POST", messages_target(self.ref), anthropic_headers(ctx), dumps(claude))
