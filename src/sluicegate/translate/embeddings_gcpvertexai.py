"""OpenAI embeddings -> Vertex AI text embeddings (`publishers/google/models/{m}:predict`)."""

from __future__ import annotations

import base64
import struct
from typing import Any

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.translate import gemini as g
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps, upstream_json_object


class EmbeddingsToGCPVertexAI:
    """instances[{content}] in, predictions[].embeddings.values out; base64 encoding done here."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.model = ref.model_name_override or ctx.model
        self.response_model = self.model
        self.base64 = (ctx.body or {}).get("encoding_format") == "base64"
        self._parts: list[bytes] = []

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The predict request."""
        body = apply_body_mutation(to_predict(ctx.body or {}), self.ref)
        target = g.model_target("google", self.model, "predict")
        return UpstreamRequest("POST", target, list(g.JSON_HEADERS), dumps(body))

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """JSON."""
        return g.with_content_type(headers, b"application/json")

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """The OpenAI embedding list once the body is complete."""
        self._parts.append(chunk)
        if not end:
            return b"", None
        response = upstream_json_object(b"".join(self._parts), "The Vertex AI backend")
        listing, tokens = to_openai(response, self.model, self.base64)
        return dumps(listing), Usage(input_tokens=tokens, total_tokens=tokens)

    def error(self, status: int, body: bytes) -> bytes:
        """Google's error in the OpenAI envelope."""
        return g.gemini_error(status, body, "openai")


def to_predict(body: dict[str, Any]) -> dict[str, Any]:
    """The predict body for an OpenAI embeddings body (Vertex's task_type, title, auto_truncate kept)."""
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise GatewayError(400, "'input' must be a string or a non-empty list of strings.", param="input")
    if not all(isinstance(t, str) for t in texts):
        raise GatewayError(
            422, "Vertex AI embeds text only; token-id inputs are not supported.", param="input"
        )
    instance: dict[str, Any] = {}
    for key in ("task_type", "title"):
        if isinstance(body.get(key), str):
            instance[key] = body[key]
    parameters: dict[str, Any] = {}
    dimensions = body.get("dimensions")
    if isinstance(dimensions, int) and dimensions > 0:
        parameters["outputDimensionality"] = dimensions
    if isinstance(body.get("auto_truncate"), bool):
        parameters["autoTruncate"] = body["auto_truncate"]
    predict: dict[str, Any] = {"instances": [{"content": text, **instance} for text in texts]}
    if parameters:
        predict["parameters"] = parameters
    return predict


def to_openai(response: Any, model: str, as_base64: bool) -> tuple[dict[str, Any], int]:
    """The OpenAI `list` of embeddings for a predict response, and the tokens Vertex counted."""
    predictions = response.get("predictions") if isinstance(response, dict) else None
    if not isinstance(predictions, list):
        raise GatewayError(502, "The Vertex AI backend answered without predictions.")
    data, tokens = [], 0
    for i, prediction in enumerate(predictions):
        embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
        embeddings = embeddings if isinstance(embeddings, dict) else {}
        values = embeddings.get("values") or []
        stats = embeddings.get("statistics") or {}
        tokens += int(stats.get("token_count") or 0)
        vector: Any = values
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}, tokens
