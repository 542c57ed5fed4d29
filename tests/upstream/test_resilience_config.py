"""BackendTrafficPolicy retry / timeout / healthCheck / loadBalancer and rule timeouts → Rule.resilience."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sluicegate.config.compile import compile_resources
from sluicegate.config.errors import ConfigError
from sluicegate.config.summary import summarize
from sluicegate.upstream.policy import DEFAULT_RESILIENCE

ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: x, listeners: [{name: http, protocol: HTTP, port: 1975}]}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  rules:
    - backendRefs: [{name: a}, {name: b, priority: 1}]
      streamIdleTimeout: 15s
      timeouts: {backendRequest: 2s}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: other}
spec:
  rules:
    - backendRefs: [{name: a}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: a}
spec:
  schema: {name: OpenAI}
  backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: b}
spec:
  schema: {name: OpenAI}
  backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 9}}]
"""
ROUTE_POLICY = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: p
  annotations: {sluicegate.io/load-balancer: LatencyAware}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  retry:
    numRetries: 4
    numAttemptsPerPriority: 1
    retryOn: {triggers: [connect-failure, retriable-status-codes], httpStatusCodes: [500, 503]}
    perRetry: {timeout: 30s, backOff: {baseInterval: 100ms, maxInterval: 10s}}
  healthCheck:
    passive:
      baseEjectionTime: 5s
      interval: 2s
      maxEjectionPercent: 100
      consecutive5XxErrors: 1
      consecutiveGatewayErrors: 0
      consecutiveLocalOriginFailures: 1
      splitExternalLocalOriginErrors: false
  timeout: {tcp: {connectTimeout: 3s}}
"""
GATEWAY_POLICY = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: g}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  loadBalancer: {type: LeastRequest}
  timeout: {http: {requestTimeout: 90s}}
  healthCheck: {active: {type: GRPC}}  # loads, with a warning: GRPC probes are not enforced
"""


def compile_yaml(*texts: str):  # type: ignore[no-untyped-def]
    return compile_resources([d for t in texts for d in yaml.safe_load_all(t) if d], env={})


def test_route_policy_and_rule_timeouts() -> None:
    config = compile_yaml(ROUTES, ROUTE_POLICY)
    assert config.policies == ()
    rule = next(r for r in config.rules if r.route == "default/r")
    res = rule.resilience
    assert res.balancer == "LatencyAware" and res.connect_timeout == 3.0 and res.stream_idle_timeout == 15.0
    retry = res.retry
    assert (retry.num_retries, retry.attempts_per_priority) == (4, 1)
    assert retry.status_codes == {500, 503}
    assert retry.triggers == {"connect-failure", "retriable-status-codes"}
    assert retry.per_try_timeout == 2.0  # the rule's timeouts.backendRequest wins over perRetry.timeout
    assert (retry.backoff_base, retry.backoff_max) == (0.1, 10.0)
    outlier = res.outlier
    assert (outlier.consecutive_5xx, outlier.consecutive_local, outlier.base_ejection) == (1, 1, 5.0)
    untouched = next(r for r in config.rules if r.route == "default/other")
    assert untouched.resilience is DEFAULT_RESILIENCE
    assert "resilience: retries 4" in summarize(config)


def test_gateway_policy_applies_where_the_route_has_none() -> None:
    config = compile_yaml(ROUTES, ROUTE_POLICY, GATEWAY_POLICY)
    rule = next(r for r in config.rules if r.route == "default/r")
    other = next(r for r in config.rules if r.route == "default/other")
    assert rule.resilience.balancer == "LatencyAware"  # the route's own annotation wins
    assert other.resilience.balancer == "LeastRequest"
    assert other.request_timeout == 90.0
    assert any("spec.healthCheck.active" in w for w in config.warnings)


def test_mistakes_are_reported_with_their_path() -> None:
    broken = ROUTE_POLICY.replace("connect-failure,", "connect-failures,").replace("500, 503", "500, 999")
    with pytest.raises(ConfigError) as caught:
        compile_yaml(ROUTES, broken)
    text = str(caught.value)
    assert "spec.retry.retryOn.triggers[0]" in text and "spec.retry.retryOn.httpStatusCodes[1]" in text
    with pytest.raises(ConfigError, match="numRetrys"):
        compile_yaml(ROUTES, ROUTE_POLICY.replace("numRetries", "numRetrys"))


DOCS = Path(__file__).parents[2] / "docs" / "resilience.md"


@pytest.mark.parametrize("block", re.findall(r"^```yaml\n(.*?)^```$", DOCS.read_text(), flags=re.S | re.M))
def test_docs_examples_compile(block: str) -> None:
    config = compile_yaml(block)
    assert config.policies == () and config.rules
    assert any(rule.resilience is not DEFAULT_RESILIENCE for rule in config.rules)
