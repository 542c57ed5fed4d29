"""Costs: ask for stream usage when costs need it; compute each llmRequestCosts entry once, at completion."""

from __future__ import annotations

from sluicegate.config.runtime import RuntimeConfig
from sluicegate.core.context import RequestContext
from sluicegate.filters.chain import Filter
from sluicegate.ratelimit.costs import RequestCost, compute_costs


def routes_needing_usage(config: RuntimeConfig) -> frozenset[str]:
    """Routes whose requests have a cost that comes from token usage (llmRequestCosts or a QuotaPolicy)."""
    routes = {rule.route for rule in config.rules if config.costs.for_route(rule.route)}
    quota_backends = {r.backend for r in config.rate_limits.rules if r.backend is not None}
    for rule in config.rules:
        if any(ref.backend.name in quota_backends for ref in rule.backend_refs):
            routes.add(rule.route)
    return frozenset(routes)


def wants_usage(body: dict | None) -> bool:
    """Whether the client asked for the usage chunk of a stream itself."""
    options = (body or {}).get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class Costs(Filter):
    """Fills ctx.costs (metadataKey -> cost) from the final usage, for rate limits, logs and metrics."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.costs: dict[str, tuple[RequestCost, ...]] = {
            rule.route: config.costs.for_route(rule.route) for rule in config.rules
        }
        self.needs_usage = routes_needing_usage(config)

    async def on_request(self, ctx: RequestContext) -> None:
        """A stream whose cost needs usage gets it from the backend even if the client did not ask."""
        if ctx.stream and ctx.rule is not None and ctx.rule.route in self.needs_usage:
            ctx.force_usage = not wants_usage(ctx.body)

    def on_complete(self, ctx: RequestContext) -> None:
        """Compute the costs once, from the usage of the whole response (streams included)."""
        if ctx.usage is None or ctx.rule is None:
            return
        costs = self.costs.get(ctx.rule.route)
        if costs:
            backend = ctx.backend_ref.backend.name if ctx.backend_ref is not None else ""
            ctx.costs = compute_costs(costs, ctx.usage, ctx.model, backend, ctx.rule.route)
