"""AIGatewayRoute and the pieces AIServiceBackend shares with it: header matches and mutations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from sluicegate.config.fields import Fields, Meta, parse_duration, parse_rfc3339, read_refs
from sluicegate.config.ratelimit_specs import CostSpec, parse_costs

COST_TYPES = (
    "OutputToken",
    "InputToken",
    "CachedInputToken",
    "CacheCreationInputToken",
    "TotalToken",
    "ReasoningToken",
    "CEL",
)


@dataclass(frozen=True, slots=True)
class HeaderMutationSpec:
    """headerMutation: set[{name, value}] (names lower-cased) and remove[]."""

    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BodyMutationSpec:
    """bodyMutation: set[{path, value}] with value already parsed from its JSON text, and remove[]."""

    set: tuple[tuple[str, Any], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderMatchSpec:
    """rules[].matches[].headers[]: name lower-cased; pattern compiled for RegularExpression."""

    type: str
    name: str
    value: str
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class RouteBackendRef:
    """rules[].backendRefs[]."""

    path: str
    name: str
    namespace: str | None
    group: str | None
    kind: str | None
    model_name_override: str | None
    header_mutation: HeaderMutationSpec | None
    body_mutation: BodyMutationSpec | None
    weight: int
    priority: int


@dataclass(frozen=True, slots=True)
class RouteRule:
    """AIGatewayRoute spec.rules[]; timeouts already parsed to seconds (None = not set / no limit)."""

    path: str
    name: str | None
    matches: tuple[tuple[HeaderMatchSpec, ...], ...]
    backend_refs: tuple[RouteBackendRef, ...]
    request_timeout: float | None
    has_request_timeout: bool
    extra_timeouts: tuple[str, ...]  # field paths of timeouts accepted but not enforced yet
    models_owned_by: str | None
    models_created_at: int | None
    stream_idle_timeout: float | None = None  # seconds; None = not set
    backend_request_timeout: float | None = None  # timeouts.backendRequest: the per-attempt timeout


@dataclass(frozen=True, slots=True)
class AIGatewayRoute:
    """aigateway.envoyproxy.io AIGatewayRoute."""

    meta: Meta
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]
    has_costs: bool
    costs: tuple[CostSpec, ...] = ()  # spec.llmRequestCosts, compiled


def header_mutation(f: Fields | None) -> HeaderMutationSpec | None:
    """headerMutation{set, remove}."""
    if f is None:
        return None
    out: dict[str, str] = {}
    for item in f.mappings("set"):
        name, value = item.text("name", required=True), item.text("value", required=True)
        item.done()
        if name and value is not None:
            if name.lower() in out:
                f.sink.add(item.at("name"), f'duplicate header "{name}"')
            out[name.lower()] = value
    remove = tuple(h.lower() for h in f.texts("remove"))
    f.done()
    return HeaderMutationSpec(tuple(out.items()), remove)


def body_mutation(f: Fields | None) -> BodyMutationSpec | None:
    """bodyMutation{set[{path, value: raw JSON}], remove}."""
    if f is None:
        return None
    out: dict[str, Any] = {}
    for item in f.mappings("set"):
        path, raw = item.text("path", required=True), item.text("value", required=True)
        item.done()
        if not path or raw is None:
            continue
        try:
            out[path] = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            f.sink.add(item.at("value"), f"is not valid JSON ({err}); a string needs quotes: '\"scale\"'")
    remove = tuple(f.texts("remove"))
    f.done()
    return BodyMutationSpec(tuple(out.items()), remove)


def _header_match(f: Fields) -> HeaderMatchSpec | None:
    """A Gateway API HTTPHeaderMatch."""
    kind = f.text("type", choices=("Exact", "RegularExpression")) or "Exact"
    name, value = f.text("name", required=True), f.text("value", required=True)
    f.done()
    if not name or value is None:
        return None
    pattern = None
    if kind == "RegularExpression":
        try:
            pattern = re.compile(value)
        except re.error as err:
            f.sink.add(f.at("value"), f"invalid regular expression: {err}")
            return None
    return HeaderMatchSpec(kind, name.lower(), value, pattern)


def _duration(f: Fields, key: str) -> tuple[bool, float | None]:
    """(present, seconds) of a duration field; a malformed one is reported and counts as absent."""
    text = f.text(key)
    if text is None:
        return False, None
    try:
        return True, parse_duration(text)
    except ValueError as err:
        f.sink.add(f.at(key), str(err))
        return False, None


def _rule(f: Fields) -> RouteRule:
    """One AIGatewayRoute rule."""
    matches = []
    for match in f.mappings("matches"):
        headers = [h for item in match.mappings("headers") if (h := _header_match(item))]
        match.done()
        names = [h.name for h in headers]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            f.sink.add(match.at("headers"), f'header "{dup}" is matched more than once')
        matches.append(tuple(headers))
    refs = []
    for item in f.mappings("backendRefs"):
        name = item.text("name", required=True)
        ref = RouteBackendRef(
            item.path,
            name or "",
            item.text("namespace"),
            item.text("group"),
            item.text("kind"),
            item.text("modelNameOverride") or None,
            header_mutation(item.mapping("headerMutation")),
            body_mutation(item.mapping("bodyMutation")),
            1 if (w := item.integer("weight")) is None else w,
            item.integer("priority") or 0,
        )
        item.done()
        if name:
            refs.append(ref)
    has_timeout, timeout, extra, per_attempt = False, None, [], None
    if (timeouts := f.mapping("timeouts")) is not None:
        has_timeout, timeout = _duration(timeouts, "request")
        per_attempt = _duration(timeouts, "backendRequest")[1]
        timeouts.done()
    idle = _duration(f, "streamIdleTimeout")[1]
    created = None
    if (text := f.text("modelsCreatedAt")) is not None:
        try:
            created = parse_rfc3339(text)
        except ValueError as err:
            f.sink.add(f.at("modelsCreatedAt"), str(err))
    rule = RouteRule(
        f.path,
        f.text("name"),
        tuple(matches),
        tuple(refs),
        timeout,
        has_timeout,
        tuple(extra),
        f.text("modelsOwnedBy"),
        created,
        idle or None,
        per_attempt or None,
    )
    f.done()
    return rule


def parse_route(meta: Meta, spec: Fields) -> AIGatewayRoute:
    """AIGatewayRoute spec."""
    read_refs(spec, "parentRefs", "sectionName", "port")
    hostnames = tuple(h.lower() for h in spec.texts("hostnames"))
    rules = tuple(_rule(r) for r in spec.mappings("rules", required=True))
    names = [r.name for r in rules if r.name]
    for rule in rules:
        if rule.name == "route-not-found":
            spec.sink.add(f"{rule.path}.name", 'rule name "route-not-found" is reserved')
        elif rule.name and names.count(rule.name) > 1:
            spec.sink.add(f"{rule.path}.name", f'rule name "{rule.name}" is used more than once')
    costs = parse_costs(spec, "llmRequestCosts")
    route = AIGatewayRoute(meta, hostnames, rules, bool(costs), costs)
    spec.done(
        {
            "schema": "removed in Envoy AI Gateway v0.4: delete it",
            "targetRefs": "removed in Envoy AI Gateway v0.4: use parentRefs",
            "filterConfig": "removed in Envoy AI Gateway v0.6: use GatewayConfig",
        }
    )
    return route
