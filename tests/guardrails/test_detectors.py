"""Each built-in detector on true examples, false examples and near misses; RE2 keeps scans linear."""

from __future__ import annotations

import time

import pytest

from sluicegate.guardrails.detectors import BUILTIN, compile_re2, expand, luhn
from sluicegate.guardrails.engine import GuardRule, Scan, builtin_scan, enforce

TRUE = {
    "Email": ["jane.doe@example.com", "a+tag@mail.co.uk"],
    "Phone": ["+1 415-555-0132", "(030) 1234 5678", "+44 20 7946 0958"],
    "CreditCard": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"],
    "IBAN": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"],
    "USSSN": ["123-45-6789"],
    "IPv4": ["192.168.1.20", "8.8.8.8"],
    "IPv6": ["2001:db8::1", "fe80::1ff:fe23:4567:890a"],
    "AWSAccessKey": ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"],
    "OpenAIKey": ["sk-proj-abcdefghijklmnopqrstuvwxyz0123", "sk-abcdefghijklmnopqrstuvwxyz012345"],
    "AnthropicKey": ["sk-ant-api03-abcdefghijklmnopqrstuvwxyz_0123"],
    "GitHubToken": ["ghp_" + "a" * 36],
    "GoogleAPIKey": ["AIza" + "B" * 35],
    "PrivateKey": ["-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----"],
    "JWT": ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"],
}
FALSE = {
    "Email": ["jane.doe@", "@example.com", "user at example dot com"],
    "Phone": ["2024", "call me at noon"],
    "CreditCard": ["4111 1111 1111 1112", "4111111111111112", "1234"],  # Luhn fails: not a card
    "IBAN": ["DE89 3704 0044 0532 0130 01", "GB00WEST12345698765432"],  # mod-97 fails
    "USSSN": ["000-12-3456", "666-12-3456", "123-00-6789", "123-45-0000", "923-45-6789"],
    "IPv4": ["999.1.1.1", "1.2.3", "1.2.3.256"],
    "IPv6": ["12:30:45", "a:b"],
    "AWSAccessKey": ["AKIA123", "akiaiosfodnn7example"],
    "OpenAIKey": ["sk-short", "task-list"],
    "AnthropicKey": ["sk-ant-short"],
    "GitHubToken": ["ghp_short"],
    "GoogleAPIKey": ["AIza-short"],
    "PrivateKey": ["-----BEGIN PUBLIC KEY-----", "-----BEGIN CERTIFICATE-----"],
    "JWT": ["eyJhbGci.notajwt", "header.payload.signature"],
}


def detect(name: str, text: str) -> list[str]:
    rule = GuardRule("t/r", "Log", True, True, (builtin_scan((name,)),))
    return [detector for _, _, detector, _ in rule.findings(text)]


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in TRUE.items() for v in values])
def test_detects(name: str, value: str) -> None:
    assert detect(name, f"see: {value} ok") == [name]


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in FALSE.items() for v in values])
def test_does_not_detect(name: str, value: str) -> None:
    assert detect(name, f"see: {value} ok") == []


def test_every_builtin_has_examples() -> None:
    assert set(TRUE) == set(FALSE) == set(BUILTIN)


def test_luhn() -> None:
    assert luhn("4111111111111111") and not luhn("4111111111111112")


def test_groups_expand_in_priority_order() -> None:
    assert expand(["Email", "Secrets"])[0] == "PrivateKey"
    assert "Email" in expand(["PII"]) and "JWT" not in expand(["PII"])


def test_redact_all_with_typed_masks() -> None:
    rule = GuardRule("t/r", "Redact", True, True, (builtin_scan(expand(["All"])),))
    text = "mail jane@example.com, ssn 123-45-6789, key AKIAIOSFODNN7EXAMPLE, ip 10.0.0.1, n 4111111111111112"
    assert enforce((rule,), text, "request") == (
        "mail [EMAIL], ssn [SSN], key [AWS_ACCESS_KEY], ip [IP_ADDRESS], n 4111111111111112"
    )


def test_pathological_input_is_linear() -> None:
    # (a+)+$ backtracks exponentially in Python's re; RE2 answers in linear time
    scan = Scan(compile_re2(r"(a+)+$"), "Evil", "[X]")
    rule = GuardRule("t/r", "Redact", True, True, (scan, builtin_scan(expand(["All"]))))
    text = "a" * 50_000 + "!" + ("1" * 40 + "@" + "." * 40) * 200
    started = time.perf_counter()
    assert enforce((rule,), text, "request") == text
    assert time.perf_counter() - started < 5  # exponential backtracking would not finish at all
