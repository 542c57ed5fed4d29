"""The cost and limit fields: llmRequestCosts entries, client selectors, rate-limit costs, QuotaPolicy."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sluicegate.config.fields import Fields, Meta, ObjectRef, read_refs
from sluicegate.ratelimit.costs import TOKEN_TYPES, CostError, CostFn, compile_cel, cost_function, token_cost
from sluicegate.ratelimit.model import QUOTA_DURATIONS, PathMatch, Selector, SourceMatch, ValueMatch

COST_TYPES = (*TOKEN_TYPES, "CEL")
METADATA_NAMESPACE = "io.envoy.ai_gateway"


@dataclass(frozen=True, slots=True)
class CostSpec:
    """One llmRequestCosts entry, with its cost function compiled (None when it did not compile)."""

    path: str
    key: str
    kind: str
    fn: CostFn | None


def parse_costs(f: Fields, key: str) -> tuple[CostSpec, ...]:
    """llmRequestCosts / globalLLMRequestCosts: metadataKey, type (default OutputToken), cel."""
    out: list[CostSpec] = []
    seen: set[str] = set()
    for item in f.mappings(key):
        name = item.text("metadataKey", required=True)
        kind = item.text("type", choices=COST_TYPES) or "OutputToken"
        expression = item.text("cel")
        item.done()
        if kind == "CEL" and expression is None:
            item.sink.add(item.at("cel"), "is required when type is CEL")
            continue
        if name and name in seen:
            item.sink.add(item.at("metadataKey"), f'"{name}" is defined more than once')
        fn = None
        try:
            fn = cost_function(kind, expression)
        except CostError as err:
            item.sink.add(item.at("cel"), str(err))
        if name:
            seen.add(name)
            out.append(CostSpec(item.path, name, kind, fn))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class QuotaValue:
    """quota {limit, duration}."""

    limit: int
    window: int


@dataclass(frozen=True, slots=True)
class BucketRule:
    """perModelQuotas[].quota.bucketRules[]."""

    selectors: tuple[Selector, ...]
    quota: QuotaValue
    shadow: bool


@dataclass(frozen=True, slots=True)
class ModelQuota:
    """perModelQuotas[]."""

    model: str
    cost: CostFn
    default: QuotaValue | None
    rules: tuple[BucketRule, ...]


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """aigateway.envoyproxy.io/v1alpha1 QuotaPolicy."""

    meta: Meta
    target_refs: tuple[ObjectRef, ...]
    service: tuple[CostFn, QuotaValue] | None
    models: tuple[ModelQuota, ...]


def _quota_value(f: Fields | None) -> QuotaValue | None:
    if f is None:
        return None
    limit = f.integer("limit", required=True, high=2**63 - 1)
    duration = f.text("duration", required=True, choices=tuple(QUOTA_DURATIONS))
    f.done()
    return QuotaValue(limit, QUOTA_DURATIONS[duration]) if limit is not None and duration else None


def _cost_expression(f: Fields) -> CostFn:
    """costExpression, total_tokens when absent."""
    text = f.text("costExpression")
    if text is None:
        return token_cost("TotalToken")
    try:
        return compile_cel(text)
    except CostError as err:
        f.sink.add(f.at("costExpression"), str(err))
        return token_cost("TotalToken")


def parse_quota_policy(meta: Meta, spec: Fields) -> QuotaPolicy:
    """QuotaPolicy spec: targetRefs (AIServiceBackends), serviceQuota, perModelQuotas."""
    targets = read_refs(spec, "targetRefs")
    service = None
    if (sq := spec.mapping("serviceQuota")) is not None:
        cost = _cost_expression(sq)
        value = _quota_value(sq.mapping("quota", required=True))
        sq.done()
        service = (cost, value) if value is not None else None
    models = []
    for item in spec.mappings("perModelQuotas"):
        model = item.text("modelName", required=True)
        quota = item.mapping("quota", required=True)
        item.done()
        if quota is None:
            continue
        cost = _cost_expression(quota)
        quota.text("mode", choices=("Shared",))
        default = _quota_value(quota.mapping("defaultBucket"))
        rules = []
        for rule in quota.mappings("bucketRules"):
            selectors = tuple(selector(s) for s in rule.mappings("clientSelectors"))
            value = _quota_value(rule.mapping("quota", required=True))
            shadow = bool(rule.flag("shadowMode"))
            rule.done()
            if value is not None:
                rules.append(BucketRule(selectors, value, shadow))
        quota.done()
        if model:
            models.append(ModelQuota(model, cost, default, tuple(rules)))
    spec.done()
    return QuotaPolicy(meta, targets, service, tuple(models))


def _value_match(f: Fields, lower: bool) -> ValueMatch | None:
    """A header or query-parameter match of a client selector."""
    kind = f.text("type", choices=("Exact", "RegularExpression", "Distinct")) or "Exact"
    name = f.text("name", required=True)
    value = f.text("value")
    invert = bool(f.flag("invert"))
    f.done()
    if kind == "Distinct" and (value is not None or invert):
        f.sink.add(f.path, "value and invert must not be set when type is Distinct")
    if kind != "Distinct" and value is None:
        f.sink.add(f.at("value"), f"is required when type is {kind}")
        return None
    pattern = None
    if kind == "RegularExpression":
        try:
            pattern = re.compile(value or "")
        except re.error as err:
            f.sink.add(f.at("value"), f"invalid regular expression: {err}")
            return None
    if not name:
        return None
    return ValueMatch(name.lower() if lower else name, kind, value, pattern, invert)


def selector(f: Fields) -> Selector:
    """One clientSelectors entry."""
    headers = tuple(m for h in f.mappings("headers") if (m := _value_match(h, True)))
    query = tuple(m for q in f.mappings("queryParams") if (m := _value_match(q, False)))
    source = None
    if (cidr := f.mapping("sourceCIDR")) is not None:
        kind = cidr.text("type", choices=("Exact", "Distinct")) or "Exact"
        value = cidr.text("value", required=True)
        invert = bool(cidr.flag("invert"))
        cidr.done()
        try:
            source = SourceMatch(ipaddress.ip_network(value or "", strict=False), kind == "Distinct", invert)
        except ValueError as err:
            cidr.sink.add(cidr.at("value"), f"invalid CIDR: {err}")
    methods = []
    for item in f.mappings("methods"):
        method = item.text("value", required=True)
        invert = bool(item.flag("invert"))
        item.done()
        if method:
            methods.append((method.upper(), invert))
    path = None
    if (p := f.mapping("path")) is not None:
        kind = p.text("type", choices=("Exact", "PathPrefix", "RegularExpression")) or "PathPrefix"
        value = p.text("value") or "/"
        invert = bool(p.flag("invert"))
        p.done()
        pattern = None
        if kind == "RegularExpression":
            try:
                pattern = re.compile(value)
            except re.error as err:
                p.sink.add(p.at("value"), f"invalid regular expression: {err}")
        path = PathMatch(kind, value, pattern, invert)
    if not (f.data.get("headers") or f.data.get("queryParams") or source or methods or path):
        f.sink.add(f.path, "at least one of headers, methods, path, sourceCIDR or queryParams must be set")
    f.done()
    return Selector(headers, source, tuple(methods), path, query)


@dataclass(frozen=True, slots=True)
class RuleCost:
    """cost.request / cost.response of a rule: a number, or an llmRequestCosts metadataKey."""

    number: int = 0
    key: str | None = None


def read_cost(f: Fields | None, default: int, request: bool) -> RuleCost:
    if f is None:
        return RuleCost(default)
    source = f.text("from", required=True, choices=("Number", "Metadata"))
    number = f.integer("number", high=2**63 - 1)
    meta = f.mapping("metadata")
    if number is not None and meta is not None:
        f.sink.add(f.path, "only one of number or metadata can be set")
    if source == "Number" and number is None:
        f.sink.add(f.at("number"), "is required when from is Number")
    out = RuleCost(number or 0)
    if source == "Metadata":
        if meta is None:
            f.sink.add(f.at("metadata"), "is required when from is Metadata")
        else:
            namespace = meta.text("namespace", required=True)
            key = meta.text("key", required=True)
            meta.done()
            if request:
                f.sink.unsupported(
                    f.path, "a request cost from Metadata (LLM costs are known after the response)"
                )
            elif namespace and namespace != METADATA_NAMESPACE:
                f.sink.add(meta.at("namespace"), f'must be "{METADATA_NAMESPACE}"')
            out = RuleCost(0, key)
    elif meta is not None:
        meta.accept(*meta.data)
    f.done()
    return out
