"""The gateway's request handler: which endpoint is this, and what went wrong in its API's words."""

from __future__ import annotations

import logging

from sluicegate.config.runtime import RuntimeConfig
from sluicegate.core.context import ClientWriter, Request, RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.endpoints import chat_completions, completions, embeddings
from sluicegate.endpoints.models import list_models
from sluicegate.endpoints.proxy import EndpointSpec, proxy
from sluicegate.filters.chain import FilterChain
from sluicegate.filters.route_match import RouteMatch
from sluicegate.upstream.forward import Forwarder
from sluicegate.upstream.pool import Pools

log = logging.getLogger("sluicegate.gateway")

JSON = [(b"content-type", b"application/json")]
LLM_ENDPOINTS: dict[str, EndpointSpec] = {
    spec.path: spec for spec in (chat_completions.SPEC, completions.SPEC, embeddings.SPEC)
}


class Gateway:
    """Holds the current config and what is built from it; `handle` answers one request."""

    def __init__(self, config: RuntimeConfig, pools: Pools) -> None:
        self.pools = pools
        self.use(config)

    def use(self, config: RuntimeConfig) -> None:
        """Switch to a new config; requests in flight finish on the one they started with."""
        self.config = config
        self.chain = FilterChain([RouteMatch(config)])
        self.forwarder = Forwarder(config, self.pools)

    async def handle(self, request: Request, client: ClientWriter) -> None:
        """Dispatch on path; every failure becomes an error in the client API's format."""
        spec = LLM_ENDPOINTS.get(request.path)
        if spec is None:
            self._serve_other(request, client)
            return
        if request.method != "POST":
            _method_not_allowed(request, client, "POST")
            return
        ctx = RequestContext(request, spec.operation)
        chain = self.chain
        try:
            await proxy(ctx, spec, self, client)
        except GatewayError as exc:
            ctx.status, ctx.error = exc.status, exc.message
            if client.started:
                raise ConnectionAbortedError(exc.message) from exc
            client.send(exc.status, [*JSON, *exc.headers, *ctx.response_headers], exc.body(spec.api))
        finally:
            chain.on_complete(ctx)

    def _serve_other(self, request: Request, client: ClientWriter) -> None:
        if request.path == "/v1/models":
            if request.method != "GET":
                _method_not_allowed(request, client, "GET")
                return
            client.send(200, JSON, list_models(self.config, request.headers.get("host", "")))
            return
        error = GatewayError(404, f"Unknown endpoint {request.method} {request.path}.", code="unknown_url")
        client.send(404, JSON, error.openai_body())

    def render_error(self, request: Request | None, status: int, message: str) -> tuple[list, bytes]:
        """Errors the server answers before a handler runs (413, 400, 408, 431), in the endpoint's format."""
        code = {413: "request_too_large", 408: "request_timeout", 431: "headers_too_large"}.get(status)
        spec = LLM_ENDPOINTS.get(request.path) if request is not None else None
        return JSON, GatewayError(status, message, code=code).body(spec.api if spec else "openai")


def _method_not_allowed(request: Request, client: ClientWriter, allowed: str) -> None:
    message = f"Method {request.method} is not allowed on {request.path}; use {allowed}."
    client.send(405, [*JSON, (b"allow", allowed.encode())], GatewayError(405, message).openai_body())
