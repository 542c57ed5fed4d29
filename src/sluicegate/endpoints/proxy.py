"""The way of an LLM request, top to bottom: parse once, filters, forward, filters on the way back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from sluicegate.core.context import ClientWriter, RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.upstream.forward import TranslatorFactory

if TYPE_CHECKING:
    from sluicegate.filters.chain import FilterChain
    from sluicegate.upstream.forward import Forwarder


JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """A client API endpoint: its path, operation name and a translator per backend schema."""

    path: str
    operation: str  # chat | completion | embeddings
    translators: dict[str, TranslatorFactory] = field(default_factory=dict)
    streams: bool = True  # whether `"stream": true` is meaningful here
    api: str = "openai"  # the client API, which decides the error format: openai | anthropic


def parse_body(raw: bytes) -> dict:
    """The JSON object of the request body, or a 400 saying what is wrong with it."""
    if not raw:
        raise GatewayError(400, "The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.")
    return body


async def proxy(
    ctx: RequestContext, spec: EndpointSpec, chain: FilterChain, forwarder: Forwarder, client: ClientWriter
) -> None:
    """Answer one LLM API request through the filter chain and a backend (both of one config); every
    failure becomes an error in the client API's format."""
    try:
        ctx.body = body = parse_body(ctx.request.body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            message = "The request body must name a model: a non-empty string field `model`."
            raise GatewayError(400, message, param="model")
        ctx.model = model
        ctx.stream = spec.streams and body.get("stream") is True
        for f in chain.request_filters:  # the chain's hooks awaited here: a coroutine level less each
            await f.on_request(ctx)
        await forwarder.forward(ctx, spec.translators, client, spec.api)
    except GatewayError as exc:
        ctx.status, ctx.error = exc.status, exc.message
        if client.started:
            raise ConnectionAbortedError(exc.message) from exc
        client.send(exc.status, [*JSON, *exc.headers, *ctx.response_headers], exc.body(spec.api))
    finally:
        chain.on_complete(ctx)
