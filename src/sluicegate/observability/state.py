"""The process's observability: settings from the command line, and the metrics, log and tracer built once."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sluicegate.observability.access_log import AccessLog
from sluicegate.observability.metrics import GatewayCollector, Metrics, parse_header_labels

log = logging.getLogger("sluicegate.observability")


@dataclass
class Settings:
    """What `sluicegate run` was asked for; the OTEL_* environment decides tracing."""

    access_log: str = "off"  # "-" for stdout, a file path, or "off"
    header_labels: str = ""  # "x-tenant-id:tenant,x-team": request headers recorded as metric labels
    header_label_max: int = 100  # distinct values kept per header label; the rest count as `_other`


_settings = Settings()
_metrics: Metrics | None = None
_collector: GatewayCollector | None = None
_access: dict[str, AccessLog] = {}
_tracing: Any = False  # False: not decided yet; None: off; else a tracing.Tracing
_metric_export: Any = None  # an otlp_metrics.MetricExporter once metrics export started


def tracing_wanted(env: Mapping[str, str]) -> bool:
    """Whether the OTEL_* environment asks for trace export (checked without importing OpenTelemetry)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def metrics_export_wanted(env: Mapping[str, str]) -> bool:
    """Whether the OTEL_* environment asks for metric export over OTLP (the Prometheus endpoint stays)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def configure(settings: Settings) -> None:
    """Set the process's observability settings; call before the gateway starts."""
    global _settings
    parse_header_labels(settings.header_labels)  # a bad mapping fails here, at startup
    _settings = settings


def metrics() -> Metrics:
    """The process's metrics, registered on the default registry on first use."""
    global _metrics
    if _metrics is None:
        labels = parse_header_labels(_settings.header_labels, _settings.header_label_max)
        _metrics = Metrics(header_labels=labels)
        start_metric_export()
    return _metrics


def start_metric_export() -> None:
    """Push the registry over OTLP/HTTP from a background thread when OTEL_EXPORTER_OTLP_* asks for it."""
    global _metric_export
    if _metric_export is None:
        if metrics_export_wanted(os.environ):
            from sluicegate.observability.otlp_metrics import MetricExporter

            _metric_export = MetricExporter(os.environ)
            log.info("exporting metrics over OTLP/HTTP to %s", _metric_export.url)


def collector() -> GatewayCollector:
    """The scrape-time collector of upstream connections and credential state, registered once."""
    global _collector
    if _collector is None:
        from prometheus_client import REGISTRY

        _collector = GatewayCollector()
        REGISTRY.register(_collector)
    return _collector


def access_log() -> AccessLog | None:
    """The access log, or None when it is off."""
    target = _settings.access_log
    if not target or target == "off":
        return None
    found = _access.get(target)
    if found is None:
        found = _access[target] = AccessLog(target)
    return found


def tracing(provider_name: Any) -> Any:
    """The tracer (observability.tracing.Tracing) when OTEL_EXPORTER_OTLP_* asks for one, else None."""
    global _tracing
    if _tracing is False:
        _tracing = None
        if tracing_wanted(os.environ):
            from sluicegate.observability.tracing import Tracing

            _tracing = Tracing(os.environ, provider_name)
            log.info("exporting traces over OTLP/HTTP")
    return _tracing


def shutdown() -> None:
    """Write out buffered access-log lines, spans and metrics; call when the gateway stops."""
    global _tracing, _metric_export
    for writer in _access.values():
        writer.close()
    if _tracing:
        _tracing.shutdown()
        _tracing = False
    if _metric_export is not None:
        _metric_export.shutdown()
        _metric_export = None
