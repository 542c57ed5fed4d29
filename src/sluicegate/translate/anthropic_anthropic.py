"""Anthropic Messages client API -> Anthropic's native API: passthrough-first, usage read on the way."""

from __future__ import annotations

import orjson

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.usage import Usage
from sluicegate.translate.base import UpstreamRequest, dumps, mutated_body
from sluicegate.translate.claude import claude_error, claude_usage
from sluicegate.translate.openai_anthropic import anthropic_headers, messages_target
from sluicegate.translate.sse import SSEEvents

# operation -> path below the schema prefix
PATHS = {"messages": "messages", "count_tokens": "messages/count_tokens"}


class ClaudeStreamUsage:
    """Reads usage and model from Anthropic stream events: message_start, then cumulative message_delta."""

    def __init__(self) -> None:
        self.model = ""
        self.usage: Usage | None = None
        self._raw: dict = {}

    def feed(self, payload: bytes) -> Usage | None:
        """Look at one SSE data payload; the usage when it changed."""
        if b'"message_start"' not in payload and b'"message_delta"' not in payload:
            return None
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(event, dict):
            return None
        if event.get("type") == "message_start":
            message = event.get("message") or {}
            self.model = message.get("model") or self.model
            usage = message.get("usage")
        elif event.get("type") == "message_delta":
            usage = event.get("usage")
        else:
            return None
        if not isinstance(usage, dict):
            return None
        self._raw.update((k, v) for k, v in usage.items() if v is not None)
        self.usage = claude_usage(self._raw)
        return self.usage


class AnthropicToAnthropic:
    """The body goes through untouched unless the model is overridden or the body mutated."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.operation = ctx.operation
        self.response_model = ""
        self._events: SSEEvents | None = None
        self._usage: ClaudeStreamUsage | None = None
        self._parts: list[bytes] = []

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """Forward the client's JSON to `/{prefix}/messages[/count_tokens]`; anthropic-beta goes along."""
        body = mutated_body(ctx, self.ref)
        raw = ctx.request.body if body is None else dumps(body)
        target = messages_target(self.ref, PATHS.get(self.operation, "messages"))
        return UpstreamRequest("POST", target, anthropic_headers(ctx), raw)

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Upstream headers as they are."""
        for name, value in headers:
            if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                self._events = SSEEvents()
                self._usage = ClaudeStreamUsage()
        return headers

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """Pass bytes through; read usage and model from the JSON body or the stream's events."""
        if self._events is not None:
            assert self._usage is not None
            usage = None
            for payload in self._events.feed(chunk) if chunk else ():
                usage = self._usage.feed(payload) or usage
            self.response_model = self._usage.model
            return chunk, usage
        self._parts.append(chunk)
        if not end:
            return b"", None
        body = b"".join(self._parts)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None
        if not isinstance(parsed, dict) or self.operation != "messages":
            return body, None
        self.response_model = parsed.get("model") or ""
        usage = parsed.get("usage")
        return body, claude_usage(usage) if isinstance(usage, dict) else None

    def error(self, status: int, body: bytes) -> bytes:
        """Anthropic errors pass through; anything else is put in Anthropic's envelope."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if (
            isinstance(parsed, dict)
            and parsed.get("type") == "error"
            and isinstance(parsed.get("error"), dict)
        ):
            return body
        return claude_error(status, body)
