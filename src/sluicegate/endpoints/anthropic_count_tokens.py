"""POST /anthropic/v1/messages/count_tokens and /v1/messages/count_tokens, for backends that can count."""

from __future__ import annotations

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.endpoints.proxy import EndpointSpec
from sluicegate.translate.anthropic_anthropic import AnthropicToAnthropic
from sluicegate.translate.anthropic_gcpanthropic import AnthropicToGCPAnthropic
from sluicegate.translate.anthropic_gcpvertexai import AnthropicCountTokensToGCPVertexAI
from sluicegate.translate.base import Translator
from sluicegate.translate.counttokens_aws import (
    AnthropicCountTokensToAWSAnthropic,
    AnthropicCountTokensToAWSBedrock,
)
from sluicegate.upstream.forward import TranslatorFactory


def cannot_count(ctx: RequestContext, ref: BackendRef) -> Translator:
    """The factory for schemas without a token-counting API: a 422 that says so."""
    backend = ref.backend
    raise GatewayError(
        422, f"Token counting is not supported for backend {backend.name} (schema {backend.schema.name})."
    )


# Schemas that can count replace their entry with a translator.
TRANSLATORS: dict[str, TranslatorFactory] = {
    "Anthropic": AnthropicToAnthropic,
    **dict.fromkeys(
        ("OpenAI", "AzureOpenAI", "AWSBedrock", "AWSAnthropic", "GCPVertexAI", "GCPAnthropic", "Cohere"),
        cannot_count,
    ),
    "GCPVertexAI": AnthropicCountTokensToGCPVertexAI,
    "GCPAnthropic": AnthropicToGCPAnthropic,
    "AWSBedrock": AnthropicCountTokensToAWSBedrock,
    "AWSAnthropic": AnthropicCountTokensToAWSAnthropic,
}

SPEC = EndpointSpec(
    path="/anthropic/v1/messages/count_tokens",
    operation="count_tokens",
    translators=TRANSLATORS,
    streams=False,
    api="anthropic",
)
ROOT_SPEC = EndpointSpec(
    path="/v1/messages/count_tokens",
    operation="count_tokens",
    translators=TRANSLATORS,
    streams=False,
    api="anthropic",
)
SPECS = (SPEC, ROOT_SPEC)
