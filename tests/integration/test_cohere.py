"""The official cohere SDK through a gateway subprocess to the fake provider's Cohere Rerank v2."""

from __future__ import annotations

from collections.abc import Iterator

import cohere
import httpx
import openai
import pytest

from harness import GatewayProcess, backend_yaml
from sluicegate.core.errors import ROUTE_NOT_FOUND
from sluicegate.testing import FakeProviderThread

CONFIG = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: rerank-v3.5}}]}}]
      backendRefs: [{{name: cohere}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: my-reranker}}]}}]
      backendRefs: [{{name: cohere, modelNameOverride: rerank-english-v3.0}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: old-reranker}}]}}]
      backendRefs: [{{name: cohere-v1}}]
{cohere}
{cohere_v1}
"""
DOCS = ["Paris is in France.", "Reset your password in settings.", "Password rules changed."]
QUERY = "reset password"
NO_RETRY = {"max_retries": 0}


def knobs(**headers: str) -> dict:
    return {"max_retries": 0, "additional_headers": headers}


@pytest.fixture(scope="module")
def gateway(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = CONFIG.format(
        cohere=backend_yaml("cohere", fake.port, schema="Cohere", api_key="co-upstream-secret"),
        cohere_v1=backend_yaml("cohere-v1", fake.port, schema="Cohere", extra_schema=", version: v1"),
    )
    process = GatewayProcess(config, tmp_path_factory.mktemp("gw"))
    yield process
    assert process.stop() == 0


@pytest.fixture
def client(gateway: GatewayProcess, fake: FakeProviderThread) -> cohere.ClientV2:
    fake.reset()
    return cohere.ClientV2(api_key="client-key", base_url=gateway.url + "/cohere")


def test_rerank_unary(client: cohere.ClientV2, fake: FakeProviderThread) -> None:
    reply = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2, request_options=NO_RETRY)
    assert [(r.index, r.relevance_score) for r in reply.results] == [(1, 1.0), (2, 0.5)]
    assert reply.meta is not None and reply.meta.tokens is not None and reply.meta.tokens.input_tokens
    upstream = fake.requests[-1]
    assert (upstream.method, upstream.path) == ("POST", "/v2/rerank")
    assert upstream.json() == {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": 2}
    assert upstream.headers["authorization"] == "Bearer co-upstream-secret"  # the client's key never leaves
    assert "client-key" not in str(upstream.headers)


def test_response_bytes_are_the_providers(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    fake.reset()
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "vendor_extra": [1]}
    through = httpx.post(gateway.url + "/cohere/v2/rerank", json=body)
    assert through.status_code == 200
    assert fake.requests[-1].json() == body  # unknown fields pass
    direct = httpx.post(fake.base_url + "/v2/rerank", json=body).json()
    assert through.json()["results"] == direct["results"]
    assert through.json()["meta"] == direct["meta"]


def test_model_name_override(client: cohere.ClientV2, fake: FakeProviderThread) -> None:
    reply = client.rerank(model="my-reranker", query=QUERY, documents=DOCS, request_options=NO_RETRY)
    assert reply.results[0].index == 1
    upstream = fake.requests[-1]
    assert upstream.json()["model"] == "rerank-english-v3.0"
    assert "authorization" in upstream.headers


def test_schema_version_is_the_path(client: cohere.ClientV2, fake: FakeProviderThread) -> None:
    client.rerank(model="old-reranker", query=QUERY, documents=DOCS, request_options=NO_RETRY)
    upstream = fake.requests[-1]
    assert upstream.path == "/v1/rerank"
    assert "authorization" not in upstream.headers  # this backend has no credential


def test_unknown_model_is_404_in_cohere_shape(client: cohere.ClientV2, fake: FakeProviderThread) -> None:
    with pytest.raises(cohere.NotFoundError) as raised:
        client.rerank(model="no-such-model", query=QUERY, documents=DOCS, request_options=NO_RETRY)
    assert raised.value.status_code == 404
    assert raised.value.body == {"message": ROUTE_NOT_FOUND}
    assert fake.requests == []


def test_upstream_error_passes_through(client: cohere.ClientV2) -> None:
    with pytest.raises(cohere.TooManyRequestsError) as raised:
        client.rerank(
            model="rerank-v3.5",
            query=QUERY,
            documents=DOCS,
            request_options=knobs(**{"x-fake-status": "429"}),
        )
    assert raised.value.status_code == 429
    assert set(raised.value.body) == {"id", "message"}
    assert raised.value.body["message"] == "fake error: status 429"


def test_upstream_text_error_is_wrapped(client: cohere.ClientV2) -> None:
    text_error = knobs(**{"x-fake-status": "503", "x-fake-error-body": "upstream is melting"})
    with pytest.raises(cohere.ServiceUnavailableError) as raised:
        client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, request_options=text_error)
    assert raised.value.body == {"message": "upstream is melting"}


def test_provider_validation_error_reaches_the_client(client: cohere.ClientV2) -> None:
    with pytest.raises(cohere.BadRequestError) as raised:
        client.rerank(model="rerank-v3.5", query=QUERY, documents=[], request_options=NO_RETRY)
    assert "documents must not be empty" in raised.value.body["message"]


def test_broken_upstream_body_is_502_in_cohere_shape(client: cohere.ClientV2) -> None:
    with pytest.raises(cohere.core.ApiError) as raised:
        client.rerank(
            model="rerank-v3.5",
            query=QUERY,
            documents=DOCS,
            request_options=knobs(**{"x-fake-drop-after": "5"}),
        )
    assert raised.value.status_code == 502
    assert set(raised.value.body) == {"message"} and "cohere" in raised.value.body["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"query": "q", "documents": ["a"]}', "must name a model"),
    ],
)
def test_gateway_errors_are_in_cohere_shape(gateway: GatewayProcess, body: bytes, message: str) -> None:
    reply = httpx.post(
        gateway.url + "/cohere/v2/rerank", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    assert set(reply.json()) == {"message"} and message in reply.json()["message"]


def test_chat_to_a_cohere_backend_is_422(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    fake.reset()
    chat = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        chat.chat.completions.create(model="rerank-v3.5", messages=[{"role": "user", "content": "hi"}])
    assert "cannot serve this endpoint" in raised.value.message
    assert fake.requests == []
