"""BackendTrafficPolicy retry, timeout, healthCheck, loadBalancer and the rules' own timeouts → Resilience."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sluicegate.config.fields import Fields, Meta, Sink, parse_duration
from sluicegate.config.runtime import Rule
from sluicegate.upstream.policy import (
    BALANCERS,
    DEFAULT_RESILIENCE,
    DEFAULT_STATUS_CODES,
    DEFAULT_TRIGGERS,
    TRIGGERS,
    ActiveCheck,
    OutlierPolicy,
    Resilience,
    RetryPolicy,
)

GWAPI, AIGW = "gateway.networking.k8s.io", "aigateway.envoyproxy.io"
# Sluicegate's own choice rides on an annotation, so the same file still loads in Envoy Gateway.
BALANCER_ANNOTATION = "sluicegate.io/load-balancer"  # Random | RoundRobin | LeastRequest | LatencyAware
SECTIONS = ("retry", "timeout", "healthCheck", "loadBalancer")
HANDLED = frozenset({"targetRefs", "rateLimit", *SECTIONS})  # a policy of only these is enforced whole
_EG_BALANCERS = {"Random": "Random", "RoundRobin": "RoundRobin", "LeastRequest": "LeastRequest"}


@dataclass
class ResilienceResult:
    """What compile_resilience gives compile.py."""

    rules: list[Rule]
    enforced: set[tuple[str, str]]  # (kind, "ns/name") of policies no longer "accepted, not enforced yet"


def _duration(f: Fields, key: str) -> float | None:
    """Seconds of a duration field, or None (absent, or malformed and reported)."""
    text = f.text(key)
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as err:
        f.sink.add(f.at(key), str(err))
        return None


class _Sections:
    """The resilience sections of one policy, parsed (None where the policy has no such section)."""

    def __init__(
        self, spec: dict[str, Any], sink: Sink, meta: Meta, warn: Callable[[str, str], None]
    ) -> None:
        self.warn = warn
        self.retry = (
            self._retry(Fields(spec["retry"], "spec.retry", sink)) if _is_map(spec, "retry") else None
        )
        self.outlier = self.active = None
        if _is_map(spec, "healthCheck"):
            self.outlier = self._health(Fields(spec["healthCheck"], "spec.healthCheck", sink))
        self.connect = self.request = None
        if _is_map(spec, "timeout"):
            self._timeout(Fields(spec["timeout"], "spec.timeout", sink))
        self.balancer = None
        if _is_map(spec, "loadBalancer"):
            self.balancer = self._balancer(Fields(spec["loadBalancer"], "spec.loadBalancer", sink))
        own = (meta.annotations or {}).get(BALANCER_ANNOTATION)
        if own is not None:
            if own in BALANCERS:
                self.balancer = own
            else:
                sink.add(
                    f'metadata.annotations["{BALANCER_ANNOTATION}"]',
                    f'"{own}" is not one of: {", ".join(BALANCERS)}',
                )
        for key in SECTIONS:
            if key in spec and not isinstance(spec[key], dict):
                sink.add(f"spec.{key}", "must be a mapping")

    def _retry(self, f: Fields) -> RetryPolicy:
        policy = RetryPolicy()
        retries = f.integer("numRetries", high=100)
        per_priority = f.integer("numAttemptsPerPriority", low=1, high=100)
        triggers, codes = DEFAULT_TRIGGERS, DEFAULT_STATUS_CODES
        if (on := f.mapping("retryOn")) is not None:
            named = on.texts("triggers")
            for i, trigger in enumerate(named):
                if trigger not in TRIGGERS:
                    on.sink.add(
                        f"{on.at('triggers')}[{i}]", f'"{trigger}" is not one of: {", ".join(TRIGGERS)}'
                    )
            listed = []
            for path, code in on.items("httpStatusCodes"):
                if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
                    listed.append(code)
                else:
                    on.sink.add(path, "must be an HTTP status code (100-599)")
            on.done()
            if "triggers" in on.data:
                triggers = frozenset(named)
            if "httpStatusCodes" in on.data:
                codes = frozenset(listed)
                if "triggers" not in on.data:
                    triggers = DEFAULT_TRIGGERS
        per_try = base = most = None
        if (per := f.mapping("perRetry")) is not None:
            per_try = _duration(per, "timeout")
            if (back := per.mapping("backOff")) is not None:
                base, most = _duration(back, "baseInterval"), _duration(back, "maxInterval")
                back.done()
            per.done()
        f.done()
        base = policy.backoff_base if base is None else base
        return RetryPolicy(
            num_retries=policy.num_retries if retries is None else retries,
            triggers=triggers,
            status_codes=codes,
            per_try_timeout=per_try or None,
            backoff_base=base,
            backoff_max=max(base * 10 if most is None else most, base),
            attempts_per_priority=per_priority,
        )

    def _health(self, f: Fields) -> OutlierPolicy | None:
        if (active := f.mapping("active")) is not None:
            self.active = self._active(active)
        passive = f.mapping("passive")
        f.done()
        if passive is None:
            return None
        d = OutlierPolicy()
        five = passive.integer("consecutive5XxErrors")
        gateway = passive.integer("consecutiveGatewayErrors")
        local = passive.integer("consecutiveLocalOriginFailures")
        split = passive.flag("splitExternalLocalOriginErrors")
        interval = _duration(passive, "interval")
        base = _duration(passive, "baseEjectionTime")
        percent = passive.integer("maxEjectionPercent", high=100)
        passive.done()
        return OutlierPolicy(
            consecutive_5xx=d.consecutive_5xx if five is None else five,
            consecutive_gateway=gateway,
            consecutive_local=local,
            split_local=bool(split),
            interval=d.interval if interval is None else interval,
            base_ejection=d.base_ejection if base is None else base,
            max_ejection_percent=d.max_ejection_percent if percent is None else percent,
        )

    def _active(self, f: Fields) -> ActiveCheck | None:
        d = ActiveCheck()
        kind = f.text("type", required=True, choices=("HTTP", "TCP", "GRPC"))
        interval, timeout = _duration(f, "interval"), _duration(f, "timeout")
        unhealthy = f.integer("unhealthyThreshold", low=1)
        healthy = f.integer("healthyThreshold", low=1)
        path, method, statuses = d.path, d.method, d.expected_statuses
        if (http := f.mapping("http", required=kind == "HTTP")) is not None:
            if kind != "HTTP":
                f.sink.add(f.at("http"), "is only allowed with type: HTTP")
            path = http.text("path", required=True) or path
            if not path.startswith("/"):
                http.sink.add(http.at("path"), 'must start with "/"')
            method = (http.text("method") or method).upper()
            listed = []
            for at, code in http.items("expectedStatuses"):
                if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
                    listed.append(code)
                else:
                    http.sink.add(at, "must be an HTTP status code (100-599)")
            if listed:
                statuses = frozenset(listed)
            if http.accept("expectedResponse") is not None:
                self.warn(http.at("expectedResponse"), "accepted, not enforced (the status decides)")
            http.done()
        if (tcp := f.mapping("tcp", required=kind == "TCP")) is not None:
            if kind != "TCP":
                f.sink.add(f.at("tcp"), "is only allowed with type: TCP")
            for key in ("send", "receive"):
                if tcp.accept(key) is not None:
                    self.warn(tcp.at(key), "accepted, not enforced (a connection that opens is healthy)")
            tcp.done()
        if f.accept("grpc") is not None and kind != "GRPC":
            f.sink.add(f.at("grpc"), "is only allowed with type: GRPC")
        f.done()
        if kind == "GRPC":
            self.warn(f.at("type"), "GRPC health checks are accepted, not enforced")
            return None
        if kind is None:
            return None
        return ActiveCheck(
            type=kind,
            path=path,
            method=method,
            expected_statuses=statuses,
            interval=interval or d.interval,
            timeout=timeout or d.timeout,
            unhealthy_threshold=unhealthy or d.unhealthy_threshold,
            healthy_threshold=healthy or d.healthy_threshold,
        )

    def _timeout(self, f: Fields) -> None:
        if (tcp := f.mapping("tcp")) is not None:
            self.connect = _duration(tcp, "connectTimeout")
            tcp.done()
        if (http := f.mapping("http")) is not None:
            self.request = _duration(http, "requestTimeout")
            for key in ("connectionIdleTimeout", "maxConnectionDuration"):
                if http.accept(key) is not None:
                    self.warn(http.at(key), "accepted, not enforced (the pool keeps connections alive)")
            http.done()
        f.done()

    def _balancer(self, f: Fields) -> str | None:
        kind = f.text("type", required=True)
        for key in ("consistentHash", "slowStart", "zoneAware", "endpointOverride"):
            if f.accept(key) is not None:
                self.warn(f.at(key), "accepted, not enforced")
        f.done()
        if kind is None:
            return None
        if kind not in _EG_BALANCERS:
            self.warn(f.at("type"), f"{kind} is not supported; weighted random is used")
            return None
        return _EG_BALANCERS[kind]


def _is_map(spec: dict[str, Any], key: str) -> bool:
    return isinstance(spec.get(key), dict)


def _merge(route: _Sections | None, gateway: _Sections | None) -> Resilience:
    """Each section from the route's policy, else from the Gateway's, else the default."""
    out = DEFAULT_RESILIENCE
    for sections in (gateway, route):
        if sections is None:
            continue
        if sections.retry is not None:
            out = replace(out, retry=sections.retry)
        if sections.outlier is not None:
            out = replace(out, outlier=sections.outlier)
        if sections.active is not None:
            out = replace(out, active=sections.active)
        if sections.balancer is not None:
            out = replace(out, balancer=sections.balancer)
        if sections.connect:
            out = replace(out, connect_timeout=sections.connect)
    return out


def compile_resilience(
    sink_of: Callable[[Meta], Sink],
    warn: Callable[[Meta, str, str], None],
    routes: Sequence[Any],
    raw_policies: Sequence[Any],
    rules: list[Rule],
) -> ResilienceResult:
    """Attach a Resilience to every rule; `rules` are in the order of `routes` and their rules."""
    by_route: dict[str, _Sections] = {}
    for_gateway: _Sections | None = None
    enforced: set[tuple[str, str]] = set()
    route_refs = {route.meta.ref for route in routes}
    for policy in sorted(raw_policies, key=lambda p: p.meta.ref):
        meta, spec = policy.meta, policy.spec
        if meta.kind != "BackendTrafficPolicy" or not any(key in spec for key in SECTIONS):
            continue
        if set(spec) <= HANDLED:
            enforced.add((meta.kind, meta.ref))
        sink = sink_of(meta)
        sections = _Sections(dict(spec), sink, meta, lambda path, text, m=meta: warn(m, path, text))
        for ref in policy.target_refs:
            ns = ref.namespace or meta.namespace
            if ref.kind == "Gateway" and ref.group in (GWAPI, None):
                for_gateway = for_gateway or sections
            elif ref.kind in ("HTTPRoute", "AIGatewayRoute") and f"{ns}/{ref.name}" in route_refs:
                by_route.setdefault(f"{ns}/{ref.name}", sections)
            elif "rateLimit" not in spec:  # the rate-limit compiler reports targets of those
                warn(meta, ref.path, f"{ref.kind} {ns}/{ref.name} is not an AIGatewayRoute or Gateway here")
    out, index = [], 0
    for route in routes:
        sections = by_route.get(route.meta.ref)
        resilience = _merge(sections, for_gateway)
        request = next((s.request for s in (sections, for_gateway) if s is not None and s.request), None)
        for raw in route.rules:
            rule = rules[index]
            index += 1
            own = resilience
            if raw.backend_request_timeout:
                own = replace(own, retry=replace(own.retry, per_try_timeout=raw.backend_request_timeout))
            if raw.stream_idle_timeout:
                own = replace(own, stream_idle_timeout=raw.stream_idle_timeout)
            changes: dict[str, Any] = {}
            if own is not DEFAULT_RESILIENCE:
                changes["resilience"] = own
            if request and not raw.has_request_timeout:
                changes["request_timeout"] = request
            out.append(replace(rule, **changes) if changes else rule)
    return ResilienceResult(out, enforced)


def describe(resilience: Resilience) -> str:
    """One line for `sluicegate check`."""
    retry, outlier = resilience.retry, resilience.outlier
    parts = [f"retries {retry.num_retries} on {', '.join(sorted(retry.triggers))}"]
    if "retriable-status-codes" in retry.triggers and retry.status_codes != DEFAULT_STATUS_CODES:
        parts.append("codes " + ",".join(str(c) for c in sorted(retry.status_codes)))
    if retry.per_try_timeout:
        parts.append(f"per attempt {retry.per_try_timeout:g}s")
    if retry.attempts_per_priority:
        parts.append(f"{retry.attempts_per_priority} per priority")
    if outlier.consecutive_5xx or outlier.consecutive_gateway or outlier.consecutive_local:
        parts.append(f"ejection {outlier.base_ejection:g}s")
    if (active := resilience.active) is not None:
        probe = f"{active.method} {active.path}" if active.type == "HTTP" else "TCP"
        parts.append(f"health check {probe} every {active.interval:g}s")
    parts.append(f"balancer {resilience.balancer}")
    if resilience.stream_idle_timeout:
        parts.append(f"stream idle {resilience.stream_idle_timeout:g}s")
    return "resilience: " + "; ".join(parts)
