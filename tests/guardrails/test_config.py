"""GuardrailPolicy config: compiled per route; mistakes (RE2-rejected patterns included) name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sluicegate.config.compile import compile_resources, load_config
from sluicegate.config.errors import ConfigError

BASE = [
    {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIGatewayRoute",
        "metadata": {"name": "r"},
        "spec": {"rules": [{"backendRefs": [{"name": "b"}]}]},
    },
    {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIServiceBackend",
        "metadata": {"name": "b"},
        "spec": {
            "schema": {"name": "OpenAI"},
            "backendRef": {"name": "be", "kind": "Backend", "group": "gateway.envoyproxy.io"},
        },
    },
    {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": "be"},
        "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": 9}}]},
    },
]


def policy(rules: list, targets: list | None = None) -> dict:
    return {
        "apiVersion": "sluicegate.dev/v1alpha1",
        "kind": "GuardrailPolicy",
        "metadata": {"name": "g"},
        "spec": {"targetRefs": targets or [{"kind": "AIGatewayRoute", "name": "r"}], "rules": rules},
    }


def problems(doc: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        compile_resources([*BASE, doc], env={})
    return [(p.field, p.message) for p in err.value.problems]


def test_compiles_per_route_and_gateway() -> None:
    config = compile_resources(
        [*BASE, policy([{"name": "pii", "action": "Redact", "detectors": {"builtin": ["PII"]}}])], env={}
    )
    (rule,) = config.guardrails.rules_for("default/r")
    assert (rule.name, rule.action, rule.request, rule.response) == ("default/g/pii", "Redact", True, True)
    assert config.guardrails.rules_for("default/other") == ()
    wide = policy([{"action": "Log", "appliesTo": "Response", "detectors": {"denyList": {"words": ["x"]}}}])
    wide["spec"]["targetRefs"] = [{"kind": "Gateway", "name": "gw"}]
    config = compile_resources([*BASE, wide], env={})
    assert config.guardrails.rules_for("default/any")[0].request is False


def test_no_policy_no_guardrails() -> None:
    assert not compile_resources(BASE, env={}).guardrails


def test_re2_rejected_pattern_names_the_field() -> None:
    doc = policy(
        [
            {
                "action": "Block",
                "detectors": {"patterns": [{"name": "ok", "regex": "a"}, {"name": "bad", "regex": "(a)\\1"}]},
            }
        ]
    )
    ((field, message),) = problems(doc)
    assert field == "spec.rules[0].detectors.patterns[1].regex"
    assert "RE2" in message


def test_mistakes_are_reported() -> None:
    doc = policy(
        [
            {"action": "Hide", "detectors": {"builtin": ["Email"]}},
            {"action": "Block", "detectors": {"builtin": ["Emial"]}},
            {"action": "Block", "detectors": {}},
            {
                "action": "Redact",
                "detectors": {"moderation": {"backendRef": {"name": "nope"}, "threshold": 2}},
            },
        ],
        [{"kind": "AIGatewayRoute", "name": "missing"}],
    )
    fields = [field for field, _ in problems(doc)]
    assert "spec.rules[0].action" in fields
    assert "spec.rules[1].detectors.builtin[0]" in fields
    assert "spec.rules[2].detectors" in fields
    assert "spec.rules[3].detectors.moderation.threshold" in fields
    assert "spec.rules[3].detectors.moderation" in fields  # Redact cannot apply to moderation
    assert "spec.rules[3].detectors.moderation.backendRef.name" in fields
    assert "spec.targetRefs[0].name" in fields


def test_sluicegate_check_fails_on_a_bad_pattern(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "c.yaml"
    bad = policy([{"action": "Block", "detectors": {"patterns": [{"name": "p", "regex": "(?<=x)y"}]}}])
    path.write_text(yaml.safe_dump_all([*BASE, bad]))
    src = str(Path(__file__).resolve().parents[2] / "src")
    result = subprocess.run(
        [sys.executable, "-m", "sluicegate", "check", str(path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 1
    assert "spec.rules[0].detectors.patterns[0].regex: is not accepted by RE2" in result.stderr
    path.write_text(
        yaml.safe_dump_all([*BASE, policy([{"action": "Block", "detectors": {"builtin": ["All"]}}])])
    )
    assert load_config([str(path)], env={}).guardrails
    result = subprocess.run(
        [sys.executable, "-m", "sluicegate", "check", str(path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "route default/r: default/g/rule-0 Block on request + response (1 scan(s))" in result.stdout
