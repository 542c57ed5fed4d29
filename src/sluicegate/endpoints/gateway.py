"""The gateway's request handler: which endpoint is this, and what went wrong in its API's words."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from sluicegate.config.runtime import RuntimeConfig
from sluicegate.core.context import ClientWriter, Request, RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.endpoints import (
    anthropic_count_tokens,
    anthropic_messages,
    chat_completions,
    cohere_rerank,
    completions,
    embeddings,
)
from sluicegate.endpoints.models import list_models
from sluicegate.endpoints.proxy import JSON, EndpointSpec, proxy
from sluicegate.filters.chain import Filter, FilterChain
from sluicegate.filters.costs import Costs
from sluicegate.filters.guardrails import Guardrails
from sluicegate.filters.observe import observe_filters, observe_upstream
from sluicegate.filters.rate_limit import RateLimit
from sluicegate.filters.route_match import RouteMatch
from sluicegate.ratelimit.stores import Stores, open_stores
from sluicegate.upstream.active_health import ActiveHealthChecks
from sluicegate.upstream.forward import Forwarder
from sluicegate.upstream.pool import Pools

log = logging.getLogger("sluicegate.gateway")

LLM_ENDPOINTS: dict[str, EndpointSpec] = {
    spec.path: spec for spec in (chat_completions.SPEC, completions.SPEC, embeddings.SPEC, cohere_rerank.SPEC)
}
LLM_ENDPOINTS.update({spec.path: spec for spec in (*anthropic_messages.SPECS, *anthropic_count_tokens.SPECS)})


class Gateway:
    """Holds the current config and what is built from it; `handle` answers one request."""

    def __init__(self, config: RuntimeConfig, pools: Pools, stores: Stores | None = None) -> None:
        self.pools = pools
        self.stores = stores if stores is not None else open_stores(None)  # kept across reloads
        self.health_checks: ActiveHealthChecks | None = None
        self.use(config)

    def use(self, config: RuntimeConfig) -> None:
        """Switch to a new config; requests in flight finish on the one they started with."""
        self.config = config
        # observability first: its on_complete runs last, after costs and the rate-limit charge
        filters: list[Filter] = [*observe_filters(config), RouteMatch(config)]
        if config.rate_limits.rules:
            filters.append(RateLimit(config, self.stores))
        if config.rate_limits.rules or config.costs.by_route or config.costs.global_costs:
            filters.append(Costs(config))  # after RateLimit: its on_complete runs first, on the way back
        if config.guardrails:
            filters.append(Guardrails(config, self.pools))
        self.chain = FilterChain(filters)
        self.forwarder = Forwarder(config, self.pools)
        observe_upstream(self.pools)
        if self.health_checks is not None:
            self.health_checks.stop()  # the old config's probes; the new config starts its own
        self.health_checks = ActiveHealthChecks(config, self.pools)
        self.health_checks.start()

    def handle(self, request: Request, client: ClientWriter) -> Awaitable[None]:
        """Dispatch on path: an LLM endpoint's way (endpoints/proxy.py), else a small answer of our own."""
        spec = LLM_ENDPOINTS.get(request.path)
        if spec is None:
            return self._serve_other(request, client)
        if request.method != "POST":
            return _method_not_allowed(request, client, "POST", spec.api)
        # proxy's coroutine itself, for the server to await: one coroutine level less on every request;
        # this config's chain and forwarder, so that a reload mid-request does not mix two configs
        return proxy(RequestContext(request, spec.operation), spec, self.chain, self.forwarder, client)

    async def _serve_other(self, request: Request, client: ClientWriter) -> None:
        if request.path == "/v1/models":
            if request.method != "GET":
                await _method_not_allowed(request, client, "GET")
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


async def _method_not_allowed(
    request: Request, client: ClientWriter, allowed: str, api: str = "openai"
) -> None:
    message = f"Method {request.method} is not allowed on {request.path}; use {allowed}."
    client.send(405, [*JSON, (b"allow", allowed.encode())], GatewayError(405, message).body(api))
