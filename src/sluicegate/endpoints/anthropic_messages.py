"""POST /anthropic/v1/messages and POST /v1/messages: Anthropic's Messages API, errors in its envelope."""

from sluicegate.endpoints.proxy import EndpointSpec
from sluicegate.translate.anthropic_anthropic import AnthropicToAnthropic
from sluicegate.translate.anthropic_awsanthropic import AnthropicToAWSAnthropic
from sluicegate.translate.anthropic_awsbedrock import AnthropicToAWSBedrock
from sluicegate.translate.anthropic_azureopenai import AnthropicToAzureOpenAI
from sluicegate.translate.anthropic_gcpanthropic import AnthropicToGCPAnthropic
from sluicegate.translate.anthropic_gcpvertexai import AnthropicToGCPVertexAI
from sluicegate.translate.anthropic_openai import AnthropicToOpenAI
from sluicegate.upstream.forward import TranslatorFactory

# One table for both paths; the client's x-api-key or Authorization is never forwarded (forward.py).
TRANSLATORS: dict[str, TranslatorFactory] = {
    "Anthropic": AnthropicToAnthropic,
    "OpenAI": AnthropicToOpenAI,
    "AzureOpenAI": AnthropicToAzureOpenAI,
    "AWSBedrock": AnthropicToAWSBedrock,
    "AWSAnthropic": AnthropicToAWSAnthropic,
    "GCPVertexAI": AnthropicToGCPVertexAI,
    "GCPAnthropic": AnthropicToGCPAnthropic,
}

SPEC = EndpointSpec(
    path="/anthropic/v1/messages", operation="messages", translators=TRANSLATORS, api="anthropic"
)
ROOT_SPEC = EndpointSpec(path="/v1/messages", operation="messages", translators=TRANSLATORS, api="anthropic")
SPECS = (SPEC, ROOT_SPEC)
