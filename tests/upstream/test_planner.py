"""The attempt planner and the health record: priorities, weights, resting, ejection, balancing."""

from __future__ import annotations

import random
from collections import Counter

from sluicegate.config.runtime import Backend, BackendRef, Endpoint, Rule, Schema
from sluicegate.upstream.health import Health, retry_after
from sluicegate.upstream.planner import RulePlan
from sluicegate.upstream.policy import OutlierPolicy, Resilience, RetryPolicy


def ref(name: str, priority: int = 0, weight: int = 1) -> BackendRef:
    backend = Backend(name, Schema("OpenAI"), (Endpoint("127.0.0.1", 1, False),))
    return BackendRef(backend, weight, priority)


def plan(*refs: BackendRef, health: Health | None = None, **settings: object) -> RulePlan:
    rule = Rule("default/r", "rule-0", (), (), refs, resilience=Resilience(**settings))  # type: ignore[arg-type]
    return RulePlan(rule, health or Health(), random.Random(7))


def names(p: RulePlan, now: float = 100.0) -> list[str]:
    attempts = p.attempts()
    out = []
    while (chosen := attempts.next(now)) is not None:
        out.append(chosen.backend.name)
    return out


def test_weights_split_traffic_within_ten_percent() -> None:
    p = plan(ref("a", weight=3), ref("b", weight=1), ref("c", priority=1))
    picks = Counter(p.first(0.0).backend.name for _ in range(1000))
    assert 675 <= picks["a"] <= 825 and picks["c"] == 0


def test_priorities_in_order_and_retries_never_exceed_the_count() -> None:
    p = plan(ref("a"), ref("b", priority=1), ref("c", priority=2), retry=RetryPolicy(num_retries=4))
    assert names(p) == ["a", "b", "c", "a", "b"]
    assert names(plan(ref("a"), ref("b", priority=1), retry=RetryPolicy(num_retries=0))) == ["a"]


def test_each_backend_of_a_priority_before_the_next_priority() -> None:
    order = names(plan(ref("a"), ref("b"), ref("c", priority=1)))
    assert sorted(order[:2]) == ["a", "b"] and order[2] == "c"
    per_priority = RetryPolicy(attempts_per_priority=1)
    assert names(plan(ref("a"), ref("b"), ref("c", priority=1), retry=per_priority))[1] == "c"


def test_a_preset_backend_goes_first() -> None:
    b = ref("b", priority=1)
    attempts = plan(ref("a"), b).attempts(b)
    assert attempts.next(0.0) is b
    assert attempts.next(0.0).backend.name == "a"  # type: ignore[union-attr]


def test_resting_backends_are_skipped_until_their_time() -> None:
    health = Health()
    p = plan(ref("a"), ref("b", priority=1), health=health)
    health.rest("a", 30.0, now=100.0)
    assert p.first(110.0).backend.name == "b"
    assert p.first(131.0).backend.name == "a"


def test_when_everything_rests_the_least_bad_is_tried() -> None:
    health = Health()
    p = plan(ref("a"), ref("b", priority=1), health=health)
    health.rest("a", 60.0, now=100.0)
    health.rest("b", 10.0, now=100.0)
    assert p.first(101.0).backend.name == "b"


def test_ejection_after_consecutive_errors_and_return() -> None:
    health = Health()
    outlier = OutlierPolicy(consecutive_5xx=2, base_ejection=5.0)
    p = plan(ref("a"), ref("b"), health=health, outlier=outlier)
    assert not health.failed("a", 500, outlier, now=10.0)
    health.succeeded("a")  # not consecutive any more
    assert not health.failed("a", 500, outlier, now=10.0)
    assert health.failed("a", 502, outlier, now=10.0)
    assert {p.first(12.0).backend.name for _ in range(50)} == {"b"}
    assert "a" in {p.first(15.5).backend.name for _ in range(50)}  # back after baseEjectionTime
    assert not health.failed("a", 404, outlier, now=16.0)  # a 4xx is not a backend fault


def test_local_failures_count_as_gateway_errors_unless_split() -> None:
    health = Health()
    assert health.failed("a", None, OutlierPolicy(consecutive_5xx=None, consecutive_gateway=1), now=1.0)
    split = OutlierPolicy(consecutive_5xx=1, split_local=True, consecutive_local=2)
    assert not health.failed("b", None, split, now=1.0)
    assert health.failed("b", None, split, now=1.0)


def test_max_ejection_percent_keeps_some_backends_in() -> None:
    health = Health()
    outlier = OutlierPolicy(consecutive_5xx=1, max_ejection_percent=50)
    p = plan(ref("a"), ref("b"), ref("c"), ref("d"), health=health, outlier=outlier)
    for name in "abc":
        health.failed(name, 500, outlier, now=1.0 + ord(name))
    assert p.unavailable(p.tiers[0], 110.0) == {"a", "b"}  # 50 % of four: the first two ejected


def test_least_request_prefers_the_idle_backend() -> None:
    health = Health()
    p = plan(ref("a"), ref("b"), health=health, balancer="LeastRequest")
    health.state("a").outstanding = 5
    assert {p.first(0.0).backend.name for _ in range(20)} == {"b"}


def test_latency_aware_moves_to_the_faster_and_back() -> None:
    health = Health()
    p = plan(ref("a"), ref("b"), health=health, balancer="LatencyAware")
    latency = {"a": 0.02, "b": 0.2}
    now = 0.0

    def run(n: int) -> Counter[str]:
        nonlocal now
        picks: Counter[str] = Counter()
        for _ in range(n):
            now += 0.01
            name = p.first(now).backend.name
            picks[name] += 1
            health.observe_latency(name, latency[name], now)
        return picks

    run(100)
    assert run(200)["a"] >= 170
    latency.update(a=0.3, b=0.01)  # a slows down, b recovers
    run(200)
    assert run(200)["b"] >= 170


def test_retry_policy_decisions() -> None:
    default = RetryPolicy()
    assert default.retries_status(503) and default.retries_status(429)
    assert not default.retries_status(400) and not default.retries_status(404)
    assert default.retries_failure("connect-failure") and default.retries_failure("timeout")
    only_500 = RetryPolicy(triggers=frozenset({"retriable-status-codes"}), status_codes=frozenset({500}))
    assert only_500.retries_status(500) and not only_500.retries_status(503)
    assert not only_500.retries_failure("connect-failure")
    assert not RetryPolicy(status_codes=frozenset({400})).retries_status(400)  # a 400 never


def test_retry_after_forms() -> None:
    assert retry_after([(b"Retry-After", b"7")]) == 7.0
    assert retry_after([(b"retry-after", b"Wed, 21 Oct 2015 07:28:00 GMT")], now_wall=1445412470.0) == 10.0
    assert retry_after([(b"retry-after", b"soon")]) is None
    assert retry_after([]) is None
