"""POST /v1/embeddings."""

from sluicegate.endpoints.proxy import EndpointSpec
from sluicegate.translate.openai_azureopenai import OpenAIToAzureOpenAI
from sluicegate.translate.openai_openai import OpenAIToOpenAI

SPEC = EndpointSpec(
    path="/v1/embeddings",
    operation="embeddings",
    translators={"OpenAI": OpenAIToOpenAI, "AzureOpenAI": OpenAIToAzureOpenAI},
    streams=False,
)
