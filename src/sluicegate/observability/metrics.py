"""Prometheus metrics: the GenAI semantic conventions (as Envoy AI Gateway names them) and the gateway's own.

Recording a request adds to plain Python numbers: each series is a list of per-bucket counts and a sum
(histograms) or a one-item list (counters), found through a dict per label combination and never
locked: requests finish on the event loop's one thread, and a scrape (on the loop, or the OTLP
exporter's thread, under the GIL) only reads. `_Collector` turns them into metric families at scrape
time, with the names, help, labels, buckets and types prometheus_client's Counter and Histogram gave.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

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


MAX_CACHED = 20_000  # label combinations whose series are kept at hand; beyond, they are looked up each time
INF = float("inf")


class _Family:
    """The series of one counter or histogram: label values -> a plain list of numbers."""

    __slots__ = ("bounds", "created", "documentation", "kind", "labels", "le", "name", "series")

    def __init__(
        self, kind: str, name: str, documentation: str, labels: Sequence[str], bounds: Sequence[float] = ()
    ) -> None:
        self.kind, self.name, self.documentation, self.labels = kind, name, documentation, tuple(labels)
        self.bounds = tuple(float(b) for b in bounds)  # histograms: upper bounds, +Inf left implicit
        self.le = tuple(floatToGoString(b) for b in (*self.bounds, INF))
        # a counter's series is [value]; a histogram's is [count per bucket (the last is +Inf)..., sum]
        self.series: dict[tuple[str, ...], list[Any]] = {}
        self.created: dict[tuple[str, ...], float] = {}  # when each series began (the `_created` sample)

    def get(self, values: tuple[str, ...]) -> list[Any]:
        """The series of one label combination, made at first use (as prometheus_client's `.labels()`)."""
        found = self.series.get(values)
        if found is None:
            self.created[values] = time.time()  # before the series shows, so a scrape always finds it
            found = self.series[values] = [0] * len(self.le) + [0.0] if self.bounds else [0.0]
        return found

    def family(self, with_created: bool) -> Metric:
        """The series as a metric family, samples in the order and shape prometheus_client gives them."""
        name, labels = self.name, self.labels
        if not self.bounds:
            counter = CounterMetricFamily(name, self.documentation, labels=labels)
            for values, (value,) in self.series.copy().items():
                counter.add_metric(values, float(value), self.created[values] if with_created else None)
            return counter
        histogram = HistogramMetricFamily(name, self.documentation, labels=labels)
        for values, series in self.series.copy().items():
            counts = series[:]  # one consistent copy: the event loop may be adding to it
            cumulative, buckets = 0.0, []
            for le, count in zip(self.le, counts, strict=False):
                cumulative += count
                buckets.append((le, cumulative))
            histogram.add_metric(values, buckets, counts[-1])
            if with_created:
                sample_labels = dict(zip(labels, values, strict=True))
                histogram.samples.append(Sample(name + "_created", sample_labels, self.created[values], None))
        return histogram


class _Collector(Collector):
    """Yields the recorded families at scrape time (and describes them, so a registry sees the names)."""

    def __init__(self, families: Sequence[_Family]) -> None:
        self.families = tuple(families)

    def collect(self) -> Iterator[Metric]:
        """The families with their series; `_created` samples unless prometheus_client was told not to."""
        with_created = bool(getattr(prometheus_metrics, "_use_created", True))
        for family in self.families:
            yield family.family(with_created)

    def describe(self) -> Iterator[Metric]:
        """The families without series."""
        for family in self.families:
            if family.bounds:
                yield HistogramMetricFamily(family.name, family.documentation, labels=family.labels)
            else:
                yield CounterMetricFamily(family.name, family.documentation, labels=family.labels)


class _RequestSeries:
    """Every series one kind of request records into, found with one look-up per request."""

    __slots__ = (
        "costs",
        "duration",
        "extra",
        "genai",
        "keep",
        "log_provider",
        "metrics",
        "overhead",
        "request_model",
        "requests",
        "route",
        "tokens",
        "tpot",
        "ttft",
    )

    def __init__(
        self, metrics: Metrics, ctx: RequestContext, status: int, failed: bool, extra: tuple[str, ...]
    ) -> None:
        rule, ref = ctx.rule, ctx.backend_ref
        self.keep = ref  # the look-up key holds id(ref): keeping ref alive keeps that id from being reused
        self.metrics, self.extra = metrics, extra
        route = self.route = rule.route if rule is not None else ""
        backend = ref.backend.name if ref is not None else ""
        self.requests = metrics.requests.get((route, backend, str(status)))
        self.overhead = metrics.overhead.get((route, backend))
        if rule is None:
            original = request_model = ""  # no route took it: the client's model name is not a label
        else:
            original = ctx.model
            request_model = (ref.model_name_override if ref is not None else None) or original
        self.request_model = request_model
        schema = ref.backend.schema.name if ref is not None else ""
        provider = PROVIDER_NAMES.get(schema, schema)
        self.log_provider = PROVIDER_NAMES.get(schema, schema.lower())  # as filters.observe.provider_name
        base = (ctx.operation, provider, original, request_model, ctx.response_model or request_model)
        self.genai = base
        self.duration = metrics.request_duration.get((*base, "_OTHER" if failed else "", *extra))
        self.ttft = metrics.ttft.get((*base, *extra))
        self.tpot = metrics.tpot.get((*base, *extra))
        self.tokens: list[Any] = [None] * len(TOKEN_TYPES)  # made on first use: no all-zero series
        self.costs: dict[str, list[Any]] = {}  # llmRequestCosts metadataKey -> series

    def token(self, index: int) -> list[Any]:
        """The token-usage series of TOKEN_TYPES[index]."""
        series = self.tokens[index]
        if series is None:
            series = self.tokens[index] = self.metrics.token_usage.get(
                (*self.genai, TOKEN_TYPES[index], *self.extra)
            )
        return series

    def cost(self, key: str) -> list[Any]:
        """The cost counter of one metadataKey."""
        series = self.costs[key] = self.metrics.costs.get((self.route, self.request_model, key))
        return series


def _observe(series: list[Any], bounds: tuple[float, ...], value: float) -> None:
    """Count `value` in its bucket (the first bound >= value, as Prometheus' `le`) and add it to the sum."""
    series[bisect_left(bounds, value)] += 1
    series[-1] += value


class Metrics:
    """Every metric the data plane records; one per process (registered once).

    `record` runs on the event loop's thread only: the series are plain lists, added to without locks.
    """

    def __init__(
        self, registry: CollectorRegistry = REGISTRY, header_labels: Sequence[HeaderLabel] = ()
    ) -> None:
        self.header_labels = tuple(header_labels)
        extra = tuple(h.label for h in self.header_labels)
        self._seen: list[set[str]] = [set() for _ in self.header_labels]
        self.token_usage = _Family(
            "histogram",
            "gen_ai_client_token_usage",
            "Tokens per request (gen_ai.client.token.usage), by gen_ai_token_type.",
            [*GENAI_LABELS, "gen_ai_token_type", *extra],
            TOKEN_BUCKETS,
        )
        self.request_duration = _Family(
            "histogram",
            "gen_ai_server_request_duration_seconds",
            "Time from request to the end of the response (gen_ai.server.request.duration).",
            [*GENAI_LABELS, "error_type", *extra],
            DURATION_BUCKETS,
        )
        self.ttft = _Family(
            "histogram",
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed chunk sent to the client (gen_ai.server.time_to_first_token).",
            [*GENAI_LABELS, *extra],
            TTFT_BUCKETS,
        )
        self.tpot = _Family(
            "histogram",
            "gen_ai_server_time_per_output_token_seconds",
            "(duration - time to first token) / (output tokens - 1), streams only.",
            [*GENAI_LABELS, *extra],
            TPOT_BUCKETS,
        )
        self.requests = _Family(
            "counter",
            "sluicegate_requests",
            "LLM requests answered, by route, backend and status code.",
            ["route", "backend", "status"],
        )
        self.ratelimit = _Family(
            "counter",
            "sluicegate_ratelimit_decisions",
            "Rate-limit checks, by route and decision: allowed, limited (429), unavailable (503).",
            ["route", "decision"],
        )
        self.costs = _Family(
            "counter",
            "sluicegate_llm_request_cost",
            "Sum of each llmRequestCosts metadataKey, by route and request model.",
            ["route", "model", "key"],
        )
        self.overhead = _Family(
            "histogram",
            "sluicegate_overhead_seconds",
            "Time the gateway itself adds: request duration minus time spent waiting on the upstream.",
            ["route", "backend"],
            OVERHEAD_BUCKETS,
        )
        self.collector = _Collector(
            [
                self.token_usage,
                self.request_duration,
                self.ttft,
                self.tpot,
                self.requests,
                self.ratelimit,
                self.costs,
                self.overhead,
            ]
        )
        registry.register(self.collector)
        self._series: dict[tuple[Any, ...], _RequestSeries] = {}
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

    def record(self, ctx: RequestContext, now: float | None = None) -> str:
        """Record one finished LLM request; returns its gen_ai.provider.name, for the access log."""
        end = time.monotonic() if now is None else now
        duration = end - ctx.started_at
        rule = ctx.rule
        status = ctx.status or 500
        failed = status >= 400 or bool(ctx.error)
        # what the labels are made of; the client's model only counts when a route took the request
        key: tuple[Any, ...] = (
            rule.route if rule is not None else None,
            id(ctx.backend_ref),
            status,
            failed,
            ctx.operation,
            ctx.model if rule is not None else "",
            ctx.response_model,
        )
        extra = self._header_values(ctx.request.headers) if self.header_labels else ()
        if extra:
            key += extra
        found = self._series.get(key)
        if found is None:
            found = _RequestSeries(self, ctx, status, failed, extra)
            if len(self._series) < MAX_CACHED:
                self._series[key] = found

        found.requests[0] += 1
        overhead = duration - ctx.upstream_seconds
        if overhead < 0.0:
            overhead = 0.0
        series = found.overhead
        series[bisect_left(OVERHEAD_BUCKETS, overhead)] += 1
        series[-1] += overhead
        if found.route in self.limited_routes:
            decision = "allowed"
            if not ctx.attempts and status in (429, 503):
                decision = "limited" if status == 429 else "unavailable"
            self.ratelimit.get((found.route, decision))[0] += 1

        series = found.duration
        series[bisect_left(DURATION_BUCKETS, duration)] += 1
        series[-1] += duration
        usage = ctx.usage
        if usage is not None:
            tokens = found.tokens
            value = usage.input_tokens
            series = tokens[0] or found.token(0)
            series[bisect_left(TOKEN_BUCKETS, value)] += 1
            series[-1] += value
            value = usage.output_tokens
            series = tokens[1] or found.token(1)
            series[bisect_left(TOKEN_BUCKETS, value)] += 1
            series[-1] += value
            if usage.cached_input_tokens:
                _observe(tokens[2] or found.token(2), TOKEN_BUCKETS, usage.cached_input_tokens)
            if usage.cache_creation_input_tokens:
                _observe(tokens[3] or found.token(3), TOKEN_BUCKETS, usage.cache_creation_input_tokens)
            if usage.reasoning_tokens:
                _observe(tokens[4] or found.token(4), TOKEN_BUCKETS, usage.reasoning_tokens)
        if ctx.stream and ctx.first_byte_at and not failed:
            ttft = ctx.first_byte_at - ctx.started_at
            _observe(found.ttft, TTFT_BUCKETS, ttft)
            if usage is not None and usage.output_tokens > 1:
                _observe(found.tpot, TPOT_BUCKETS, (duration - ttft) / (usage.output_tokens - 1))
        costs = ctx.costs
        if costs:
            cost_series = found.costs
            for cost_key, cost in costs.items():
                if cost < 0:
                    raise ValueError("Counters can only be incremented by non-negative amounts.")
                (cost_series.get(cost_key) or found.cost(cost_key))[0] += cost
        return found.log_provider


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
