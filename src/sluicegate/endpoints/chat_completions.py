"""POST /v1/chat/completions."""

from sluicegate.endpoints.proxy import EndpointSpec
from sluicegate.translate.openai_azureopenai import OpenAIToAzureOpenAI
from sluicegate.translate.openai_openai import OpenAIToOpenAI

SPEC = EndpointSpec(
    path="/v1/chat/completions",
    operation="chat",
    translators={"OpenAI": OpenAIToOpenAI, "AzureOpenAI": OpenAIToAzureOpenAI},
)
