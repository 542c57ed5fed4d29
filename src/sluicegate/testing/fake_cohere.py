"""Cohere Rerank v2 for the fake provider: POST `.../rerank`, scores by word overlap with the query.

Knobs honoured: x-fake-delay-ms (before answering), x-fake-status / x-fake-error-body (an error in
Cohere's `{"id", "message"}` shape), x-fake-prompt-tokens / x-fake-completion-tokens /
x-fake-cached-tokens (`meta.tokens` and `meta.cached_tokens`), x-fake-drop-after (headers and that
many body bytes, then the connection closes). Streaming knobs and x-fake-reply do not apply.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from sluicegate.testing.dialects import Dialect
from sluicegate.testing.knobs import Knobs

if TYPE_CHECKING:
    from sluicegate.testing.fake_provider import FakeProvider

_JSON = "application/json"
_WORDS = re.compile(r"\w+")
_DOCS_PER_SEARCH_UNIT = 100  # Cohere bills one search unit per query and up to 100 documents
DEFAULT_SPAN_THRESHOLD = 0.1


class _Invalid(Exception):
    """A request the fake answers with a 400 in Cohere's error shape."""


def error_body(message: str) -> bytes:
    """Cohere's v2 error body."""
    return orjson.dumps({"id": str(uuid.uuid4()), "message": message})


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(message), content_type=_JSON)


def status_error(knobs: Knobs) -> web.Response:
    """The answer to x-fake-status: x-fake-error-body as given, else a Cohere error."""
    status = knobs.status or 500
    if knobs.error_body is None:
        return _error(status, f"fake error: status {status}")
    raw = knobs.error_body
    try:
        orjson.loads(raw)
        content_type = _JSON
    except orjson.JSONDecodeError:
        content_type = "text/plain"
    return web.Response(status=status, body=raw.encode(), content_type=content_type)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(text)]


def _optional_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _Invalid(f"invalid request: {name} must be a positive integer")
    return value


def _parse(data: Any) -> tuple[str, str, list[str], int | None, int | None, dict[str, Any] | None]:
    """model, query, documents, top_n, max_tokens_per_doc and relevant_spans of a valid request."""
    if not isinstance(data, dict):
        raise _Invalid("invalid request: the body must be a JSON object")
    model, query, documents = data.get("model"), data.get("query"), data.get("documents")
    if not isinstance(model, str) or not model:
        raise _Invalid("invalid request: model must be a non-empty string")
    if not isinstance(query, str) or not query:
        raise _Invalid("invalid request: query must be a non-empty string")
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise _Invalid("invalid request: documents must be a list of strings")
    if not documents:
        raise _Invalid("invalid request: documents must not be empty")
    spans = data.get("relevant_spans")
    if spans is not None and not (isinstance(spans, dict) and spans.get("mode") in ("enabled", "disabled")):
        raise _Invalid('invalid request: relevant_spans.mode must be "enabled" or "disabled"')
    enabled = spans if spans is not None and spans["mode"] == "enabled" else None
    return (
        model,
        query,
        documents,
        _optional_int(data, "top_n"),
        _optional_int(data, "max_tokens_per_doc"),
        enabled,
    )


def score(query_words: set[str], document: str, max_tokens: int | None = None) -> float:
    """The share of distinct query words found in the document's first `max_tokens` words."""
    if not query_words:
        return 0.0
    words = _words(document)
    if max_tokens is not None:
        words = words[:max_tokens]
    return round(len(query_words.intersection(words)) / len(query_words), 6)


def _spans(query_words: set[str], document: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """One span per occurrence of a query word (score 1.0), in document order."""
    threshold = options.get("threshold", DEFAULT_SPAN_THRESHOLD)
    if isinstance(threshold, int | float) and threshold > 1.0:
        return []
    spans = [
        {"start": m.start(), "end": m.end(), "score": 1.0}
        for m in _WORDS.finditer(document)
        if m.group().lower() in query_words
    ]
    limit = options.get("max_spans")
    return spans[:limit] if isinstance(limit, int) and limit >= 0 else spans


def rerank(data: Any, knobs: Knobs) -> bytes:
    """The response body for a rerank request (raises _Invalid)."""
    _, query, documents, top_n, max_tokens, spans = _parse(data)
    query_words = set(_words(query))
    scored = sorted(
        ((score(query_words, doc, max_tokens), i) for i, doc in enumerate(documents)),
        key=lambda pair: (-pair[0], pair[1]),
    )
    results = []
    for relevance, index in scored[:top_n]:
        result: dict[str, Any] = {"index": index, "relevance_score": relevance}
        if spans is not None and (found := _spans(query_words, documents[index], spans)):
            result["relevant_spans"] = found
        results.append(result)
    words = len(_words(query)) * len(documents) + sum(len(_words(doc)) for doc in documents)
    input_tokens = knobs.prompt_tokens if knobs.prompt_tokens is not None else max(words, 1)
    meta: dict[str, Any] = {
        "api_version": {"version": "2", "is_experimental": False},
        "billed_units": {"search_units": -(-len(documents) // _DOCS_PER_SEARCH_UNIT)},
        "tokens": {"input_tokens": input_tokens, "output_tokens": knobs.completion_tokens or 0},
    }
    if knobs.cached_tokens:
        meta["cached_tokens"] = knobs.cached_tokens
    return orjson.dumps({"id": str(uuid.uuid4()), "results": results, "meta": meta})


async def _truncated(
    provider: FakeProvider, request: web.BaseRequest, body: bytes, drop_after: int
) -> web.StreamResponse:
    """Headers with the full Content-Length, then only `drop_after` bytes, then a closed connection."""
    resp = web.StreamResponse()
    resp.content_type = _JSON
    resp.content_length = len(body)
    try:
        await resp.prepare(request)
        await resp.write(body[:drop_after])
    except ConnectionError:
        return resp
    if request.transport is not None:
        request.transport.close()
    provider.streams_dropped += 1
    return resp


async def handle(
    provider: FakeProvider, request: web.BaseRequest, body: bytes, knobs: Knobs
) -> web.StreamResponse:
    """Answer one rerank request."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "invalid request: the body is not valid JSON")
    try:
        answer = rerank(data, knobs)
    except _Invalid as exc:
        return _error(400, str(exc))
    if knobs.drop_after is not None:
        return await _truncated(provider, request, answer, knobs.drop_after)
    return web.Response(body=answer, content_type=_JSON)


def matches(method: str, path: str) -> bool:
    """POST to any path ending in /rerank (e.g. /v2/rerank)."""
    return method == "POST" and path.endswith("/rerank")


DIALECT = Dialect("cohere", matches, handle, status_error)
