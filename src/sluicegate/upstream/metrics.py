"""Counters of attempts, retries, failovers, ejections and active health per backend (Prometheus)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

ATTEMPTS = Counter(
    "sluicegate_upstream_attempts", "Attempts sent to a backend, by outcome.", ["backend", "outcome"]
)
RETRIES = Counter("sluicegate_upstream_retries", "Attempts after the first of a request.", ["backend"])
FAILOVERS = Counter(
    "sluicegate_upstream_failovers", "Attempts that left a backend for another one.", ["backend", "to"]
)
EJECTIONS = Counter("sluicegate_upstream_ejections", "Outlier ejections of a backend.", ["backend"])
RESTS = Counter("sluicegate_upstream_rests", "Times a backend's Retry-After made us skip it.", ["backend"])
HEALTHY = Gauge(
    "sluicegate_upstream_healthy", "1 while active health checks find a backend healthy, else 0.", ["backend"]
)

_ATTEMPT_CHILDREN: dict[tuple[str, str], Any] = {}


def count_attempt(backend: str, outcome: str) -> None:
    """ATTEMPTS for one backend and outcome (the labelled child is looked up once)."""
    child = _ATTEMPT_CHILDREN.get((backend, outcome))
    if child is None:
        child = _ATTEMPT_CHILDREN[(backend, outcome)] = ATTEMPTS.labels(backend, outcome)
    child.inc()
