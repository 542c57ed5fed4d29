"""Filters and the chain that runs them; built once per config, not per request."""

from __future__ import annotations

from sluicegate.core.context import RequestContext


class Filter:
    """A step on the request's way; implement only the hooks you need."""

    async def on_request(self, ctx: RequestContext) -> None:
        """Before the upstream call; raise GatewayError to answer now."""

    def on_complete(self, ctx: RequestContext) -> None:
        """After the response went out (or failed); usage is on ctx when known."""


class FilterChain:
    """Runs each hook over the filters that implement it, in order."""

    def __init__(self, filters: list[Filter]) -> None:
        self.filters = filters
        # the filters with an on_request hook, in order (endpoints/proxy.py awaits each)
        self.request_filters = [f for f in filters if type(f).on_request is not Filter.on_request]
        # the filters with an on_complete hook, in reverse order (the way back)
        self._on_complete = [f for f in reversed(filters) if type(f).on_complete is not Filter.on_complete]

    def on_complete(self, ctx: RequestContext) -> None:
        """Run on_complete hooks in reverse order (the way back)."""
        for f in self._on_complete:
            f.on_complete(ctx)
