"""Built-in detectors of personal data and secrets: RE2 patterns, each with a validator and a typed mask."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import re2

# re2 (~2.5 MB of RSS) is imported by the functions below, so only a config with guardrails loads it.


def re2_options() -> re2.Options:
    """RE2 options of the house: no stderr logging of rejected patterns (the config reports them)."""
    import re2

    options = re2.Options()
    options.log_errors = False
    return options


def compile_re2(pattern: str) -> re2._Regexp:
    """Compile with RE2 (linear time, no backtracking); re2.error when RE2 rejects the pattern."""
    import re2

    return re2.compile(pattern, re2_options())


def luhn(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(text: str) -> bool:
    digits = "".join(ch for ch in text if ch.isdigit())
    return 13 <= len(digits) <= 19 and luhn(digits)


def _iban(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in moved))
    except ValueError:
        return False
    return number % 97 == 1


def _ssn(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _phone(text: str) -> bool:
    digits = sum(ch.isdigit() for ch in text)
    return 9 <= digits <= 15


@dataclass(frozen=True, slots=True)
class Detector:
    """A built-in detector: an RE2 pattern, an optional validator of the match and the mask it redacts to."""

    name: str
    pattern: str
    mask: str
    validate: Callable[[str], bool] | None = None


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Every pattern matches at most a few hundred characters, so a stream hold-back window of that size sees it.
BUILTIN: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector("PrivateKey", r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----", "[PRIVATE_KEY]"),
        Detector(
            "JWT", r"\beyJ[A-Za-z0-9_-]{5,400}\.eyJ[A-Za-z0-9_-]{5,1000}\.[A-Za-z0-9_-]{10,600}", "[JWT]"
        ),
        Detector("AnthropicKey", r"\bsk-ant-[a-z]{2,10}[0-9]{2}-[A-Za-z0-9_-]{20,200}", "[API_KEY]"),
        Detector("OpenAIKey", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}", "[API_KEY]"),
        Detector("AWSAccessKey", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b", "[AWS_ACCESS_KEY]"),
        Detector("GitHubToken", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b", "[API_KEY]"),
        Detector("GoogleAPIKey", r"\bAIza[0-9A-Za-z_-]{35}\b", "[API_KEY]"),
        Detector(
            "Email",
            r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}\b",
            "[EMAIL]",
        ),
        Detector("IBAN", r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{1,4}){3,8}\b", "[IBAN]", _iban),
        Detector("CreditCard", r"\b[0-9](?:[ -]?[0-9]){12,18}\b", "[CREDIT_CARD]", _card),
        Detector("USSSN", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b", "[SSN]", _ssn),
        Detector("IPv4", rf"\b{_OCTET}(?:\.{_OCTET}){{3}}\b", "[IP_ADDRESS]"),
        Detector(
            "IPv6",
            r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%[0-9A-Za-z]{1,16})?",
            "[IP_ADDRESS]",
            _ipv6,
        ),
        Detector(
            "Phone",
            r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{2,4}\)[ .-]?|\b[0-9]{2,4}[ .-])[0-9]{3,4}[ .-]?[0-9]{3,4}\b",
            "[PHONE]",
            _phone,
        ),
    )
}
PII = ("Email", "Phone", "CreditCard", "IBAN", "USSSN", "IPv4", "IPv6")
SECRETS = ("AWSAccessKey", "AnthropicKey", "OpenAIKey", "GitHubToken", "GoogleAPIKey", "PrivateKey", "JWT")
GROUPS = {"PII": PII, "Secrets": SECRETS, "All": (*PII, *SECRETS)}


def expand(names: list[str]) -> tuple[str, ...]:
    """Detector names with groups (PII, Secrets, All) expanded, in BUILTIN's order (most specific first)."""
    wanted = set()
    for name in names:
        wanted.update(GROUPS.get(name, (name,)))
    return tuple(name for name in BUILTIN if name in wanted)
