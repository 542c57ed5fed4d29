"""BackendTrafficPolicy rateLimit, QuotaPolicy, llmRequestCosts and globalLLMRequestCosts → RuntimeConfig."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sluicegate.config.compile import load_config
from sluicegate.config.errors import ConfigError
from sluicegate.config.runtime import RuntimeConfig
from sluicegate.config.summary import summarize
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.usage import Usage

EXAMPLE = Path(__file__).parents[1] / "config/fixtures/envoy-ai-gateway/token_ratelimit/token_ratelimit.yaml"

BASE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  annotations: {annotations}
spec:
  gatewayClassName: sluicegate
  listeners: [{{name: http, protocol: HTTP, port: 1975}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  llmRequestCosts:
    - {{metadataKey: in, type: InputToken}}
    - {{metadataKey: weighted, type: CEL, cel: "input_tokens + output_tokens * 3u"}}
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: m}}]}}]
      backendRefs: [{{name: fake, modelNameOverride: real-model}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: other}}
spec:
  parentRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: o}}]}}]
      backendRefs: [{{name: fake}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: fake}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: fake-backend, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: fake-backend}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: 9}}}}]
"""


def load(tmp_path: Path, extra: str, annotations: str = "{}") -> RuntimeConfig:
    path = tmp_path / "c.yaml"
    path.write_text(BASE.format(annotations=annotations) + "---\n" + textwrap.dedent(extra))
    return load_config([str(path)], env={})


def problems(tmp_path: Path, extra: str, annotations: str = "{}") -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, extra, annotations)
    return [(p.field, p.message) for p in err.value.problems]


POLICY = """\
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: p
  annotations: {"sluicegate.io/ratelimit-mode": reserve, "sluicegate.io/default-max-tokens": "256"}
spec:
  targetRefs: [{name: route, kind: AIGatewayRoute, group: aigateway.envoyproxy.io}]
  rateLimit:
    global:
      rules:
        - clientSelectors:
            - headers:
                - {name: X-Tenant, type: Distinct}
                - {name: x-tier, type: RegularExpression, value: "gold|silver"}
                - {name: x-block, type: Exact, value: "yes", invert: true}
              sourceCIDR: {type: Distinct, value: 127.0.0.0/8}
          limit: {requests: 1000, unit: Minute}
          cost:
            request: {from: Number, number: 0}
            response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: weighted}}
    local:
      rules:
        - limit: {requests: 5, unit: Second}
          shared: true
          shadowMode: true
"""


def test_traffic_policy_compiles(tmp_path: Path) -> None:
    config = load(tmp_path, POLICY)
    first, second = config.rate_limits.rules
    assert (first.scope, first.limit, first.window, first.request_cost, first.response_key) == (
        "global",
        1000,
        60,
        0,
        "weighted",
    )
    assert first.routes == frozenset({"default/route"}) and first.reserve and first.default_output == 256
    assert (second.scope, second.limit, second.window, second.request_cost, second.shared, second.shadow) == (
        "local",
        5,
        1,
        1,
        True,
        True,
    )
    assert config.rate_limits.has_global and config.policies == ()
    text = summarize(config)
    assert "rate limits: 2 rule(s)" in text and "1000/Minute, cost 0 + weighted (global, reserve)" in text


def ctx(headers: dict[str, str], client: str = "127.0.0.1:5555") -> RequestContext:
    request = Request("POST", "/v1/chat/completions", "", headers, b"{}", [], client)
    return RequestContext(request, "chat")


def test_selectors(tmp_path: Path) -> None:
    rule = load(tmp_path, POLICY).rate_limits.rules[0]
    describe = rule.descriptor
    assert describe(ctx({"x-tenant": "a", "x-tier": "gold"}), "default/route") == (
        f"{rule.id}|default/route|a|127.0.0.1"
    )
    assert (
        describe(ctx({"x-tenant": "b", "x-tier": "silver"}, "127.0.0.2:1"), "r") == f"{rule.id}|r|b|127.0.0.2"
    )
    assert describe(ctx({"x-tier": "gold"}), "r") is None  # a Distinct header must be there
    assert describe(ctx({"x-tenant": "a", "x-tier": "bronze"}), "r") is None
    assert describe(ctx({"x-tenant": "a", "x-tier": "gold", "x-block": "yes"}), "r") is None
    assert describe(ctx({"x-tenant": "a", "x-tier": "gold", "x-block": "no"}), "r") is not None
    assert describe(ctx({"x-tenant": "a", "x-tier": "gold"}, "10.0.0.1:1"), "r") is None
    assert describe(ctx({"x-tenant": "a", "x-tier": "gold"}, "::ffff:127.0.0.9:1"), "r").endswith("127.0.0.9")
    long = "x" * 500
    assert len(describe(ctx({"x-tenant": long, "x-tier": "gold"}), "r")) < 200  # long values are hashed


def test_gateway_target_applies_to_every_route_with_its_own_budget(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: BackendTrafficPolicy
        metadata: {name: p}
        spec:
          targetRefs: [{name: gw, kind: Gateway, group: gateway.networking.k8s.io}]
          rateLimit:
            type: Global
            global:
              rules:
                - limit: {requests: 3, unit: Hour}
                - limit: {requests: 3, unit: Day}
                  shared: true
        """,
    )
    per_route, shared = config.rate_limits.rules
    assert per_route.routes is None and per_route.applies_to("default/other")
    assert per_route.descriptor(ctx({}), "a") != per_route.descriptor(ctx({}), "b")
    assert shared.descriptor(ctx({}), "a") == shared.descriptor(ctx({}), "b")


@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        ("{limit: {requests: 3, unit: Fortnight}}", "limit.unit", '"Fortnight" is not one of'),
        ("{limit: {requests: 3}}", "limit.unit", "is required"),
        ("{limit: {requests: 3, unit: Hour}, burst: 4}", "burst", "unknown field"),
        (
            "{limit: {requests: 3, unit: Hour}, cost: {response: {from: Metadata, "
            "metadata: {namespace: io.envoy.ai_gateway, key: nope}}}}",
            "cost.response.metadata.key",
            'no llmRequestCosts entry has metadataKey "nope"',
        ),
        (
            "{limit: {requests: 3, unit: Hour}, cost: {response: {from: Metadata, "
            "metadata: {namespace: other, key: in}}}}",
            "cost.response.metadata.namespace",
            'must be "io.envoy.ai_gateway"',
        ),
        (
            "{limit: {requests: 3, unit: Hour}, cost: {request: {from: Metadata, "
            "metadata: {namespace: io.envoy.ai_gateway, key: in}}}}",
            "cost.request",
            "is not supported yet",
        ),
        (
            "{clientSelectors: [{sourceCIDR: {value: 300.1.1.1/8}}], limit: {requests: 3, unit: Hour}}",
            "clientSelectors[0].sourceCIDR.value",
            "invalid CIDR",
        ),
        (
            "{clientSelectors: [{headers: [{name: x, type: RegularExpression, value: '('}]}], "
            "limit: {requests: 3, unit: Hour}}",
            "clientSelectors[0].headers[0].value",
            "invalid regular expression",
        ),
        (
            "{clientSelectors: [{}], limit: {requests: 3, unit: Hour}}",
            "clientSelectors[0]",
            "at least one of",
        ),
    ],
)
def test_rule_problems_name_the_field(tmp_path: Path, rule: str, field: str, message: str) -> None:
    found = problems(
        tmp_path,
        f"""\
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: BackendTrafficPolicy
        metadata: {{name: p}}
        spec:
          targetRefs: [{{name: route, kind: HTTPRoute, group: gateway.networking.k8s.io}}]
          rateLimit:
            type: Global
            global: {{rules: [{rule}]}}
        """,
    )
    assert any(f == f"spec.rateLimit.global.rules[0].{field}" and message in m for f, m in found), found


def test_target_and_annotation_problems(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: BackendTrafficPolicy
        metadata: {name: p, annotations: {"sluicegate.io/ratelimit-mode": sometimes}}
        spec:
          targetRefs:
            - {name: nope, kind: HTTPRoute, group: gateway.networking.k8s.io}
            - {name: fake, kind: AIServiceBackend, group: aigateway.envoyproxy.io}
          rateLimit:
            type: Global
        """,
        annotations='{"sluicegate.io/ratelimit-failure-mode": maybe}',
    )
    fields = dict(found)
    assert fields["spec.targetRefs[0].name"] == "AIGatewayRoute default/nope not found"
    assert "must target" in fields["spec.targetRefs[1]"]
    assert (
        fields['metadata.annotations["sluicegate.io/ratelimit-mode"]']
        == '"sometimes" is not check or reserve'
    )
    assert (
        fields['metadata.annotations["sluicegate.io/ratelimit-failure-mode"]']
        == '"maybe" is not open or closed'
    )
    assert fields["spec.rateLimit.global"] == "is required"


def test_store_settings_come_from_gateway_annotations(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        annotations='{"sluicegate.io/redis-url": "redis://r:6379/2", '
        '"sluicegate.io/ratelimit-failure-mode": closed}',
    )
    assert (config.rate_limits.redis_url, config.rate_limits.fail_closed) == ("redis://r:6379/2", True)


def test_global_costs_merge_with_route_costs(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        apiVersion: aigateway.envoyproxy.io/v1beta1
        kind: GatewayConfig
        metadata: {name: gc}
        spec:
          globalLLMRequestCosts:
            - {metadataKey: in, type: OutputToken}
            - {metadataKey: total, type: TotalToken}
        """,
    )
    usage = Usage(input_tokens=5, output_tokens=7, total_tokens=12)
    route = {c.key: c.fn(usage, "m", "b", "r") for c in config.costs.for_route("default/route")}
    other = {c.key: c.fn(usage, "m", "b", "r") for c in config.costs.for_route("default/other")}
    assert route == {"in": 5, "weighted": 26, "total": 12}  # the route's "in" wins
    assert other == {"in": 7, "total": 12}
    assert config.policies == ()  # globalLLMRequestCosts is enforced now


QUOTA = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {name: q}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: fake}]
  serviceQuota:
    quota: {limit: 100000, duration: 1d}
  perModelQuotas:
    - modelName: real-model
      quota:
        costExpression: "input_tokens + output_tokens * 6u"
        mode: Shared
        defaultBucket: {limit: 10000, duration: 1h}
        bucketRules:
          - clientSelectors: [{headers: [{name: x-tenant-id, type: Exact, value: premium}]}]
            quota: {limit: 50000, duration: 1h}
          - clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}]}]
            quota: {limit: 5000, duration: 1m}
            shadowMode: true
"""


def test_quota_policy_compiles(tmp_path: Path) -> None:
    config = load(tmp_path, QUOTA)
    service, default, premium, shadow = config.rate_limits.rules
    assert (service.model, service.limit, service.window) == (None, 100000, 86400)
    assert service.response_cel(Usage(total_tokens=9), "m", "b", "r") == 9  # total_tokens by default
    assert [r.model for r in (default, premium, shadow)] == ["real-model"] * 3
    assert default.group == premium.group == shadow.group and shadow.shadow
    assert (default.limit, premium.limit, shadow.window) == (10000, 50000, 60)
    assert default.response_cel(Usage(input_tokens=1, output_tokens=2), "m", "b", "r") == 13
    assert all(r.backend == "default/fake" and r.scope == "global" for r in config.rate_limits.rules)


def test_quota_policy_problems(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: QuotaPolicy
        metadata: {name: q}
        spec:
          targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: ghost}]
          perModelQuotas:
            - modelName: m
              quota:
                costExpression: "input_tokens +"
                defaultBucket: {limit: 10, duration: 2h}
        """,
    )
    fields = dict(found)
    assert fields["spec.targetRefs[0].name"] == "AIServiceBackend default/ghost not found"
    assert "Syntax error" in fields["spec.perModelQuotas[0].quota.costExpression"]
    assert '"2h" is not one of' in fields["spec.perModelQuotas[0].quota.defaultBucket.duration"]


def test_the_envoy_token_ratelimit_example_compiles_fully() -> None:
    config = load_config([str(EXAMPLE)], env={})
    keys = [r.response_key for r in config.rate_limits.rules]
    assert keys == [
        "llm_input_token",
        "llm_output_token",
        "llm_total_token",
        "llm_cached_input_token",
        "llm_cel_calculated_token",
    ]
    assert [r.limit for r in config.rate_limits.rules] == [10, 100, 1000, 100, 1000]
    assert all(r.request_cost == 0 and r.window == 3600 for r in config.rate_limits.rules)
    assert config.policies == () and not any("llmRequestCosts" in w for w in config.warnings)
