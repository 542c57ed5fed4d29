"""OpenAI chat client API -> Claude on AWS Bedrock InvokeModel, through claude.py's conversions."""

from __future__ import annotations

from typing import Any

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.translate import claude
from sluicegate.translate.anthropic_awsanthropic import AnthropicToAWSAnthropic
from sluicegate.translate.base import dumps


class OpenAIToAWSAnthropic(AnthropicToAWSAnthropic):
    """OpenAI chat -> Anthropic Messages body on InvokeModel; answers and streams back as OpenAI."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        super().__init__(ctx, ref)
        options = (ctx.body or {}).get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self._chunks = claude.ClaudeStreamToOpenAI(self.response_model, include_usage)

    def claude_body(self, ctx: RequestContext) -> dict[str, Any]:
        """The OpenAI request as an Anthropic Messages body (missing max_tokens gets claude's default)."""
        try:
            return claude.openai_to_claude(ctx.body or {})
        except GatewayError as exc:
            exc.message = exc.message.replace("an Anthropic backend", "Claude on AWS Bedrock")
            exc.args = (exc.message,)
            raise

    def render_unary(self, message: dict[str, Any], raw: bytes) -> bytes:
        """A `chat.completion` for Claude's answer."""
        return dumps(claude.claude_to_openai(message, self.response_model))

    def render_event(self, kind: str, event: dict[str, Any], raw: bytes) -> bytes:
        """One Anthropic event as OpenAI chunks."""
        return self._chunks.event(event)

    def close_stream(self) -> bytes:
        """The usage chunk when asked for and `[DONE]`, unless the stream ended in an error."""
        return b"" if self._chunks.error is not None else self._chunks.finish()

    def error(self, status: int, body: bytes) -> bytes:
        """A Bedrock error in OpenAI's error envelope."""
        return claude.claude_error_to_openai(status, body)
