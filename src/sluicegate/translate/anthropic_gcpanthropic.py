"""Anthropic Messages -> Claude on Vertex AI: the same body without `model`, plus `anthropic_version`."""

from __future__ import annotations

from sluicegate.core.context import RequestContext
from sluicegate.translate import gemini as g
from sluicegate.translate.anthropic_anthropic import AnthropicToAnthropic
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps
from sluicegate.translate.openai_gcpanthropic import DEFAULT_VERSION, raw_predict_target, vertex_claude_body

COUNT_TOKENS_MODEL = "count-tokens"  # Vertex counts Claude tokens through rawPredict on this model


class AnthropicToGCPAnthropic(AnthropicToAnthropic):
    """rawPredict / streamRawPredict; the answer is native Anthropic JSON or SSE, read for usage."""

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The rawPredict request (count_tokens: on the `count-tokens` model, `model` kept in the body)."""
        body = dict(ctx.body or {})
        model = self.ref.model_name_override or ctx.model
        if self.operation == "count_tokens":
            body["model"] = model
            body["anthropic_version"] = self.ref.backend.schema.version or DEFAULT_VERSION
            target = g.model_target("anthropic", COUNT_TOKENS_MODEL, "rawPredict")
            body = apply_body_mutation(body, self.ref)
        else:
            body = vertex_claude_body(body, self.ref)
            target = raw_predict_target(model, body.get("stream") is True)
        return UpstreamRequest("POST", target, list(g.JSON_HEADERS), dumps(body))
