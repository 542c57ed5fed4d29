"""OpenAI chat client API -> AWS Bedrock Converse (`/model/{id}/converse[-stream]`), any model.

The way is OpenAI -> Anthropic Messages (claude.py, the conversion every Claude backend shares) ->
Converse (anthropic_awsbedrock.py), and back through the same two steps, so reasoning, thinking
signatures, cache points and tool calls mean the same here as on every other Claude-family backend.
The event stream alone comes back in one step (converse_openai.py), proven to give the same chunks.
"""

from __future__ import annotations

from typing import Any

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.translate import claude
from sluicegate.translate import converse as cv
from sluicegate.translate.anthropic_awsbedrock import AnthropicToAWSBedrock, anthropic_to_converse
from sluicegate.translate.base import dumps
from sluicegate.translate.converse_openai import ConverseStreamToOpenAI

_SERVICE_TIERS = {"default", "flex", "priority", "reserved"}


def is_claude(model: str) -> bool:
    """Whether a Bedrock model id (or ARN, or inference profile) names an Anthropic Claude model."""
    lower = model.lower()
    return "anthropic" in lower or "claude" in lower


def openai_to_converse(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request as a Converse request body for `model`."""
    try:
        message = claude.openai_to_claude(body)
    except GatewayError as exc:
        exc.message = exc.message.replace("an Anthropic backend", "AWS Bedrock")
        exc.args = (exc.message,)
        raise
    if body.get("max_completion_tokens") is None and body.get("max_tokens") is None:
        # Converse needs no max tokens (each model has its default); keep room only for thinking.
        message.pop("max_tokens", None)
    effort = body.get("reasoning_effort")
    if effort is not None and body.get("thinking") is None and not is_claude(model):
        message.pop("thinking", None)  # claude.py spelled the effort as a Claude thinking budget
    out = anthropic_to_converse(message)
    if effort is not None and effort != "none" and body.get("thinking") is None and not is_claude(model):
        extra = out.setdefault("additionalModelRequestFields", {})
        if "nova" in model.lower():
            extra["reasoningConfig"] = {"type": "enabled", "maxReasoningEffort": effort}
        else:
            extra["reasoning_effort"] = effort
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        if isinstance(spec.get("schema"), dict):
            schema, name, description = spec["schema"], spec.get("name"), spec.get("description")
            out["outputConfig"] = cv.json_schema_output(schema, name, description)
    tier = body.get("service_tier")
    if tier in _SERVICE_TIERS:
        out["serviceTier"] = {"type": tier}
    return out


class OpenAIToAWSBedrock(AnthropicToAWSBedrock):
    """OpenAI chat -> Converse; the event stream comes back as OpenAI chunks (usage chunk when asked)."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        super().__init__(ctx, ref)
        options = (ctx.body or {}).get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self._chunks: ConverseStreamToOpenAI | None = None

    def converse_body(self, ctx: RequestContext) -> dict[str, Any]:
        """The Converse request body for this OpenAI request."""
        return openai_to_converse(ctx.body or {}, self.response_model)

    def message_id(self) -> str:
        """The response id: Bedrock's request id (as Envoy AI Gateway answers)."""
        return self.request_id or super().message_id().replace("msg_", "chatcmpl-")

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """The event stream straight to OpenAI chunks (converse_openai.py); a JSON body as for Anthropic."""
        if self._decoder is None:
            return super().response_body(chunk, end)
        chunks = self._chunks
        if chunks is None:
            model, message_id = self.response_model, self.message_id()
            chunks = self._chunks = ConverseStreamToOpenAI(
                model, message_id, self.include_usage, self._decoder
            )
        known = chunks.usage
        out = chunks.feed(chunk, end)
        return out, chunks.usage if chunks.usage is not known else None

    def render_unary(self, response: dict[str, Any]) -> bytes:
        """A `chat.completion` for a Converse response."""
        message = cv.converse_to_anthropic(response, self.response_model, self.message_id())
        return dumps(claude.claude_to_openai(message, self.response_model))

    def error(self, status: int, body: bytes) -> bytes:
        """A Bedrock error ({"message"}) in OpenAI's error envelope."""
        return GatewayError(status, cv.error_message(status, body)).openai_body()
