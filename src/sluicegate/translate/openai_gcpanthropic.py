"""OpenAI chat completions -> Claude on Vertex AI (`publishers/anthropic/models/{m}:rawPredict`)."""

from __future__ import annotations

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.translate import gemini as g
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps
from sluicegate.translate.claude import openai_to_claude
from sluicegate.translate.openai_anthropic import ClaudeResponseToOpenAI

DEFAULT_VERSION = "vertex-2023-10-16"  # the body's anthropic_version when schema.version is not set


def vertex_claude_body(body: dict, ref: BackendRef) -> dict:
    """A Messages body as rawPredict takes it: no `model`, `anthropic_version` from the schema."""
    body.pop("model", None)
    body["anthropic_version"] = ref.backend.schema.version or DEFAULT_VERSION
    return apply_body_mutation(body, ref)


def raw_predict_target(model: str, stream: bool) -> str:
    """`/publishers/anthropic/models/{model}:rawPredict` (or `:streamRawPredict`)."""
    return g.model_target("anthropic", model, "streamRawPredict" if stream else "rawPredict")


class OpenAIToGCPAnthropic(ClaudeResponseToOpenAI):
    """Chat Completions in, Messages via rawPredict out; the answer is native Anthropic JSON or SSE."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self._init_response(ctx)

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The rawPredict request for the chat body."""
        body = ctx.body or {}
        model = self.ref.model_name_override or ctx.model
        claude = vertex_claude_body(openai_to_claude(body), self.ref)
        self._expect(body, model)
        target = raw_predict_target(model, claude.get("stream") is True)
        return UpstreamRequest("POST", target, list(g.JSON_HEADERS), dumps(claude))
