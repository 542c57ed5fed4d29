"""Anthropic Messages client API -> OpenAI Chat Completions backend (`/{prefix}/chat/completions`)."""

from __future__ import annotations

import orjson

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.usage import Usage
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps, overridden_body
from sluicegate.translate.claude import claude_error
from sluicegate.translate.claude_openai import (
    OpenAIStreamToClaude,
    claude_request_to_openai,
    openai_to_claude_message,
)
from sluicegate.translate.sse import SSEEvents


class AnthropicToOpenAI:
    """Messages in, Chat Completions out; the stream always asks for usage so the client gets it."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.model = ctx.model
        self.response_model = ""
        self._stream: OpenAIStreamToClaude | None = None
        self._events: SSEEvents | None = None
        self._parts: list[bytes] = []

    def target(self, ctx: RequestContext) -> str:
        """`/{prefix}/chat/completions`."""
        prefix = self.ref.backend.schema.prefix
        prefix = "v1" if prefix is None else prefix.strip("/")
        return f"/{prefix}/chat/completions" if prefix else "/chat/completions"

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The chat request (GatewayError 4xx when the Messages request cannot be translated)."""
        chat = claude_request_to_openai(overridden_body(ctx, self.ref))
        self.model = chat.get("model") or ctx.model
        chat = apply_body_mutation(chat, self.ref)
        return UpstreamRequest("POST", self.target(ctx), [("content-type", "application/json")], dumps(chat))

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Start the stream converter when the answer is SSE."""
        for name, value in headers:
            if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                self._events = SSEEvents()
                self._stream = OpenAIStreamToClaude(self.model)
        return headers

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """OpenAI JSON or chunks in, an Anthropic message or event stream out."""
        stream = self._stream
        if stream is not None:
            assert self._events is not None
            out = [stream.chunk(parsed) for parsed in self._events.objects(chunk)] if chunk else []
            if end:
                out.append(stream.finish())
            self.response_model = stream.model
            return b"".join(out), stream.usage
        self._parts.append(chunk)
        if not end:
            return b"", None
        body = b"".join(self._parts)
        try:
            completion = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None
        if not isinstance(completion, dict) or not completion.get("choices"):
            return body, None
        message, usage = openai_to_claude_message(completion, self.model)
        self.response_model = message["model"]
        return dumps(message), usage

    def error(self, status: int, body: bytes) -> bytes:
        """OpenAI's error envelope (or any body) as Anthropic's."""
        return claude_error(status, body)
