"""Active health checks: healthCheck.active compiled, probes against a real socket, the planner's skip."""

from __future__ import annotations

import asyncio
import random

import pytest
import yaml
from aiohttp import web

from sluicegate.config.compile import compile_resources
from sluicegate.config.errors import ConfigError
from sluicegate.config.runtime import Backend, BackendRef, Endpoint, Rule, RuntimeConfig, Schema
from sluicegate.config.summary import summarize
from sluicegate.upstream.active_health import ActiveHealthChecks, Prober
from sluicegate.upstream.health import Health
from sluicegate.upstream.planner import RulePlan
from sluicegate.upstream.policy import ActiveCheck, Resilience
from sluicegate.upstream.pool import DnsCache, Pools

ROUTE = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  rules:
    - backendRefs: [{name: a}, {name: b, priority: 1}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: a}
spec:
  schema: {name: OpenAI}
  backendRef: {name: a, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: a}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 8001}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: b}
spec:
  schema: {name: OpenAI}
  backendRef: {name: b, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: b}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 8002}}]
"""


def policy(active: str) -> str:
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: hc}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]
  healthCheck:
    active: {active}
"""


def compile_yaml(text: str) -> RuntimeConfig:
    return compile_resources([d for d in yaml.safe_load_all(text) if d], env={})


def test_http_check_compiles_with_envoy_gateway_defaults() -> None:
    config = compile_yaml(ROUTE + policy("{type: HTTP, http: {path: /healthz}}"))
    assert config.rules[0].resilience.active == ActiveCheck(path="/healthz")
    assert (ActiveCheck().interval, ActiveCheck().timeout) == (3.0, 1.0)
    assert (ActiveCheck().unhealthy_threshold, ActiveCheck().healthy_threshold) == (3, 1)
    assert not any("active" in w for w in config.warnings)
    assert "health check GET /healthz every 3s" in summarize(config)


def test_every_field() -> None:
    text = policy(
        "{type: HTTP, interval: 500ms, timeout: 2s, unhealthyThreshold: 2, healthyThreshold: 4, "
        "http: {path: /ready, method: head, expectedStatuses: [200, 204]}}"
    )
    active = compile_yaml(ROUTE + text).rules[0].resilience.active
    assert active == ActiveCheck("HTTP", "/ready", "HEAD", frozenset({200, 204}), 0.5, 2.0, 2, 4)
    tcp = compile_yaml(ROUTE + policy("{type: TCP, tcp: {}}")).rules[0].resilience.active
    assert tcp is not None and tcp.type == "TCP"


def test_grpc_and_payloads_load_with_a_warning() -> None:
    config = compile_yaml(ROUTE + policy("{type: GRPC}"))
    assert config.rules[0].resilience.active is None
    assert any("spec.healthCheck.active.type" in w for w in config.warnings)
    text = policy("{type: TCP, tcp: {send: {type: Text, text: ping}}}")
    assert any("tcp.send" in w for w in compile_yaml(ROUTE + text).warnings)


@pytest.mark.parametrize(
    ("active", "where"),
    [
        ("{type: HTTP}", "spec.healthCheck.active.http: is required"),
        ("{type: HTTP, http: {path: /x, expectedStatuses: [99]}}", "expectedStatuses[0]"),
        ("{type: HTTP, http: {path: /x}, unhealthyThreshold: 0}", "unhealthyThreshold"),
        ("{type: TCP, tcp: {}, http: {path: /x}}", "active.http: is only allowed"),
        ("{type: UDP}", "active.type"),
        ("{type: HTTP, http: {path: /x, pth: 1}}", "http.pth: unknown field"),
    ],
)
def test_mistakes_name_the_field(active: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_yaml(ROUTE + policy(active))
    assert where in str(caught.value)


def _ref(name: str, priority: int) -> BackendRef:
    return BackendRef(Backend(name, Schema("OpenAI"), (Endpoint("127.0.0.1", 1, False),)), 1, priority)


def test_planner_skips_unhealthy_and_still_tries_the_least_bad() -> None:
    health = Health()
    a, b = _ref("a", 0), _ref("b", 1)
    rule = Rule("default/r", "rule-0", (), (), (a, b), resilience=Resilience())
    plan = RulePlan(rule, health, random.Random(1))
    endpoint = a.backend.endpoints[0]
    assert health.mark("a", endpoint, False, 1) is True
    assert plan.first(0.0) is b
    health.mark("b", b.backend.endpoints[0], False, 1)
    assert plan.first(0.0) is a  # all unhealthy: the first priority is still tried
    health.rest("a", 60.0, 0.0)
    assert plan.first(1.0) is b  # both unhealthy, a rests too: the one back first is tried
    health.mark("b", b.backend.endpoints[0], True, 1)
    assert plan.first(1.0) is b
    assert health.clear_marks(set()) == ["a"] and plan.first(100.0) is a


def test_a_backend_is_down_only_when_every_endpoint_is() -> None:
    health = Health()
    assert health.mark("x", "e1", False, 2) is False
    assert not health.state("x").unhealthy
    assert health.mark("x", "e2", False, 2) is True and health.state("x").unhealthy
    assert health.mark("x", "e1", True, 2) is True and not health.state("x").unhealthy


def test_probes_mark_the_backend_and_keep_their_own_connection() -> None:
    asyncio.run(_probes())


async def _probes() -> None:
    status = {"code": 200, "hits": 0}

    async def healthz(request: web.Request) -> web.Response:
        status["hits"] += 1
        return web.Response(status=status["code"], text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        endpoint = Endpoint("127.0.0.1", port, False)
        pools = Pools(DnsCache())
        check = ActiveCheck(path="/healthz", interval=0.01, timeout=1.0, unhealthy_threshold=2)
        prober = Prober(pools.get(endpoint), check)
        assert await prober.probe() is True
        kept = prober.connection
        assert kept is not None and await prober.probe() is True and prober.connection is kept
        assert pools.get(endpoint).idle == [] and pools.opened == 0  # nothing taken from requests' pool
        prober.close()

        backend = Backend("default/a", Schema("OpenAI"), (endpoint,))
        refs = (BackendRef(backend),)
        rule = Rule("default/r", "rule-0", (), (), refs, resilience=Resilience(active=check))
        health = Health()
        checks = ActiveHealthChecks(RuntimeConfig((rule,), (backend,), ()), pools, health)
        checks.start()
        status["code"] = 503
        await _until(lambda: health.state("default/a").unhealthy)
        status["code"] = 200
        await _until(lambda: not health.state("default/a").unhealthy)
        checks.stop()
        await asyncio.sleep(0)
        hits = status["hits"]
        await asyncio.sleep(0.05)
        assert status["hits"] == hits  # stopped
        pools.close()
    finally:
        await runner.cleanup()


async def _until(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)
