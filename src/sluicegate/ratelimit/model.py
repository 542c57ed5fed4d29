"""Compiled rate-limit rules: who a rule selects, its budget and window, and what a request costs it."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from sluicegate.core.context import RequestContext
from sluicegate.ratelimit.costs import CostFn

UNITS = {
    "Second": 1,
    "Minute": 60,
    "Hour": 3600,
    "Day": 86400,
    "Week": 604800,
    "Month": 2592000,
    "Year": 31536000,
}
QUOTA_DURATIONS = {"1s": 1, "1m": 60, "1h": 3600, "1d": 86400}
MODES = ("check", "reserve")
DEFAULT_OUTPUT_ESTIMATE = 1024  # output tokens assumed for a request that does not set max_tokens
_MAX_VALUE = 128  # longer distinct values are hashed into the counter key


def _part(value: str) -> str:
    """A distinct value as it goes into a counter key: short and free of separators."""
    if len(value) <= _MAX_VALUE and ":" not in value and "|" not in value:
        return value
    return "#" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header or query-parameter match: Exact, RegularExpression or Distinct (each value its own budget)."""

    name: str  # lower-cased for headers
    type: str
    value: str | None = None
    pattern: re.Pattern[str] | None = None
    invert: bool = False

    def apply(self, actual: str | None, parts: list[str]) -> bool:
        """Whether it matches; a Distinct match appends the value to the budget's descriptor."""
        if actual is None:  # as in Envoy Gateway: a missing header does not match (so an inverted match does)
            return self.invert and self.type != "Distinct"
        if self.type == "Distinct":
            parts.append(_part(actual))
            return True
        if self.pattern is not None:
            hit = self.pattern.fullmatch(actual) is not None
        else:
            hit = actual == self.value
        return hit != self.invert


@dataclass(frozen=True, slots=True)
class SourceMatch:
    """sourceCIDR: the client address in a network; Distinct gives each address its own budget."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    distinct: bool = False
    invert: bool = False

    def apply(self, client: str, parts: list[str]) -> bool:
        """Whether the client address ("host:port", as the server records the peer) matches."""
        try:
            address = ipaddress.ip_address(client.rsplit(":", 1)[0].strip("[]").split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        hit = address.version == self.network.version and address in self.network
        if hit != self.invert:
            if self.distinct:
                parts.append(str(address))
            return True
        return False


@dataclass(frozen=True, slots=True)
class PathMatch:
    """path: Exact, PathPrefix or RegularExpression."""

    type: str
    value: str
    pattern: re.Pattern[str] | None = None
    invert: bool = False

    def matches(self, path: str) -> bool:
        """Gateway API path matching (PathPrefix matches whole segments)."""
        if self.type == "Exact":
            hit = path == self.value
        elif self.type == "RegularExpression":
            hit = self.pattern is not None and self.pattern.fullmatch(path) is not None
        else:
            prefix = self.value.rstrip("/")
            hit = not prefix or path == prefix or path.startswith(prefix + "/")
        return hit != self.invert


@dataclass(frozen=True, slots=True)
class Selector:
    """One clientSelectors entry: every condition in it must hold."""

    headers: tuple[ValueMatch, ...] = ()
    source: SourceMatch | None = None
    methods: tuple[tuple[str, bool], ...] = ()  # (method, invert), any one
    path: PathMatch | None = None
    query: tuple[ValueMatch, ...] = ()

    def apply(self, ctx: RequestContext, parts: list[str]) -> bool:
        """Whether the request is selected; Distinct values are appended to parts."""
        request = ctx.request
        headers = request.headers
        for match in self.headers:
            if not match.apply(headers.get(match.name), parts):
                return False
        if self.methods and not any((request.method == m) != inv for m, inv in self.methods):
            return False
        if self.path is not None and not self.path.matches(request.path):
            return False
        if self.query:
            params = dict(parse_qsl(request.query, keep_blank_values=True))
            for match in self.query:
                if not match.apply(params.get(match.name), parts):
                    return False
        return self.source is None or self.source.apply(request.client, parts)


@dataclass(frozen=True, slots=True)
class LimitRule:
    """One budget rule (a BackendTrafficPolicy rateLimit rule or a QuotaPolicy bucket), compiled."""

    id: str  # stable: the counter key prefix
    source: str  # "BackendTrafficPolicy ns/name spec.rateLimit.global.rules[0]", for messages
    scope: str  # global (shared by every worker and replica) | local (per process)
    limit: int
    window: int  # seconds
    selectors: tuple[Selector, ...] = ()
    request_cost: int = 1
    response_number: int = 0
    response_key: str | None = None  # an llmRequestCosts metadataKey
    response_cel: CostFn | None = None  # a QuotaPolicy costExpression
    routes: frozenset[str] | None = None  # AIGatewayRoute "ns/name"s; None: every route
    shared: bool = False  # one budget for every targeted route (else one per route, as in Envoy Gateway)
    shadow: bool = False  # counted, never refuses
    reserve: bool = False  # admit only when the estimated cost fits (else: while the budget has room)
    default_output: int = DEFAULT_OUTPUT_ESTIMATE
    group: str | None = None  # QuotaPolicy buckets of one model: admitted when any one of them has room
    backend: str | None = None  # QuotaPolicy: the AIServiceBackend "ns/name" it applies to
    model: str | None = None  # QuotaPolicy perModelQuotas: the backendRef's modelNameOverride
    needs_usage: bool = field(default=False)  # its response cost comes from token usage

    def applies_to(self, route: str) -> bool:
        """Whether the rule targets this AIGatewayRoute."""
        return self.routes is None or route in self.routes

    def descriptor(self, ctx: RequestContext, route: str) -> str | None:
        """The budget this request counts against (without the window), or None when not selected."""
        parts = [self.id] if self.shared else [self.id, route]
        for selector in self.selectors:
            if not selector.apply(ctx, parts):
                return None
        return "|".join(parts)


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Everything about limits in a RuntimeConfig."""

    rules: tuple[LimitRule, ...] = ()
    redis_url: str | None = None  # from the Gateway annotation sluicegate.io/redis-url
    fail_closed: bool | None = None  # from the Gateway annotation sluicegate.io/ratelimit-failure-mode

    @property
    def has_global(self) -> bool:
        """Whether any rule must be shared by every worker and replica."""
        return any(rule.scope == "global" for rule in self.rules)
