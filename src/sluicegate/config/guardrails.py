"""GuardrailPolicy (sluicegate.dev/v1alpha1): rules with detectors and an action, per route or Gateway."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluicegate.config.fields import Fields, Meta, ObjectRef, Sink, read_ref, read_refs
from sluicegate.guardrails.detectors import BUILTIN, GROUPS, compile_re2, expand
from sluicegate.guardrails.engine import (
    ACTIONS,
    DEFAULT_WINDOW,
    GuardrailConfig,
    GuardRule,
    Scan,
    builtin_scan,
)
from sluicegate.guardrails.moderation import DEFAULT_MODEL, ModerationCheck

GROUP = "sluicegate.dev"
SIDES = ("Request", "Response", "Both")
FAIL_MODES = ("Open", "Closed")


@dataclass(frozen=True, slots=True)
class ModerationSpec:
    """detectors.moderation: an AIServiceBackend speaking /v1/moderations, categories and threshold."""

    path: str
    backend: ObjectRef | None
    model: str | None
    categories: tuple[str, ...]
    threshold: float
    fail_open: bool


@dataclass(frozen=True, slots=True)
class GuardrailPolicy:
    """A parsed GuardrailPolicy; its rules compiled except for the moderation backend reference."""

    meta: Meta
    target_refs: tuple[ObjectRef, ...]
    rules: tuple[tuple[GuardRule, ModerationSpec | None], ...]


def _deny_pattern(words: list[str], case_sensitive: bool) -> str:
    """One alternation of literal words/phrases, with word boundaries where they start/end with one."""
    import re2  # here, not at the top: only a config with guardrails loads re2

    parts = []
    for word in words:
        escaped = re2.escape(word)
        start = r"\b" if word[:1].isalnum() or word[:1] == "_" else ""
        end = r"\b" if word[-1:].isalnum() or word[-1:] == "_" else ""
        parts.append(f"{start}{escaped}{end}")
    return ("" if case_sensitive else "(?i)") + "(?:" + "|".join(parts) + ")"


def _moderation(f: Fields) -> ModerationSpec:
    backend = f.mapping("backendRef", required=True)
    ref = read_ref(backend) if backend is not None else None
    threshold = f._get("threshold", (int, float), "a number between 0 and 1", False)
    if threshold is not None and not 0 <= threshold <= 1:
        f.sink.add(f.at("threshold"), f"must be between 0 and 1, not {threshold}")
        threshold = None
    spec = ModerationSpec(
        f.path,
        ref,
        f.text("model"),
        tuple(f.texts("categories")),
        0.5 if threshold is None else float(threshold),
        (f.text("failureMode", choices=FAIL_MODES) or "Closed") == "Open",
    )
    f.done()
    return spec


def _rule(policy: Meta, item: Fields, index: int) -> tuple[GuardRule, ModerationSpec | None] | None:
    name = item.text("name") or f"rule-{index}"
    action = item.text("action", required=True, choices=ACTIONS)
    side = item.text("appliesTo", choices=SIDES) or "Both"
    window = item.integer("holdBackChars", low=16, high=65536) or DEFAULT_WINDOW
    detectors = item.mapping("detectors", required=True)
    item.done()
    if detectors is None or action is None:
        return None
    scans: list[Scan] = []
    names = detectors.texts("builtin")
    for i, builtin in enumerate(names):
        if builtin not in BUILTIN and builtin not in GROUPS:
            choices = ", ".join([*GROUPS, *BUILTIN])
            detectors.sink.add(f"{detectors.at('builtin')}[{i}]", f'"{builtin}" is not one of: {choices}')
    if (scan := builtin_scan(expand(names))) is not None:
        scans.append(scan)
    for pattern in detectors.mappings("patterns"):
        label = pattern.text("name", required=True) or "Pattern"
        regex = pattern.text("regex", required=True)
        mask = pattern.text("mask") or f"[{label.upper()}]"
        pattern.done()
        if regex:
            import re2  # here, not at the top: only a config with guardrails loads re2

            try:
                scans.append(Scan(compile_re2(regex), label, mask))
            except re2.error as exc:
                pattern.sink.add(
                    pattern.at("regex"), f"is not accepted by RE2 (linear-time engine): {_why(exc)}"
                )
    deny = detectors.mapping("denyList")
    if deny is not None:
        words = [w for w in deny.texts("words") if w]
        case_sensitive = bool(deny.flag("caseSensitive"))
        mask = deny.text("mask") or "[DENIED]"
        deny.done()
        if words:
            scans.append(Scan(compile_re2(_deny_pattern(words, case_sensitive)), "DenyList", mask))
    moderation_fields = detectors.mapping("moderation")
    moderation = _moderation(moderation_fields) if moderation_fields is not None else None
    detectors.done()
    if not scans and moderation is None:
        detectors.sink.add(detectors.path, "names no detector (builtin, patterns, denyList or moderation)")
        return None
    if moderation is not None and action == "Redact":
        detectors.sink.add(detectors.at("moderation"), "cannot redact (use action Block or Log)")
    if moderation is not None and scans:
        detectors.sink.add(detectors.at("moderation"), "must be the only detector of its rule")
    rule = GuardRule(
        f"{policy.ref}/{name}", action, side != "Response", side != "Request", tuple(scans), window
    )
    return rule, moderation


def _why(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def parse_guardrail_policy(meta: Meta, spec: Fields) -> GuardrailPolicy:
    """GuardrailPolicy.spec: targetRefs (AIGatewayRoute or Gateway) and rules."""
    refs = read_refs(spec, "targetRefs", "sectionName", required=True)
    rules = []
    for i, item in enumerate(spec.mappings("rules", required=True)):
        if (parsed := _rule(meta, item, i)) is not None:
            rules.append(parsed)
    spec.done()
    return GuardrailPolicy(meta, refs, tuple(rules))


def compile_guardrails(
    sink_of: Callable[[Meta], Sink],
    policies: list[GuardrailPolicy],
    routes: set[str],
    moderation: Callable[[Sink, GuardrailPolicy, ModerationSpec], object | None],
) -> GuardrailConfig:
    """Per route: the Gateway-wide rules then the route's own, in config order."""
    default: list[GuardRule] = []
    by_route: dict[str, list[GuardRule]] = {}
    for policy in policies:
        sink = sink_of(policy.meta)
        rules = []
        for rule, spec in policy.rules:
            if spec is not None:
                check = moderation(sink, policy, spec)
                if check is None:
                    continue
                rule = GuardRule(rule.name, rule.action, rule.request, rule.response, (), rule.window, check)
            rules.append(rule)
        for ref in policy.target_refs:
            if ref.kind == "Gateway":
                default += rules
            elif ref.kind in (None, "AIGatewayRoute"):
                key = f"{ref.namespace or policy.meta.namespace}/{ref.name}"
                if key not in routes:
                    sink.add(f"{ref.path}.name", f"AIGatewayRoute {key} does not exist")
                    continue
                by_route.setdefault(key, []).extend(rules)
            else:
                sink.add(f"{ref.path}.kind", f'"{ref.kind}" is not one of: AIGatewayRoute, Gateway')
    if not default and not by_route:
        return GuardrailConfig()
    merged = {route: (*default, *own) for route, own in by_route.items()}
    return GuardrailConfig(merged, tuple(default))


def moderation_check(
    compiler: Any, sink: Sink, policy: GuardrailPolicy, spec: ModerationSpec, backends: dict
) -> ModerationCheck | None:
    """detectors.moderation compiled: its backendRef resolved to a compiled AIServiceBackend."""
    ref = spec.backend
    if ref is None:
        return None
    found = backends.get(("AIServiceBackend", ref.namespace or policy.meta.namespace, ref.name))
    if found is None:
        sink.add(f"{spec.path}.backendRef.name", f"AIServiceBackend {ref.name} does not exist")
        return None
    backend = found[0]
    if not backend.endpoints:
        sink.add(f"{spec.path}.backendRef.name", f"AIServiceBackend {ref.name} has no endpoints")
        return None
    return ModerationCheck(
        backend, spec.model or DEFAULT_MODEL, spec.categories, spec.threshold, spec.fail_open
    )


def describe(config: GuardrailConfig) -> list[str]:
    """Summary lines for `sluicegate check`: each route's guardrail rules (never a pattern's text)."""
    if not config:
        return []
    lines = ["guardrails:"]
    scopes = [("every route", config.default)] if config.default else []
    scopes += sorted((f"route {route}", rules) for route, rules in config.by_route.items())
    for scope, rules in scopes:
        for rule in rules:
            sides = " + ".join(s for s, on in (("request", rule.request), ("response", rule.response)) if on)
            what = "moderation" if rule.moderation is not None else f"{len(rule.scans)} scan(s)"
            lines.append(f"  {scope}: {rule.name} {rule.action} on {sides} ({what})")
    return lines
