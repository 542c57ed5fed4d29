"""POST /cohere/v2/rerank (Cohere Rerank v2); errors in Cohere's format."""

from sluicegate.endpoints.proxy import EndpointSpec
from sluicegate.translate.cohere_cohere import CohereToCohere

SPEC = EndpointSpec(
    path="/cohere/v2/rerank",
    operation="rerank",
    translators={"Cohere": CohereToCohere},
    streams=False,
    api="cohere",
)
