"""POST /v1/chat/completions."""

from sluicegate.endpoints.proxy import EndpointSpec
from sluicegate.translate.openai_anthropic import OpenAIToAnthropic
from sluicegate.translate.openai_awsanthropic import OpenAIToAWSAnthropic
from sluicegate.translate.openai_awsbedrock import OpenAIToAWSBedrock
from sluicegate.translate.openai_azureopenai import OpenAIToAzureOpenAI
from sluicegate.translate.openai_gcpanthropic import OpenAIToGCPAnthropic
from sluicegate.translate.openai_gcpvertexai import OpenAIToGCPVertexAI
from sluicegate.translate.openai_openai import OpenAIToOpenAI

SPEC = EndpointSpec(
    path="/v1/chat/completions",
    operation="chat",
    translators={
        "OpenAI": OpenAIToOpenAI,
        "AzureOpenAI": OpenAIToAzureOpenAI,
        "Anthropic": OpenAIToAnthropic,
        "AWSBedrock": OpenAIToAWSBedrock,
        "AWSAnthropic": OpenAIToAWSAnthropic,
        "GCPVertexAI": OpenAIToGCPVertexAI,
        "GCPAnthropic": OpenAIToGCPAnthropic,
    },
)
