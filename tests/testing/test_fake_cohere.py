"""The fake's Cohere Rerank v2, judged by the official cohere SDK talking to it directly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import cohere
import httpx
import pytest

from sluicegate.testing import FakeProviderThread

DOCS = [
    "The weather in Paris is mild in spring.",
    "To reset your password open the account settings.",
    "Password managers keep secrets safe.",
    "Reset the router by holding the button.",
]
QUERY = "How do I reset my password?"
NO_RETRY = {"max_retries": 0}


def knobs(**headers: str) -> dict:
    return {"max_retries": 0, "additional_headers": headers}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderThread]:
    with FakeProviderThread() as running:
        yield running


@pytest.fixture
def client(fake: FakeProviderThread) -> cohere.ClientV2:
    fake.reset()
    return cohere.ClientV2(api_key="co-key", base_url=fake.base_url)


def test_rerank_orders_by_word_overlap(client: cohere.ClientV2, fake: FakeProviderThread) -> None:
    reply = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, request_options=NO_RETRY)
    assert [r.index for r in reply.results] == [1, 2, 3, 0]  # ties keep document order
    scores = [r.relevance_score for r in reply.results]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] == pytest.approx(2 / 6, abs=1e-6)  # reset and password: 2 of the query's 6 words
    assert scores[-1] == 0.0
    assert reply.id
    assert reply.meta is not None and reply.meta.api_version is not None
    assert reply.meta.api_version.version == "2"
    assert reply.meta.billed_units is not None and reply.meta.billed_units.search_units == 1
    assert reply.meta.tokens is not None and reply.meta.tokens.input_tokens > 0
    assert reply.meta.tokens.output_tokens == 0
    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v2/rerank")
    assert sent.headers["authorization"] == "Bearer co-key"
    assert sent.json()["documents"] == DOCS


def test_rerank_is_deterministic(client: cohere.ClientV2) -> None:
    first = client.rerank(model="m", query=QUERY, documents=DOCS, request_options=NO_RETRY)
    second = client.rerank(model="m", query=QUERY, documents=DOCS, request_options=NO_RETRY)
    assert first.results == second.results
    assert first.id != second.id


def test_top_n_and_max_tokens_per_doc(client: cohere.ClientV2) -> None:
    reply = client.rerank(model="m", query=QUERY, documents=DOCS, top_n=2, request_options=NO_RETRY)
    assert [r.index for r in reply.results] == [1, 2]
    # Only the first 3 words count: "To reset your" loses "settings", "Reset the router" keeps "reset".
    cut = client.rerank(model="m", query="reset settings", documents=DOCS, max_tokens_per_doc=3)
    assert [(r.index, r.relevance_score) for r in cut.results[:2]] == [(1, 0.5), (3, 0.5)]


def test_relevant_spans(client: cohere.ClientV2) -> None:
    reply = client.rerank(
        model="rerank-v5.0-pro",
        query="reset password",
        documents=DOCS,
        relevant_spans={"mode": "enabled", "max_spans": 1},
        request_options=NO_RETRY,
    )
    top = reply.results[0]
    assert top.index == 1 and top.relevant_spans is not None and len(top.relevant_spans) == 1
    span = top.relevant_spans[0]
    assert DOCS[1][span.start : span.end] == "reset"
    assert reply.results[-1].relevant_spans is None  # no span found: the field is left out
    plain = client.rerank(model="m", query="reset", documents=DOCS, relevant_spans={"mode": "disabled"})
    assert all(r.relevant_spans is None for r in plain.results)


def test_token_knobs(client: cohere.ClientV2) -> None:
    reply = client.rerank(
        model="m",
        query="q",
        documents=["a"] * 150,
        request_options=knobs(
            **{"x-fake-prompt-tokens": "42", "x-fake-completion-tokens": "3", "x-fake-cached-tokens": "7"}
        ),
    )
    assert reply.meta is not None and reply.meta.tokens is not None and reply.meta.billed_units is not None
    assert (reply.meta.tokens.input_tokens, reply.meta.tokens.output_tokens) == (42, 3)
    assert reply.meta.cached_tokens == 7
    assert reply.meta.billed_units.search_units == 2  # 150 documents: two search units


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, cohere.BadRequestError),
        (401, cohere.UnauthorizedError),
        (404, cohere.NotFoundError),
        (429, cohere.TooManyRequestsError),
        (500, cohere.InternalServerError),
        (503, cohere.ServiceUnavailableError),
    ],
)
def test_status_knob_answers_in_cohere_shape(
    client: cohere.ClientV2, status: int, error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        client.rerank(
            model="m", query="q", documents=["a"], request_options=knobs(**{"x-fake-status": str(status)})
        )
    assert raised.value.status_code == status
    assert set(raised.value.body) == {"id", "message"}
    assert raised.value.body["message"] == f"fake error: status {status}"


def test_error_body_knob(client: cohere.ClientV2) -> None:
    custom = knobs(**{"x-fake-status": "422", "x-fake-error-body": '{"message": "bad documents"}'})
    with pytest.raises(cohere.UnprocessableEntityError) as raised:
        client.rerank(model="m", query="q", documents=["a"], request_options=custom)
    assert raised.value.body == {"message": "bad documents"}
    text = knobs(**{"x-fake-status": "502", "x-fake-error-body": "Bad Gateway"})
    with pytest.raises(cohere.core.ApiError) as raised:
        client.rerank(model="m", query="q", documents=["a"], request_options=text)
    assert (raised.value.status_code, raised.value.body) == (502, "Bad Gateway")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "m", "query": "q", "documents": []}, "documents must not be empty"),
        ({"model": "m", "query": "q", "documents": [{"text": "a"}]}, "documents must be a list of strings"),
        ({"model": "", "query": "q", "documents": ["a"]}, "model must be a non-empty string"),
        ({"model": "m", "documents": ["a"]}, "query must be a non-empty string"),
        ({"model": "m", "query": "q", "documents": ["a"], "top_n": 0}, "top_n must be a positive integer"),
        ({"model": "m", "query": "q", "documents": ["a"], "relevant_spans": {"mode": "x"}}, "relevant_spans"),
    ],
)
def test_invalid_requests_get_400(fake: FakeProviderThread, body: dict, message: str) -> None:
    reply = httpx.post(fake.base_url + "/v2/rerank", json=body)
    assert reply.status_code == 400
    assert set(reply.json()) == {"id", "message"} and message in reply.json()["message"]
    broken = httpx.post(fake.base_url + "/v2/rerank", content=b"{not json")
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["message"]


def test_drop_after_truncates_the_body(client: cohere.ClientV2, fake: FakeProviderThread) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        client.rerank(
            model="m", query="q", documents=["a"], request_options=knobs(**{"x-fake-drop-after": "10"})
        )
    assert fake.streams_dropped == 1


def test_async_client(fake: FakeProviderThread) -> None:
    async def main() -> list[int]:
        client = cohere.AsyncClientV2(api_key="co-key", base_url=fake.base_url)
        reply = await client.rerank(model="m", query=QUERY, documents=DOCS, top_n=1, request_options=NO_RETRY)
        return [r.index for r in reply.results]

    assert asyncio.run(main()) == [1]
