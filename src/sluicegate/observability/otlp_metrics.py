"""The Prometheus metrics pushed over OTLP/HTTP (protobuf) by a background thread, every interval.

Nothing here touches the request path: the thread collects the prometheus_client registry (as a scrape
does) and converts each family to OTLP: counters to monotonic cumulative Sums, gauges to Gauges,
histograms to explicit-bucket Histograms. The GenAI metrics get their OpenTelemetry names and
attribute keys; the rest keep their Prometheus names. Only imported when OTEL_EXPORTER_OTLP_ENDPOINT
or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is set (observability.state.metrics_export_wanted).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from prometheus_client import REGISTRY, CollectorRegistry

from sluicegate import __version__

log = logging.getLogger("sluicegate.observability")

DEFAULT_INTERVAL_MS = 60_000
TIMEOUT_SECONDS = 10.0
LOG_EVERY_SECONDS = 300.0  # a failing export is logged at most this often
CUMULATIVE = pb.AGGREGATION_TEMPORALITY_CUMULATIVE

# Prometheus family -> (OpenTelemetry GenAI name, unit)
GENAI_NAMES = {
    "gen_ai_client_token_usage": ("gen_ai.client.token.usage", "{token}"),
    "gen_ai_server_request_duration_seconds": ("gen_ai.server.request.duration", "s"),
    "gen_ai_server_time_to_first_token_seconds": ("gen_ai.server.time_to_first_token", "s"),
    "gen_ai_server_time_per_output_token_seconds": ("gen_ai.server.time_per_output_token", "s"),
}
GENAI_KEYS = {
    "gen_ai_operation_name": "gen_ai.operation.name",
    "gen_ai_provider_name": "gen_ai.provider.name",
    "gen_ai_original_model": "gen_ai.original.model",
    "gen_ai_request_model": "gen_ai.request.model",
    "gen_ai_response_model": "gen_ai.response.model",
    "gen_ai_token_type": "gen_ai.token.type",
    "error_type": "error.type",
}


def metrics_url(env: Mapping[str, str]) -> str:
    """The metrics-specific endpoint as given, else `{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/metrics`."""
    specific = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if specific:
        return specific
    return env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/metrics"


def parse_headers(text: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (values URL-encoded, as the OTel spec says) -> headers; bad items are skipped."""
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            out[unquote(name.strip()).lower()] = unquote(value.strip())
    return out


def _attributes(labels: Mapping[str, str], genai: bool) -> list[KeyValue]:
    """Labels -> attributes; an empty label is no label in Prometheus, so it is left out."""
    return [
        KeyValue(key=GENAI_KEYS.get(k, k) if genai else k, value=AnyValue(string_value=v))
        for k, v in labels.items()
        if v
    ]


def convert(families: Iterable[Any], now_ns: int, default_start_ns: int) -> list[pb.Metric]:
    """prometheus_client metric families -> OTLP metrics (counters, gauges, histograms; others skipped)."""
    out: list[pb.Metric] = []
    for family in families:
        kind = family.type
        genai = family.name in GENAI_NAMES
        name, unit = GENAI_NAMES.get(family.name, (family.name, family.unit or ""))
        metric = pb.Metric(name=name, description=family.documentation, unit=unit)
        # group the samples of one series by its labels (without `le`)
        series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            entry = series.setdefault(tuple(sorted(labels.items())), {"labels": labels, "buckets": []})
            suffix = sample.name[len(family.name) :]
            if suffix == "_created":
                entry["start"] = int(sample.value * 1e9)
            elif suffix == "_bucket":
                entry["buckets"].append((float(sample.labels["le"]), sample.value))
            elif suffix in ("_sum", "_count", "_total", ""):
                entry[suffix or "value"] = sample.value
        if kind == "counter":
            points = [
                pb.NumberDataPoint(
                    attributes=_attributes(s["labels"], genai),
                    start_time_unix_nano=s.get("start", default_start_ns),
                    time_unix_nano=now_ns,
                    as_double=float(s.get("_total", s.get("value", 0.0))),
                )
                for s in series.values()
                if "_total" in s or "value" in s
            ]
            metric.sum.CopyFrom(
                pb.Sum(data_points=points, aggregation_temporality=CUMULATIVE, is_monotonic=True)
            )
        elif kind in ("gauge", "unknown"):
            points = [
                pb.NumberDataPoint(
                    attributes=_attributes(s["labels"], genai), time_unix_nano=now_ns, as_double=s["value"]
                )
                for s in series.values()
                if "value" in s
            ]
            metric.gauge.CopyFrom(pb.Gauge(data_points=points))
        elif kind == "histogram":
            hist_points = []
            for s in series.values():
                buckets = sorted(s["buckets"])
                bounds = [le for le, _ in buckets if not math.isinf(le)]
                counts, previous = [], 0.0
                for _, cumulative in buckets:
                    counts.append(round(cumulative - previous))
                    previous = cumulative
                if len(counts) == len(bounds):  # no +Inf bucket: the overflow bucket is empty
                    counts.append(0)
                hist_points.append(
                    pb.HistogramDataPoint(
                        attributes=_attributes(s["labels"], genai),
                        start_time_unix_nano=s.get("start", default_start_ns),
                        time_unix_nano=now_ns,
                        count=int(s.get("_count", previous)),
                        sum=float(s.get("_sum", 0.0)),
                        bucket_counts=counts,
                        explicit_bounds=bounds,
                    )
                )
            metric.histogram.CopyFrom(
                pb.Histogram(data_points=hist_points, aggregation_temporality=CUMULATIVE)
            )
        else:
            continue  # summaries, info, state sets: none of ours
        out.append(metric)
    return out


class MetricExporter:
    """Collects the registry every interval on its own thread and posts it over OTLP/HTTP."""

    def __init__(self, env: Mapping[str, str], registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.url = metrics_url(env)
        protocol = env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol and protocol != "http/protobuf":
            log.warning("OTLP protocol %s is not supported; exporting metrics over http/protobuf", protocol)
        try:
            self.interval = max(int(env.get("OTEL_METRIC_EXPORT_INTERVAL") or DEFAULT_INTERVAL_MS), 1) / 1000
        except ValueError:
            log.warning("OTEL_METRIC_EXPORT_INTERVAL is not a number of milliseconds; using 60000")
            self.interval = DEFAULT_INTERVAL_MS / 1000
        self.headers = parse_headers(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
        self.headers.update(parse_headers(env.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "")))
        self.headers["content-type"] = "application/x-protobuf"
        resource = {
            "service.name": env.get("OTEL_SERVICE_NAME") or "sluicegate",
            "service.version": __version__,
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",  # workers are series apart
        }
        self.resource = Resource(
            attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in resource.items()]
        )
        self.scope = InstrumentationScope(name="sluicegate", version=__version__)
        self.started_ns = time.time_ns()
        self.exports = 0  # successful exports
        self.failures = 0
        self._logged_at = -math.inf
        self._suppressed = 0
        self._lock = threading.Lock()  # one export at a time (the timer's and the final one)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sluicegate-otlp-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.export()

    def request(self) -> ExportMetricsServiceRequest:
        """The registry as one ExportMetricsServiceRequest."""
        for tries in range(3):
            try:
                families = list(self.registry.collect())
                break
            except RuntimeError:  # a scrape-time collector saw a set change under it: collect again
                if tries == 2:
                    raise
        metrics = convert(families, time.time_ns(), self.started_ns)
        return ExportMetricsServiceRequest(
            resource_metrics=[
                pb.ResourceMetrics(
                    resource=self.resource,
                    scope_metrics=[pb.ScopeMetrics(scope=self.scope, metrics=metrics)],
                )
            ]
        )

    def export(self) -> bool:
        """Send the metrics once; a failure is logged (throttled) and otherwise ignored."""
        with self._lock:
            try:
                body = self.request().SerializeToString()
                sent = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
                with urllib.request.urlopen(sent, timeout=TIMEOUT_SECONDS) as answer:
                    answer.read()
                self.exports += 1
                return True
            except Exception as exc:
                self.failures += 1
                now = time.monotonic()
                if now - self._logged_at >= LOG_EVERY_SECONDS:
                    more = f" ({self._suppressed} more failures not logged)" if self._suppressed else ""
                    log.warning("exporting metrics to %s failed: %s%s", self.url, exc, more)
                    self._logged_at, self._suppressed = now, 0
                else:
                    self._suppressed += 1
                return False

    def shutdown(self) -> None:
        """Stop the timer and export once more, so the last interval's requests are not lost."""
        self._stop.set()
        self._thread.join(TIMEOUT_SECONDS)
        self.export()
