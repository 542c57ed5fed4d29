"""POST /v1/completions (legacy text completions)."""

from sluicegate.endpoints.proxy import EndpointSpec
from sluicegate.translate.openai_azureopenai import OpenAIToAzureOpenAI
from sluicegate.translate.openai_openai import OpenAIToOpenAI

SPEC = EndpointSpec(
    path="/v1/completions",
    operation="completion",
    translators={"OpenAI": OpenAIToOpenAI, "AzureOpenAI": OpenAIToAzureOpenAI},
)
