"""The resilience settings of one rule: retries, timeouts, outlier ejection, balancing (immutable)."""

from __future__ import annotations

from dataclasses import dataclass, field

# The retry triggers Envoy Gateway's BackendTrafficPolicy accepts (retryOn.triggers).
TRIGGERS = (
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)
DEFAULT_TRIGGERS = frozenset({"connect-failure", "reset", "retriable-status-codes"})
DEFAULT_STATUS_CODES = frozenset({429, *range(500, 600)})
BALANCERS = ("Random", "RoundRobin", "LeastRequest", "LatencyAware")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often another attempt follows a failed one."""

    num_retries: int = 2  # attempts after the first
    triggers: frozenset[str] = DEFAULT_TRIGGERS
    status_codes: frozenset[int] = DEFAULT_STATUS_CODES  # retried when "retriable-status-codes" is on
    per_try_timeout: float | None = None  # seconds until the response head (unary: the whole body)
    backoff_base: float = 0.025  # seconds; only before retrying a backend that was already tried
    backoff_max: float = 0.25
    attempts_per_priority: int | None = None  # None: each backend of a priority once, then the next priority

    def retries_status(self, status: int) -> bool:
        """Whether an upstream status is worth another attempt."""
        if status == 400:
            return False
        t = self.triggers
        if "retriable-status-codes" in t and status in self.status_codes:
            return True
        if "5xx" in t and status >= 500:
            return True
        if "gateway-error" in t and status in (502, 503, 504):
            return True
        if status == 503 and "unavailable" in t:
            return True
        if status == 429 and "resource-exhausted" in t:
            return True
        return status == 409 and "retriable-4xx" in t

    def retries_failure(self, kind: str) -> bool:
        """Whether a failure without a status (connect-failure | reset | timeout) is worth another attempt."""
        t = self.triggers
        if kind == "connect-failure":
            return bool(t & {"connect-failure", "5xx", "gateway-error", "reset", "reset-before-request"})
        if kind == "reset":
            return bool(t & {"reset", "5xx", "gateway-error"})
        # a per-attempt timeout counts as a 504 from the backend
        return bool(t & {"5xx", "gateway-error", "reset"}) or self.retries_status(504)


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """Passive health: eject a backend after consecutive errors, for a while that grows with each ejection."""

    consecutive_5xx: int | None = 5  # None or 0: off
    consecutive_gateway: int | None = None  # 502/503/504 and connect failures
    consecutive_local: int | None = None  # connect failures and resets, when split_local is on
    split_local: bool = False  # when off, local-origin failures count as gateway errors (503)
    interval: float = 3.0  # accepted; ejection is decided at once, not on a sweep
    base_ejection: float = 30.0
    max_ejection_percent: int = 100  # of a rule's backends; at least one may always be ejected


@dataclass(frozen=True, slots=True)
class ActiveCheck:
    """Active health: probe each endpoint of a backend off the request path (healthCheck.active)."""

    type: str = "HTTP"  # HTTP | TCP (a connection that opens is healthy)
    path: str = "/"
    method: str = "GET"
    expected_statuses: frozenset[int] = frozenset({200})
    interval: float = 3.0  # seconds between probes
    timeout: float = 1.0  # seconds a probe may take
    unhealthy_threshold: int = 3  # failed probes in a row that mark an endpoint unhealthy
    healthy_threshold: int = 1  # passed probes in a row that mark it healthy again


@dataclass(frozen=True, slots=True)
class Resilience:
    """Everything the planner and the attempt loop need for one rule."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    outlier: OutlierPolicy = field(default_factory=OutlierPolicy)
    balancer: str = "Random"  # Random (weighted) | RoundRobin | LeastRequest | LatencyAware
    connect_timeout: float = 10.0
    stream_idle_timeout: float | None = None  # None: the request timeout between stream chunks
    max_retry_after: float = 300.0  # a longer Retry-After rests the backend this long at most
    active: ActiveCheck | None = None  # active health checks of the rule's backends


DEFAULT_RESILIENCE = Resilience()
