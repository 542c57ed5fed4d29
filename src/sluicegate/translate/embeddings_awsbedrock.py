"""OpenAI embeddings client API -> Amazon Titan text embeddings on AWS Bedrock InvokeModel.

Titan embeds one text per call: `input` must be a string or a list of one string. `dimensions` goes
through (Titan v2 takes 256, 512 or 1024); `encoding_format: base64` is honoured by packing the floats
as little-endian float32, as OpenAI does.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.translate import converse as cv
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps, upstream_json_object


def titan_input(body: dict[str, Any]) -> str:
    """The one text to embed, or a 422/400 saying why the input cannot go to Titan."""
    value = body.get("input")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) > 1 and all(isinstance(v, str) for v in value):
        raise cv.unprocessable(
            f"Amazon Titan embeds one text per request; this request has {len(value)}. "
            "Send one input per request.",
            "input",
        )
    if isinstance(value, list) and value and all(isinstance(v, (int, list)) for v in value):
        raise cv.unprocessable("Amazon Titan takes text, not token arrays.", "input")
    raise GatewayError(400, "'input' must be a string or a list of one string.", param="input")


class EmbeddingsToAWSBedrock:
    """`/v1/embeddings` -> `/model/{id}/invoke` with `{"inputText": ...}`."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.response_model = ref.model_name_override or ctx.model
        self._base64 = False
        self._parts: list[bytes] = []

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """POST /model/{id}/invoke."""
        body = ctx.body or {}
        titan: dict[str, Any] = {"inputText": titan_input(body)}
        if body.get("dimensions") is not None:
            titan["dimensions"] = body["dimensions"]
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise GatewayError(400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
        self._base64 = encoding == "base64"
        titan = apply_body_mutation(titan, self.ref)
        headers = [("content-type", "application/json"), ("accept", "application/json")]
        return UpstreamRequest("POST", cv.model_target(self.response_model, "invoke"), headers, dumps(titan))

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Upstream headers as they are."""
        return headers

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """Titan's `{"embedding", "inputTextTokenCount"}` as an OpenAI embedding list."""
        self._parts.append(chunk)
        if not end:
            return b"", None
        titan = upstream_json_object(b"".join(self._parts), "AWS Bedrock")
        vector = titan.get("embedding")
        if not isinstance(vector, list):
            raise GatewayError(502, "AWS Bedrock answered without an embedding.")
        embedding: Any = vector
        if self._base64:
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        tokens = titan.get("inputTextTokenCount") or 0
        reply = {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
            "model": self.response_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return dumps(reply), Usage(input_tokens=tokens, total_tokens=tokens)

    def error(self, status: int, body: bytes) -> bytes:
        """A Bedrock error in OpenAI's error envelope."""
        return GatewayError(status, cv.error_message(status, body)).openai_body()
