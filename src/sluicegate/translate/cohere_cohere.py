"""Cohere Rerank v2 client API -> Cohere-schema backend: passthrough-first, as Envoy AI Gateway does."""

from __future__ import annotations

from typing import Any

import orjson

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.usage import Usage
from sluicegate.translate.base import UpstreamRequest, dumps, mutated_body

DEFAULT_VERSION = "v2"


def _count(value: Any) -> int:
    """A token count as Cohere reports it (a float, or null) as an int, rounded down."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0


def rerank_usage(meta: Any) -> Usage | None:
    """Usage from a rerank response's `meta`: `tokens` first, else the `billed_units` token counts."""
    if not isinstance(meta, dict):
        return None
    counts = meta.get("tokens")
    if not isinstance(counts, dict) or not counts:
        counts = meta.get("billed_units")
    if not isinstance(counts, dict):
        return None
    has_tokens = "input_tokens" in counts or "output_tokens" in counts
    if not has_tokens and "cached_tokens" not in meta:
        return None
    input_tokens, output_tokens = _count(counts.get("input_tokens")), _count(counts.get("output_tokens"))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        cached_input_tokens=_count(meta.get("cached_tokens")),
    )


def cohere_error(message: str) -> bytes:
    """Cohere's v2 error body."""
    return dumps({"message": message})


class CohereToCohere:
    """The body goes to `/{version}/rerank` untouched unless the model is overridden or the body mutated."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        version = (ref.backend.schema.version or DEFAULT_VERSION).strip("/")
        self.target = f"/{version}/rerank" if version else "/rerank"
        # Rerank responses do not name a model: report the one the request went out with.
        self.response_model = ref.model_name_override or ctx.model
        self._parts: list[bytes] = []

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """Forward the client's JSON, re-serialized only when something changed."""
        body = mutated_body(ctx, self.ref)
        raw = ctx.request.body if body is None else dumps(body)
        return UpstreamRequest("POST", self.target, [("content-type", "application/json")], raw)

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Upstream headers as they are."""
        return headers

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """Pass bytes through as they come; read usage from `meta` once the body is whole."""
        if not end:
            self._parts.append(chunk)
            return chunk, None
        body = b"".join((*self._parts, chunk)) if self._parts else chunk
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return chunk, None
        return chunk, rerank_usage(parsed.get("meta")) if isinstance(parsed, dict) else None

    def error(self, status: int, body: bytes) -> bytes:
        """JSON errors pass through; anything else is wrapped as `{"message": ...}`."""
        try:
            orjson.loads(body)
            return body
        except orjson.JSONDecodeError:
            text = body.decode("utf-8", "replace").strip()[:1000]
            return cohere_error(text or f"upstream returned status {status}")
