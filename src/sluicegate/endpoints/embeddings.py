"""POST /v1/embeddings."""

from sluicegate.endpoints.proxy import EndpointSpec
from sluicegate.translate.embeddings_awsbedrock import EmbeddingsToAWSBedrock
from sluicegate.translate.embeddings_gcpvertexai import EmbeddingsToGCPVertexAI
from sluicegate.translate.openai_azureopenai import OpenAIToAzureOpenAI
from sluicegate.translate.openai_openai import OpenAIToOpenAI

SPEC = EndpointSpec(
    path="/v1/embeddings",
    operation="embeddings",
    translators={
        "OpenAI": OpenAIToOpenAI,
        "AzureOpenAI": OpenAIToAzureOpenAI,
        "AWSBedrock": EmbeddingsToAWSBedrock,
        "GCPVertexAI": EmbeddingsToGCPVertexAI,
    },
    streams=False,
)
