"""Compiled guardrail rules: scan text, then block, redact or log; bodies of both client APIs walked."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from sluicegate.core.errors import GatewayError
from sluicegate.guardrails.detectors import BUILTIN, compile_re2

log = logging.getLogger("sluicegate.guardrails")

MATCHES = Counter(
    "sluicegate_guardrail_matches",
    "Guardrail detector matches, by rule, detector type, action and side (never the content).",
    ["rule", "detector", "action", "side"],
)
ACTIONS = ("Block", "Redact", "Log")
DEFAULT_WINDOW = 128  # characters a stream holds back: longer than any built-in match


class GuardrailBlocked(GatewayError):
    """A rule with action Block matched: a 400 in the client API's format naming the rule, not the text."""

    def __init__(self, rule: str, detector: str, side: str) -> None:
        where = "request" if side == "request" else "response"
        super().__init__(
            400, f"The {where} was blocked by guardrail rule {rule} ({detector}).", code="guardrail_blocked"
        )


@dataclass(frozen=True, slots=True)
class Scan:
    """One compiled regular expression and what its matches are."""

    regex: Any  # an RE2 pattern
    label: str  # detector type for a single-detector scan; "" when the match's group names the detector
    mask: str = ""

    def findings(self, text: str) -> list[tuple[int, int, str, str]]:
        """(start, end, detector, mask) of each validated match."""
        out = []
        for m in self.regex.finditer(text):
            if self.label:
                out.append((m.start(), m.end(), self.label, self.mask))
                continue
            detector = BUILTIN[m.lastgroup]
            if detector.validate is None or detector.validate(m.group()):
                out.append((m.start(), m.end(), detector.name, detector.mask))
        return out


def builtin_scan(names: tuple[str, ...]) -> Scan | None:
    """One RE2 alternation of the named built-in detectors (None for none)."""
    if not names:
        return None
    return Scan(compile_re2("|".join(f"(?P<{n}>{BUILTIN[n].pattern})" for n in names)), "")


@dataclass(frozen=True, slots=True)
class GuardRule:
    """One rule of a GuardrailPolicy: its scans, its action and the sides it watches."""

    name: str  # "namespace/policy/rule"
    action: str  # Block | Redact | Log
    request: bool
    response: bool
    scans: tuple[Scan, ...]
    window: int = DEFAULT_WINDOW
    moderation: Any = None  # a ModerationCheck, when the rule asks a moderation backend

    def findings(self, text: str) -> list[tuple[int, int, str, str]]:
        """Every finding of every scan, by position."""
        if len(self.scans) == 1:
            return self.scans[0].findings(text)
        out = [f for scan in self.scans for f in scan.findings(text)]
        out.sort()
        return out


@dataclass(frozen=True, slots=True)
class GuardrailConfig:
    """Compiled policies: the rules of each AIGatewayRoute ("namespace/name"), the Gateway's for the rest."""

    by_route: dict[str, tuple[GuardRule, ...]] = field(default_factory=dict)
    default: tuple[GuardRule, ...] = ()

    def rules_for(self, route: str) -> tuple[GuardRule, ...]:
        """The rules that apply to a route."""
        return self.by_route.get(route, self.default)

    def __bool__(self) -> bool:
        return bool(self.by_route or self.default)


NO_GUARDRAILS = GuardrailConfig()


def count(rule: GuardRule, detector: str, side: str, n: int = 1) -> None:
    """Count matches (and log the count) of one rule and detector type; never the content."""
    MATCHES.labels(rule.name, detector, rule.action, side).inc(n)
    if rule.action == "Log":
        log.info("guardrail %s matched %d %s in the %s", rule.name, n, detector, side)


def enforce(rules: tuple[GuardRule, ...], text: str, side: str) -> str:
    """The text after every rule: raise GuardrailBlocked, redact to typed masks, or only count."""
    for rule in rules:
        found = rule.findings(text)
        if not found:
            continue
        text = act(rule, text, found, side)
    return text


def act(rule: GuardRule, text: str, found: list[tuple[int, int, str, str]], side: str) -> str:
    """Apply one rule's action to its findings in text."""
    for _, _, detector, _ in found:
        count(rule, detector, side)
    if rule.action == "Block":
        raise GuardrailBlocked(rule.name, found[0][2], side)
    if rule.action != "Redact":
        return text
    parts, at = [], 0
    for start, end, _, mask in found:
        if start < at:  # overlaps a previous finding (two scans of one rule)
            continue
        parts += (text[at:start], mask)
        at = end
    parts.append(text[at:])
    return "".join(parts)


# --- request bodies --------------------------------------------------------------------------------------

_TEXT_KEYS = ("content", "text")  # OpenAI message/part text, Anthropic block text and tool_result content


def walk(value: Any, fix: Callable[[str], str]) -> tuple[Any, bool]:
    """(value with fix applied to the prompt text inside, changed?) for messages, parts and blocks."""
    if isinstance(value, str):
        new = fix(value)
        return new, new != value
    changed = False
    if isinstance(value, list):
        for i, item in enumerate(value):
            new, did = walk(item, fix)
            if did:
                value[i], changed = new, True
    elif isinstance(value, dict):
        for key in _TEXT_KEYS:
            if key in value:
                new, did = walk(value[key], fix)
                if did:
                    value[key], changed = new, True
    return value, changed


_REQUEST_KEYS = ("messages", "system", "prompt", "input")


def guard_request(rules: tuple[GuardRule, ...], body: dict[str, Any]) -> bool:
    """Apply request rules to a parsed body in place (OpenAI or Anthropic); whether anything changed."""
    changed = False

    def fix(text: str) -> str:
        return enforce(rules, text, "request")

    for key in _REQUEST_KEYS:
        if key in body:
            body[key], did = walk(body[key], fix)
            changed = changed or did
    return changed


def request_texts(body: dict[str, Any]) -> list[str]:
    """Every prompt text of a body (for a moderation backend), in order."""
    texts: list[str] = []

    def keep(text: str) -> str:
        texts.append(text)
        return text

    for key in _REQUEST_KEYS:
        if key in body:
            walk(body[key], keep)
    return texts
