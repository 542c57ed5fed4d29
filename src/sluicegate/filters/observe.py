"""Observability filters: metrics and the access log on completion; a trace around the request when on."""

from __future__ import annotations

import logging
import time
from typing import Any

from sluicegate.config.runtime import BackendRef, RuntimeConfig
from sluicegate.core.context import RequestContext
from sluicegate.filters.chain import Filter
from sluicegate.observability import state
from sluicegate.observability.access_log import AccessLog, entry
from sluicegate.observability.metrics import PROVIDER_NAMES, Metrics

log = logging.getLogger("sluicegate.observability")


def provider_name(ref: BackendRef | None) -> str:
    """gen_ai.provider.name of a backend (openai, azure.openai, aws.bedrock, ...)."""
    if ref is None:
        return ""
    schema = ref.backend.schema.name
    return PROVIDER_NAMES.get(schema, schema.lower())


def rate_limited_routes(config: RuntimeConfig) -> frozenset[str]:
    """Routes some rate-limit rule or quota may apply to (whose decisions are counted)."""
    out = set()
    for rule in config.rules:
        backends = {ref.backend.name for ref in rule.backend_refs}
        for limit in config.rate_limits.rules:
            if (limit.backend in backends) if limit.backend is not None else limit.applies_to(rule.route):
                out.add(rule.route)
                break
    return frozenset(out)


class Observe(Filter):
    """Records metrics and writes the access-log line; listed first, so its on_complete runs last."""

    def __init__(self, metrics: Metrics, access: AccessLog | None) -> None:
        self.metrics = metrics
        self.access = access
        self._failed = False

    def on_complete(self, ctx: RequestContext) -> None:
        """Record the finished request; a failure here is logged once, never raised into the response."""
        now = time.monotonic()
        try:
            provider = self.metrics.record(ctx, now)  # the provider name, looked up with the series
            if self.access is not None:
                self.access.write(entry(ctx, provider, now))
        except Exception:
            if not self._failed:
                self._failed = True
                log.exception("recording a request's metrics or access log failed")


class Trace(Filter):
    """Opens the request's server span before anything else and closes it after everything else."""

    def __init__(self, tracing: Any) -> None:
        self.tracing = tracing

    async def on_request(self, ctx: RequestContext) -> None:
        """Start the server span (continuing the client's traceparent)."""
        ctx.trace = self.tracing.start(ctx)

    def on_complete(self, ctx: RequestContext) -> None:
        """End the attempt and server spans."""
        trace = ctx.trace
        if trace is not None:
            ctx.trace = None
            try:
                trace.finish(ctx)
            except Exception:
                log.exception("ending a request's trace failed")


def observe_filters(config: RuntimeConfig) -> list[Filter]:
    """The observability filters for a config, to put first in the chain."""
    metrics = state.metrics()
    metrics.limited_routes = rate_limited_routes(config)
    filters: list[Filter] = [Observe(metrics, state.access_log())]
    tracing = state.tracing(provider_name)
    if tracing is not None:
        filters.append(Trace(tracing))
    return filters


def observe_upstream(pools: Any) -> None:
    """Point the scrape-time connection gauges at the live pools."""
    collector = state.collector()
    collector.pools = pools
    access = state.access_log()
    collector.access_logs = [access] if access is not None else []
