"""A table of broken configurations and the problem each must report: file, resource, field, message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sluicegate.config.compile import load_config
from sluicegate.config.errors import ConfigError, ConfigProblem

BASE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gw
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: route}
spec:
  rules:
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-4o-mini}]}]
      backendRefs: [{name: openai}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: openai}
spec:
  schema: {name: OpenAI}
  backendRef: {name: openai, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: openai}
spec:
  endpoints: [{fqdn: {hostname: api.openai.com, port: 443}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: openai-key}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: openai}]
  type: APIKey
  apiKey: {secretRef: {name: openai-key}}
---
apiVersion: v1
kind: Secret
metadata: {name: openai-key}
stringData: {apiKey: sk-test}
"""

ROUTE = """\
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r2}
spec:
  rules:
    - matches: [{headers: [{type: %s, name: x-ai-eg-model, value: "%s"}]}]
      backendRefs: [{name: openai%s}]
%s
"""


def route(match_type: str = "Exact", value: str = "m", ref_extra: str = "", rule_extra: str = "") -> str:
    """A second AIGatewayRoute "r2" with one rule, to break in one place."""
    return ROUTE % (match_type, value, ref_extra, textwrap.indent(rule_extra, "      "))


def service_backend(name: str, spec_extra: str) -> str:
    """An AIServiceBackend whose spec is given."""
    return f"""\
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
{textwrap.indent(spec_extra, "  ")}"""


def policy(name: str, target: str, body: str) -> str:
    """A BackendSecurityPolicy targeting one AIServiceBackend."""
    return f"""\
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}]
{textwrap.indent(body, "  ")}"""


OPENAI_REF = "backendRef: {name: openai, kind: Backend, group: gateway.envoyproxy.io}"
OPENAI_SPEC = f"schema: {{name: OpenAI}}\n{OPENAI_REF}"
KEY_REF = "type: APIKey\napiKey: {secretRef: {name: openai-key}}"
TLS_POLICY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: tls}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: openai}]
  validation: {hostname: x, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ca}
data: {other: x}
"""


def doc(api_version: str, kind: str, name: str, body: str = "") -> str:
    """A document with the given head and body."""
    return f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: {name}}}\n{body}\n"


def case(name: str, text: str, resource: str, field: str, fragment: str) -> object:
    """One row of the table."""
    return pytest.param(text, (resource, field, fragment), id=name)


R2, B = "AIGatewayRoute default/r2", "spec.rules[0].backendRefs[0]"
CASES = [
    case(
        "unknown field",
        service_backend("typo", f"schema: {{name: OpenAI, prefx: v1}}\n{OPENAI_REF}"),
        "AIServiceBackend default/typo",
        "spec.schema.prefx",
        'unknown field (did you mean "prefix"?)',
    ),
    case(
        "unknown top-level field",
        doc("v1", "Secret", "s", "stringDta: {apiKey: x}"),
        "Secret default/s",
        "stringDta",
        'unknown field (did you mean "stringData"?)',
    ),
    case(
        "removed field",
        service_backend("old", f"{OPENAI_SPEC}\nbackendSecurityPolicyRef: {{name: x}}"),
        "AIServiceBackend default/old",
        "spec.backendSecurityPolicyRef",
        "removed in Envoy AI Gateway v0.4",
    ),
    case(
        "dangling backendRef",
        route().replace("[{name: openai}]", "[{name: openai}, {name: x}]"),
        R2,
        "spec.rules[0].backendRefs[1].name",
        "AIServiceBackend default/x not found",
    ),
    case(
        "dangling backendRef namespace",
        route(ref_extra=", namespace: elsewhere"),
        R2,
        f"{B}.name",
        "AIServiceBackend elsewhere/openai not found",
    ),
    case(
        "dangling Backend",
        service_backend("lost", OPENAI_SPEC.replace("name: openai", "name: nope")),
        "AIServiceBackend default/lost",
        "spec.backendRef.name",
        "Backend default/nope not found",
    ),
    case(
        "Service as backend",
        service_backend("svc", "schema: {name: OpenAI}\nbackendRef: {name: s, kind: Service}"),
        "AIServiceBackend default/svc",
        "spec.backendRef",
        "Kubernetes Services are not supported",
    ),
    case(
        "duplicate name",
        doc("v1", "Secret", "openai-key", "stringData: {apiKey: x}"),
        "Secret default/openai-key",
        "metadata.name",
        "duplicate: Secret default/openai-key is also defined in",
    ),
    case(
        "bad regex",
        route("RegularExpression", "gpt-(4"),
        R2,
        "spec.rules[0].matches[0].headers[0].value",
        "invalid regular expression",
    ),
    case(
        "bad match type",
        route("Prefix", "gpt"),
        R2,
        "spec.rules[0].matches[0].headers[0].type",
        '"Prefix" is not one of: Exact, RegularExpression',
    ),
    case(
        "bad duration",
        route(rule_extra="timeouts: {request: 10 seconds}"),
        R2,
        "spec.rules[0].timeouts.request",
        'invalid duration "10 seconds"',
    ),
    case(
        "bad bodyMutation JSON",
        route(ref_extra=", bodyMutation: {set: [{path: service_tier, value: scale}]}"),
        R2,
        f"{B}.bodyMutation.set[0].value",
        "is not valid JSON",
    ),
    case(
        "wrong type",
        route(ref_extra=", weight: heavy"),
        R2,
        f"{B}.weight",
        "must be an integer, not a string",
    ),
    case(
        "negative priority", route(ref_extra=", priority: -1"), R2, f"{B}.priority", "must be between 0 and"
    ),
    case(
        "bad modelsCreatedAt",
        route(rule_extra="modelsCreatedAt: yesterday"),
        R2,
        "spec.rules[0].modelsCreatedAt",
        'invalid RFC 3339 timestamp "yesterday"',
    ),
    case(
        "reserved rule name",
        route(rule_extra="name: route-not-found"),
        R2,
        "spec.rules[0].name",
        '"route-not-found" is reserved',
    ),
    case(
        "missing rules",
        doc("aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute", "r3", "spec: {hostnames: [a.b]}"),
        "AIGatewayRoute default/r3",
        "spec.rules",
        "is required",
    ),
    case(
        "missing secret",
        service_backend("other", OPENAI_SPEC)
        + "\n---\n"
        + policy("other-key", "other", "type: APIKey\napiKey: {secretRef: {name: missing}}"),
        "BackendSecurityPolicy default/other-key",
        "spec.apiKey.secretRef.name",
        "Secret default/missing not found",
    ),
    case(
        "secret without apiKey",
        service_backend("other", OPENAI_SPEC)
        + "\n---\n"
        + policy("other-key", "other", "type: AzureAPIKey\nazureAPIKey: {secretRef: {name: wrong}}")
        + "\n---\n"
        + doc("v1", "Secret", "wrong", "stringData: {api-key: x}"),
        "BackendSecurityPolicy default/other-key",
        "spec.azureAPIKey.secretRef.name",
        "Secret default/wrong has no key apiKey",
    ),
    case(
        "policy for missing backend",
        policy("ghost-key", "ghost", KEY_REF),
        "BackendSecurityPolicy default/ghost-key",
        "spec.targetRefs[0].name",
        "AIServiceBackend default/ghost not found",
    ),
    case(
        "two policies for one backend",
        policy("again", "openai", KEY_REF),
        "BackendSecurityPolicy default/again",
        "spec.targetRefs[0].name",
        "already targeted by BackendSecurityPolicy default/openai-key",
    ),
    case(
        "policy sub-object missing",
        policy("half", "openai", "type: AnthropicAPIKey"),
        "BackendSecurityPolicy default/half",
        "spec.anthropicAPIKey",
        "is required when type is AnthropicAPIKey",
    ),
    case(
        "bad base64",
        doc("v1", "Secret", "b64", "data: {apiKey: 'not base64!'}"),
        "Secret default/b64",
        "data.apiKey",
        "is not valid base64",
    ),
    case(
        "unset ${VAR}",
        doc("v1", "Secret", "unset", "stringData: {apiKey: '${SLUICEGATE_TEST_UNSET}'}"),
        "Secret default/unset",
        "stringData.apiKey",
        "environment variable SLUICEGATE_TEST_UNSET is not set",
    ),
    case(
        "YAML syntax error",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n bad: indent\n",
        "",
        "",
        "YAML syntax error",
    ),
    case(
        "unknown kind",
        doc("example.com/v1", "Widget", "w"),
        "Widget default/w",
        "kind",
        "unknown kind Widget in apiVersion example.com/v1",
    ),
    case(
        "unknown core kind",
        doc("v1", "Gizmo", "g"),
        "Gizmo default/g",
        "kind",
        "unknown kind Gizmo in apiVersion v1",
    ),
    case(
        "wrong apiVersion",
        doc("aigateway.envoyproxy.io/v2", "AIGatewayRoute", "v"),
        "AIGatewayRoute default/v",
        "apiVersion",
        "is not accepted for AIGatewayRoute",
    ),
    case(
        "missing name",
        "apiVersion: v1\nkind: Secret\nmetadata: {namespace: x}\n",
        "Secret",
        "metadata.name",
        "is required",
    ),
    case(
        "endpoint with two addresses",
        doc(
            "gateway.envoyproxy.io/v1alpha1",
            "Backend",
            "two",
            "spec: {endpoints: [{fqdn: {hostname: a.b, port: 1}, ip: {address: 10.0.0.1, port: 1}}]}",
        ),
        "Backend default/two",
        "spec.endpoints[0]",
        "exactly one of fqdn, ip or unix must be set",
    ),
    case(
        "TLS CA without ca.crt",
        TLS_POLICY,
        "BackendTLSPolicy default/tls",
        "spec.validation.caCertificateRefs[0].name",
        "ConfigMap default/ca has no key ca.crt",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_broken_config_reports_file_resource_and_field(
    tmp_path: Path, text: str, expected: tuple[str, str, str]
) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config([str(tmp_path)], env={})
    resource, field, fragment = expected
    matching = [
        p
        for p in err.value.problems
        if (p.file, p.resource, p.field) == (str(broken), resource, field) and fragment in p.message
    ]
    assert matching, "\n".join(map(str, err.value.problems))
    assert str(broken) in str(err.value)
    rendered = str(matching[0])
    assert all(part in rendered for part in (str(broken), resource, field, fragment))
    assert not err.value.only_unsupported


def test_base_config_is_valid(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    config = load_config([str(tmp_path)], env={})
    assert [b.credential.secret for b in config.backends if b.credential] == ["sk-test"]


def test_syntax_error_carries_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n bad: indent\n")
    with pytest.raises(ConfigError) as err:
        load_config([str(broken)], env={})
    assert str(err.value.problems[0]).startswith(f"{broken}:5: YAML syntax error")


@pytest.mark.parametrize(
    ("text", "field", "what"),
    [
        (
            service_backend("gcp", OPENAI_SPEC)
            + "\n---\n"
            + policy("gcp", "gcp", "type: GCPCredentials\ngcpCredentials: {projectName: p, region: r}"),
            "spec.gcpCredentials",
            "GCPCredentials without credentialsFile",
        ),
        (
            service_backend("az", OPENAI_SPEC)
            + "\n---\n"
            + policy(
                "az",
                "az",
                "type: AWSCredentials\nawsCredentials: {region: us-east-1}\n"
                "credentialOverride: {fromDynamicMetadata: {namespace: n}}",
            ),
            "spec.credentialOverride.fromDynamicMetadata",
            "credentialOverride.fromDynamicMetadata",
        ),
        (doc("aigateway.envoyproxy.io/v1beta1", "MCPRoute", "mcp", "spec: {}"), "kind", "MCPRoute"),
        (
            route(ref_extra=", group: inference.networking.k8s.io, kind: InferencePool"),
            "spec.rules[0].backendRefs[0]",
            "a backendRef to an InferencePool",
        ),
        (
            doc(
                "gateway.envoyproxy.io/v1alpha1",
                "Backend",
                "sock",
                "spec: {endpoints: [{unix: {path: /x.sock}}]}",
            ),
            "spec.endpoints[0].unix",
            "a unix socket endpoint",
        ),
    ],
    ids=["GCP without file", "dynamic metadata", "MCPRoute", "InferencePool", "unix socket"],
)
def test_valid_but_unsupported_is_a_not_supported_yet_problem(
    tmp_path: Path, text: str, field: str, what: str
) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "broken.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config([str(tmp_path)], env={})
    problems = [p for p in err.value.problems if p.field == field]
    assert problems == [
        ConfigProblem(
            str(tmp_path / "broken.yaml"),
            problems[0].resource,
            field,
            f"{what} is not supported yet",
            unsupported=True,
        )
    ], str(err.value)
    assert err.value.only_unsupported
