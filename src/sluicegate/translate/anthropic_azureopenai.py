"""Anthropic Messages client API -> Azure OpenAI: the model (or its override) is the deployment."""

from __future__ import annotations

from urllib.parse import quote

from sluicegate.core.context import RequestContext
from sluicegate.translate.anthropic_openai import AnthropicToOpenAI
from sluicegate.translate.openai_azureopenai import DEFAULT_API_VERSION


class AnthropicToAzureOpenAI(AnthropicToOpenAI):
    """Same body as toward OpenAI; path `/openai/deployments/{deployment}/chat/completions?api-version=`."""

    def target(self, ctx: RequestContext) -> str:
        """The Azure deployment URL."""
        deployment = quote(self.ref.model_name_override or ctx.model, safe="")
        version = quote(self.ref.backend.schema.version or DEFAULT_API_VERSION, safe="")
        return f"/openai/deployments/{deployment}/chat/completions?api-version={version}"
