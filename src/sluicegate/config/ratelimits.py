"""llmRequestCosts, globalLLMRequestCosts, BackendTrafficPolicy rateLimit, QuotaPolicy → costs and limits."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sluicegate.config.fields import Fields, Meta, ObjectRef, Sink
from sluicegate.config.ratelimit_specs import (
    CostSpec,
    QuotaPolicy,
    RuleCost,
    parse_costs,
    read_cost,
    selector,
)
from sluicegate.ratelimit.costs import CostTable, RequestCost, merge_costs
from sluicegate.ratelimit.model import DEFAULT_OUTPUT_ESTIMATE, MODES, UNITS, LimitRule, RateLimitConfig

GATEWAY_CONFIG_ANNOTATION = "aigateway.envoyproxy.io/gateway-config"
# Sluicegate's own settings ride on annotations, so the same files still load in Envoy AI Gateway.
MODE_ANNOTATION = "sluicegate.io/ratelimit-mode"  # check (default) | reserve
MAX_TOKENS_ANNOTATION = "sluicegate.io/default-max-tokens"  # output tokens to assume without max_tokens
REDIS_ANNOTATION = "sluicegate.io/redis-url"  # on the Gateway
FAILURE_ANNOTATION = "sluicegate.io/ratelimit-failure-mode"  # on the Gateway: open (default) | closed
GWAPI, AIGW = "gateway.networking.k8s.io", "aigateway.envoyproxy.io"
_MAX_REQUESTS = 2**32 - 1


def _annotation(meta: Meta, sink: Sink, name: str, check: Callable[[str], Any], what: str) -> Any:
    """A Sluicegate annotation's value, checked; None when absent or wrong (a problem is recorded)."""
    text = (meta.annotations or {}).get(name)
    if text is None:
        return None
    try:
        return check(str(text))
    except ValueError:
        sink.add(f'metadata.annotations["{name}"]', f'"{text}" is not {what}')
        return None


def _mode(text: str) -> bool:
    if text not in MODES:
        raise ValueError(text)
    return text == "reserve"


def _tokens(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


@dataclass
class LimitsResult:
    """What compile_limits gives compile.py."""

    costs: CostTable
    limits: RateLimitConfig
    enforced: set[tuple[str, str]]  # (kind, "ns/name") of policies no longer "accepted, not enforced yet"


class _LimitCompiler:
    """One compilation of the cost and limit resources."""

    def __init__(
        self, sink_of: Callable[[Meta], Sink], routes: Sequence[Any], gateways: Sequence[Any]
    ) -> None:
        self.sink_of = sink_of
        self.routes = {route.meta.ref: route for route in routes}
        self.gateways = {gw.meta.ref: gw for gw in gateways}
        self.rules: list[LimitRule] = []
        self.enforced: set[tuple[str, str]] = set()

    def global_costs(self, configs: Sequence[Any]) -> tuple[CostSpec, ...]:
        """globalLLMRequestCosts of the GatewayConfig the Gateway names (or the only one there is)."""
        chosen = None
        by_ref = {c.meta.ref: c for c in configs}
        for gw in self.gateways.values():
            name = (gw.meta.annotations or {}).get(GATEWAY_CONFIG_ANNOTATION)
            if name and (found := by_ref.get(f"{gw.meta.namespace}/{name}")) is not None:
                chosen = found
                break
        if chosen is None and len(configs) == 1:
            chosen = configs[0]
        for config in configs:
            keys = set(config.spec) - {"extProc"}
            if keys <= {"globalLLMRequestCosts"}:
                self.enforced.add((config.meta.kind, config.meta.ref))
        if chosen is None:
            return ()
        sink = self.sink_of(chosen.meta)
        return parse_costs(Fields(dict(chosen.spec), "spec", sink), "globalLLMRequestCosts")

    def cost_table(self, global_specs: tuple[CostSpec, ...]) -> CostTable:
        """Route costs merged with the global ones, route-level winning per metadataKey."""
        global_costs = tuple(RequestCost(s.key, s.kind, s.fn) for s in global_specs if s.fn is not None)
        by_route = {}
        for ref, route in self.routes.items():
            own = tuple(RequestCost(s.key, s.kind, s.fn) for s in route.costs if s.fn is not None)
            if own:
                by_route[ref] = merge_costs(own, global_costs)
        return CostTable(by_route, global_costs)

    def targets(self, sink: Sink, meta: Meta, refs: Sequence[ObjectRef]) -> frozenset[str] | None:
        """The AIGatewayRoutes a policy targets; None means every route (a Gateway target)."""
        routes: set[str] = set()
        if not refs:
            sink.add("spec.targetRefs", "is required: the Gateway or the routes the rate limit applies to")
        for ref in refs:
            ns = ref.namespace or meta.namespace
            if ref.kind == "Gateway" and ref.group in (GWAPI, None):
                if f"{ns}/{ref.name}" not in self.gateways:
                    sink.add(f"{ref.path}.name", f"Gateway {ns}/{ref.name} not found")
                    continue
                return None
            if (ref.kind, ref.group) in (("HTTPRoute", GWAPI), ("AIGatewayRoute", AIGW)):
                if f"{ns}/{ref.name}" not in self.routes:
                    sink.add(f"{ref.path}.name", f"AIGatewayRoute {ns}/{ref.name} not found")
                    continue
                routes.add(f"{ns}/{ref.name}")
                continue
            sink.add(ref.path, f"must target a {GWAPI} Gateway or HTTPRoute, or an {AIGW} AIGatewayRoute")
        return frozenset(routes)

    def traffic_policy(self, policy: Any, costs: CostTable) -> None:
        """A BackendTrafficPolicy's rateLimit, if it has one."""
        spec, meta = policy.spec, policy.meta
        if "rateLimit" not in spec:
            return
        sink = self.sink_of(meta)
        if set(spec) <= {"targetRefs", "rateLimit"}:
            self.enforced.add((meta.kind, meta.ref))
        if "targetSelectors" in spec or "targetRef" in spec:
            sink.unsupported("spec.targetSelectors", "targeting a rate limit by targetRef or targetSelectors")
        routes = self.targets(sink, meta, policy.target_refs)
        reserve = _annotation(meta, sink, MODE_ANNOTATION, _mode, "check or reserve") or False
        output = _annotation(meta, sink, MAX_TOKENS_ANNOTATION, _tokens, "a whole number")
        if not isinstance(spec["rateLimit"], dict):
            sink.add("spec.rateLimit", "must be a mapping")
            return
        f = Fields(spec["rateLimit"], "spec.rateLimit", sink)
        kind = f.text("type", choices=("Global", "Local"))
        for scope in ("global", "local"):
            block = f.mapping(scope, required=kind is not None and kind.lower() == scope)
            if block is None:
                continue
            for i, rule in enumerate(block.mappings("rules", required=True)):
                compiled = self.rate_rule(rule, f"btp:{meta.ref}:{scope[0]}{i}", scope, routes, costs)
                if compiled is not None:
                    default = DEFAULT_OUTPUT_ESTIMATE if output is None else output
                    self.rules.append(replace(compiled, reserve=reserve, default_output=default))
            block.done()
        f.done()

    def rate_rule(
        self, f: Fields, rule_id: str, scope: str, routes: frozenset[str] | None, costs: CostTable
    ) -> LimitRule | None:
        """One rateLimit rule."""
        selectors = tuple(selector(s) for s in f.mappings("clientSelectors"))
        limit = f.mapping("limit", required=True)
        requests = unit = None
        if limit is not None:
            requests = limit.integer("requests", required=True, high=_MAX_REQUESTS)
            unit = limit.text("unit", required=True, choices=tuple(UNITS))
            if limit.accept("fromMetadata") is not None:
                f.sink.unsupported(limit.at("fromMetadata"), "limit fromMetadata")
            limit.done()
        cost = f.mapping("cost")
        request, response = RuleCost(1), RuleCost(0)
        if cost is not None:
            request = read_cost(cost.mapping("request"), 1, True)
            response = read_cost(cost.mapping("response"), 0, False)
            cost.done()
        if response.key is not None:
            defined = [
                r for r in (routes or self.routes) if response.key in {c.key for c in costs.for_route(r)}
            ]
            if not defined:
                f.sink.add(
                    f.at("cost.response.metadata.key"),
                    f'no llmRequestCosts entry has metadataKey "{response.key}" for the targeted routes '
                    "(define it in the AIGatewayRoute spec.llmRequestCosts or GatewayConfig "
                    "spec.globalLLMRequestCosts)",
                )
        shared = bool(f.flag("shared"))
        shadow = bool(f.flag("shadowMode"))
        f.text("xRateLimitHeaders", choices=("Off", "DraftVersion03"))
        f.done()
        if requests is None or unit is None:
            return None
        return LimitRule(
            id=rule_id,
            source=f"{f.sink.resource} {f.path}",
            scope=scope,
            limit=requests,
            window=UNITS[unit],
            selectors=selectors,
            request_cost=request.number,
            response_number=response.number,
            response_key=response.key,
            routes=routes,
            shared=shared,
            shadow=shadow,
            needs_usage=response.key is not None,
        )

    def quota_policies(self, policies: Sequence[QuotaPolicy], backends: Mapping[str, Any]) -> None:
        """QuotaPolicies → buckets per (backend, model); the alphabetically first policy wins a model."""
        taken: set[tuple[str, str | None]] = set()
        for policy in sorted(policies, key=lambda p: p.meta.ref):
            meta, sink = policy.meta, self.sink_of(policy.meta)
            reserve = _annotation(meta, sink, MODE_ANNOTATION, _mode, "check or reserve") or False
            output = _annotation(meta, sink, MAX_TOKENS_ANNOTATION, _tokens, "a whole number")
            output = DEFAULT_OUTPUT_ESTIMATE if output is None else output
            for ref in policy.target_refs:
                if (ref.group, ref.kind) != (AIGW, "AIServiceBackend"):
                    sink.add(ref.path, f"must target group {AIGW} kind AIServiceBackend")
                    continue
                backend = f"{ref.namespace or meta.namespace}/{ref.name}"
                if backend not in backends:
                    sink.add(f"{ref.path}.name", f"AIServiceBackend {backend} not found")
                    continue
                base = f"quota:{meta.ref}:{backend}"
                common = dict(scope="global", request_cost=0, shared=True, backend=backend, reserve=reserve)
                common["default_output"] = output
                if policy.service is not None and (backend, None) not in taken:
                    taken.add((backend, None))
                    fn, value = policy.service
                    self.rules.append(
                        LimitRule(
                            id=f"{base}:*",
                            source=f"{meta.kind} {meta.ref} spec.serviceQuota",
                            limit=value.limit,
                            window=value.window,
                            response_cel=fn,
                            needs_usage=True,
                            **common,
                        )
                    )
                for i, mq in enumerate(policy.models):
                    if (backend, mq.model) in taken:
                        continue
                    taken.add((backend, mq.model))
                    group = f"{base}:{mq.model}"
                    where = f"{meta.kind} {meta.ref} spec.perModelQuotas[{i}]"
                    buckets = [((), mq.default, False, "default")] if mq.default else []
                    buckets += [(r.selectors, r.quota, r.shadow, str(j)) for j, r in enumerate(mq.rules)]
                    for selectors, value, shadow, name in buckets:
                        self.rules.append(
                            LimitRule(
                                id=f"{group}:{name}",
                                source=where,
                                limit=value.limit,
                                window=value.window,
                                selectors=selectors,
                                response_cel=mq.cost,
                                shadow=shadow,
                                group=group,
                                model=mq.model,
                                needs_usage=True,
                                **common,
                            )
                        )

    def store_settings(self) -> tuple[str | None, bool | None]:
        """The Redis URL and failure mode from the Gateway annotations."""
        url = fail_closed = None
        for gw in self.gateways.values():
            sink = self.sink_of(gw.meta)
            url = url or _annotation(gw.meta, sink, REDIS_ANNOTATION, str, "a URL")
            closed = _annotation(gw.meta, sink, FAILURE_ANNOTATION, _failure, "open or closed")
            fail_closed = closed if fail_closed is None else fail_closed
        return url or None, fail_closed


def _failure(text: str) -> bool:
    if text not in ("open", "closed"):
        raise ValueError(text)
    return text == "closed"


def compile_limits(
    sink_of: Callable[[Meta], Sink],
    routes: Sequence[Any],
    gateways: Sequence[Any],
    raw_policies: Sequence[Any],
    quota_policies: Sequence[QuotaPolicy],
    backends: Mapping[str, Any],
) -> LimitsResult:
    """Compile costs and limits; problems go to each resource's sink."""
    compiler = _LimitCompiler(sink_of, routes, gateways)
    configs = [p for p in raw_policies if p.meta.kind == "GatewayConfig"]
    costs = compiler.cost_table(compiler.global_costs(configs))
    for policy in raw_policies:
        if policy.meta.kind == "BackendTrafficPolicy":
            compiler.traffic_policy(policy, costs)
    compiler.quota_policies(quota_policies, backends)
    url, fail_closed = compiler.store_settings()
    limits = RateLimitConfig(tuple(compiler.rules), url, fail_closed)
    return LimitsResult(costs, limits, compiler.enforced)


def describe(costs: CostTable, limits: RateLimitConfig) -> list[str]:
    """Lines for `sluicegate check`."""
    lines = []
    if costs.global_costs or costs.by_route:
        lines.append("llm request costs:")
        if costs.global_costs:
            lines.append("  (global): " + ", ".join(f"{c.key}={c.kind}" for c in costs.global_costs))
        for route, entries in costs.by_route.items():
            lines.append(f"  {route}: " + ", ".join(f"{c.key}={c.kind}" for c in entries))
    if limits.rules:
        lines.append(f"rate limits: {len(limits.rules)} rule(s)")
        names = {v: k for k, v in UNITS.items()}
        for rule in limits.rules:
            cost = f"cost {rule.request_cost}"
            if rule.response_key:
                cost += f" + {rule.response_key}"
            elif rule.response_cel is not None:
                cost += " + cost expression"
            elif rule.response_number:
                cost += f" + {rule.response_number}"
            flags = [rule.scope] + [f for f, on in (("shadow", rule.shadow), ("reserve", rule.reserve)) if on]
            unit = names.get(rule.window, f"{rule.window}s")
            lines.append(f"  {rule.source}: {rule.limit}/{unit}, {cost} ({', '.join(flags)})")
        if limits.redis_url:
            lines.append("  store: Redis (from the Gateway annotation)")
    return lines
