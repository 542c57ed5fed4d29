"""OpenAI client API -> Azure OpenAI: the model (or its override) becomes the deployment in the path."""

from __future__ import annotations

from urllib.parse import quote

from sluicegate.core.context import RequestContext
from sluicegate.translate.openai_openai import PATHS, OpenAIToOpenAI

DEFAULT_API_VERSION = "2025-01-01-preview"


class OpenAIToAzureOpenAI(OpenAIToOpenAI):
    """Same body as OpenAI; path `/openai/deployments/{deployment}/{op}?api-version={version}`."""

    def target(self, ctx: RequestContext) -> str:
        """The Azure deployment URL."""
        deployment = quote(self.ref.model_name_override or ctx.model, safe="")
        version = quote(self.ref.backend.schema.version or DEFAULT_API_VERSION, safe="")
        return f"/openai/deployments/{deployment}/{PATHS[self.operation]}?api-version={version}"
