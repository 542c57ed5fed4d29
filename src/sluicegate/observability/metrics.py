"""Prometheus metrics: the GenAI semantic conventions (as Envoy AI Gateway names them) and the gateway's own.

Recording a request costs a few dict look-ups: the labelled children of each label combination are
cached, so `.labels()` (which builds and hashes a label dict) runs once per combination, not per request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sluicegate.core.context import RequestContext

# Powers of 4 for token counts, doubling 0.01 .. 81.92 s for request durations (semconv advice).
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# AIServiceBackend schema -> gen_ai.provider.name (the values Envoy AI Gateway reports).
PROVIDER_NAMES = {
    "OpenAI": "openai",
    "AzureOpenAI": "azure.openai",
    "AWSBedrock": "aws.bedrock",
    "AWSAnthropic": "aws.anthropic",
    "GCPVertexAI": "gcp.vertex_ai",
    "GCPAnthropic": "gcp.anthropic",
    "Anthropic": "anthropic",
    "Cohere": "cohere",
}
GENAI_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_original_model",
    "gen_ai_request_model",
    "gen_ai_response_model",
)
TOKEN_TYPES = ("input", "output", "cached_input", "cache_creation_input", "reasoning")
OTHER = "_other"  # a header label's value once the cap on distinct values is reached
MAX_CACHED = 20_000  # label combinations whose children are kept; beyond, children are looked up each time


@dataclass(frozen=True, slots=True)
class HeaderLabel:
    """A request header recorded as a label on the GenAI metrics, with a cap on its distinct values."""

    header: str  # lower-cased request header name
    label: str  # Prometheus label name
    max_values: int = 100


def parse_header_labels(spec: str, max_values: int = 100) -> tuple[HeaderLabel, ...]:
    """`x-tenant-id:tenant,x-team` -> header labels (the label defaults to the header, `-` as `_`)."""
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        header, _, label = item.partition(":")
        header = header.strip().lower()
        label = (label.strip() or header).replace("-", "_").replace(".", "_")
        if not header or not label.replace("_", "a").isalnum() or label[0].isdigit():
            raise ValueError(f"bad header label mapping {item!r}; expected header-name[:label_name]")
        out.append(HeaderLabel(header, label, max_values))
    return tuple(out)


class _GenAIChildren:
    """The labelled children of one GenAI label combination."""

    __slots__ = ("base", "duration", "extra", "metrics", "tokens", "tpot", "ttft")

    def __init__(self, metrics: Metrics, values: tuple[str, ...]) -> None:
        base, error_type, extra = values[:5], values[5], values[6:]
        self.metrics, self.base, self.extra = metrics, base, extra
        self.tokens: list[Any] = [None] * len(TOKEN_TYPES)  # made on first use: no all-zero series
        self.duration = metrics.request_duration.labels(*base, error_type, *extra)
        self.ttft = metrics.ttft.labels(*base, *extra)
        self.tpot = metrics.tpot.labels(*base, *extra)

    def token(self, index: int) -> Any:
        """The token-usage child of TOKEN_TYPES[index]."""
        child = self.tokens[index]
        if child is None:
            child = self.tokens[index] = self.metrics.token_usage.labels(
                *self.base, TOKEN_TYPES[index], *self.extra
            )
        return child


class _OwnChildren:
    """The labelled children of one (route, backend, status) combination."""

    __slots__ = ("overhead", "requests")

    def __init__(self, metrics: Metrics, route: str, backend: str, status: str) -> None:
        self.requests = metrics.requests.labels(route, backend, status)
        self.overhead = metrics.overhead.labels(route, backend)


class Metrics:
    """Every metric the data plane records; one per process (registered once)."""

    def __init__(
        self, registry: CollectorRegistry = REGISTRY, header_labels: Sequence[HeaderLabel] = ()
    ) -> None:
        self.header_labels = tuple(header_labels)
        extra = tuple(h.label for h in self.header_labels)
        self._seen: list[set[str]] = [set() for _ in self.header_labels]
        reg = registry
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request (gen_ai.client.token.usage), by gen_ai_token_type.",
            [*GENAI_LABELS, "gen_ai_token_type", *extra],
            buckets=TOKEN_BUCKETS,
            registry=reg,
        )
        self.request_duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from request to the end of the response (gen_ai.server.request.duration).",
            [*GENAI_LABELS, "error_type", *extra],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed chunk sent to the client (gen_ai.server.time_to_first_token).",
            [*GENAI_LABELS, *extra],
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "(duration - time to first token) / (output tokens - 1), streams only.",
            [*GENAI_LABELS, *extra],
            buckets=TPOT_BUCKETS,
            registry=reg,
        )
        self.requests = Counter(
            "sluicegate_requests",
            "LLM requests answered, by route, backend and status code.",
            ["route", "backend", "status"],
            registry=reg,
        )
        self.ratelimit = Counter(
            "sluicegate_ratelimit_decisions",
            "Rate-limit checks, by route and decision: allowed, limited (429), unavailable (503).",
            ["route", "decision"],
            registry=reg,
        )
        self.costs = Counter(
            "sluicegate_llm_request_cost",
            "Sum of each llmRequestCosts metadataKey, by route and request model.",
            ["route", "model", "key"],
            registry=reg,
        )
        self.overhead = Histogram(
            "sluicegate_overhead_seconds",
            "Time the gateway itself adds: request duration minus time spent waiting on the upstream.",
            ["route", "backend"],
            buckets=OVERHEAD_BUCKETS,
            registry=reg,
        )
        self._genai: dict[tuple[str, ...], _GenAIChildren] = {}
        self._own: dict[tuple[str, str, str], _OwnChildren] = {}
        self._small: dict[tuple[Any, ...], Any] = {}
        self._costs: dict[tuple[str, str], dict[str, Any]] = {}  # (route, model) -> metadataKey -> child
        self.limited_routes: frozenset[str] = frozenset()  # routes with rate-limit rules (set per config)

    def _header_values(self, headers: dict[str, str]) -> tuple[str, ...]:
        """The header labels' values; a value beyond the cap of distinct ones counts as `_other`."""
        out = []
        for spec, seen in zip(self.header_labels, self._seen, strict=True):
            value = headers.get(spec.header, "")
            if value not in seen:
                if len(seen) >= spec.max_values:
                    value = OTHER
                else:
                    seen.add(value)
            out.append(value)
        return tuple(out)

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._small.get(key)
        if child is None:
            child = metric.labels(*values)
            if len(self._small) < MAX_CACHED:
                self._small[key] = child
        return child

    def record(self, ctx: RequestContext, now: float | None = None) -> None:
        """Record one finished LLM request."""
        end = time.monotonic() if now is None else now
        duration = end - ctx.started_at
        rule = ctx.rule
        ref = ctx.backend_ref
        route = rule.route if rule is not None else ""
        backend = ref.backend.name if ref is not None else ""
        status = ctx.status or 500
        failed = status >= 400 or bool(ctx.error)

        own_key = (route, backend, str(status))
        own = self._own.get(own_key)
        if own is None:
            own = _OwnChildren(self, *own_key)
            if len(self._own) < MAX_CACHED:
                self._own[own_key] = own
        own.requests.inc()
        own.overhead.observe(max(duration - ctx.upstream_seconds, 0.0))
        if route in self.limited_routes:
            decision = "allowed"
            if not ctx.attempts and status in (429, 503):
                decision = "limited" if status == 429 else "unavailable"
            self._child(self.ratelimit, route, decision).inc()

        if rule is None:
            original = request_model = ""  # no route took it: the client's model name is not a label
        else:
            original = ctx.model
            request_model = (ref.model_name_override if ref is not None else None) or original
        provider = PROVIDER_NAMES.get(ref.backend.schema.name, ref.backend.schema.name) if ref else ""
        key = (
            ctx.operation,
            provider,
            original,
            request_model,
            ctx.response_model or request_model,
            "_OTHER" if failed else "",
            *(self._header_values(ctx.request.headers) if self.header_labels else ()),
        )
        children = self._genai.get(key)
        if children is None:
            children = _GenAIChildren(self, key)
            if len(self._genai) < MAX_CACHED:
                self._genai[key] = children
        children.duration.observe(duration)
        usage = ctx.usage
        if usage is not None:
            tokens = children.tokens
            (tokens[0] or children.token(0)).observe(usage.input_tokens)
            (tokens[1] or children.token(1)).observe(usage.output_tokens)
            if usage.cached_input_tokens:
                (tokens[2] or children.token(2)).observe(usage.cached_input_tokens)
            if usage.cache_creation_input_tokens:
                (tokens[3] or children.token(3)).observe(usage.cache_creation_input_tokens)
            if usage.reasoning_tokens:
                (tokens[4] or children.token(4)).observe(usage.reasoning_tokens)
        if ctx.stream and ctx.first_byte_at and not failed:
            ttft = ctx.first_byte_at - ctx.started_at
            children.ttft.observe(ttft)
            if usage is not None and usage.output_tokens > 1:
                children.tpot.observe((duration - ttft) / (usage.output_tokens - 1))
        if ctx.costs:
            cost_children = self._costs.get((route, request_model))
            if cost_children is None:
                cost_children = self._costs[(route, request_model)] = {}
            for cost_key, cost in ctx.costs.items():
                child = cost_children.get(cost_key)
                if child is None:
                    child = cost_children[cost_key] = self.costs.labels(route, request_model, cost_key)
                child.inc(cost)


class GatewayCollector(Collector):
    """Scrape-time gauges read from the live gateway: upstream connections open and idle per endpoint."""

    def __init__(self) -> None:
        self.pools: Any = None  # upstream.pool.Pools
        self.access_logs: list[Any] = []  # observability.access_log.AccessLog, for lines dropped

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Yield the gauges; nothing here runs on the request path."""
        open_ = GaugeMetricFamily(
            "sluicegate_upstream_connections_open",
            "Upstream connections open (busy + idle).",
            labels=["endpoint"],
        )
        idle = GaugeMetricFamily(
            "sluicegate_upstream_connections_idle",
            "Idle keep-alive upstream connections.",
            labels=["endpoint"],
        )
        counts: dict[str, list[int]] = {}  # endpoint -> [open, idle]; pools differing in TLS files add up
        for name, pool in self._pools():
            idle_count = sum(1 for c in pool.idle if not c.closed)
            alive = sum(1 for c in getattr(pool, "connections", ()) if not c.closed)
            found = counts.setdefault(name, [0, 0])
            found[0] += max(alive, idle_count)
            found[1] += idle_count
        for name, (open_count, idle_count) in sorted(counts.items()):
            open_.add_metric([name], open_count)
            idle.add_metric([name], idle_count)
        yield open_
        yield idle
        dropped = CounterMetricFamily(
            "sluicegate_access_log_dropped",
            "Access-log lines dropped because the output did not keep up.",
        )
        dropped.add_metric([], sum(log.dropped for log in self.access_logs))
        yield dropped

    def _pools(self) -> Iterable[tuple[str, Any]]:
        pools = self.pools
        if pools is None:
            return ()
        return [(p.authority.decode(), p) for p in list(pools._pools.values())]
