"""Route match: precedence, hostnames, header matches, and the 404 Envoy AI Gateway gives."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from sluicegate.config.runtime import Backend, BackendRef, Endpoint, HeaderMatch, Rule, RuntimeConfig, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.errors import ROUTE_NOT_FOUND, GatewayError
from sluicegate.filters.route_match import RouteMatch

REF = (BackendRef(Backend("default/b", Schema("OpenAI"), (Endpoint("127.0.0.1", 1, False),))),)


def model(value: str) -> HeaderMatch:
    return HeaderMatch("x-ai-eg-model", "Exact", value)


def rule(name: str, *matches: tuple[HeaderMatch, ...], hostnames: tuple[str, ...] = ()) -> Rule:
    return Rule("default/r", name, hostnames, matches, REF)


def route(rules: list[Rule], model_name: str, headers: dict[str, str] | None = None) -> RequestContext:
    ctx = RequestContext(Request("POST", "/v1/chat/completions", "", dict(headers or {}), b"", []), "chat")
    ctx.model = model_name
    asyncio.run(RouteMatch(RuntimeConfig(tuple(rules), (), ())).on_request(ctx))
    return ctx


def test_more_specific_rule_wins_over_earlier_general_one() -> None:
    tenant = HeaderMatch("x-tenant", "RegularExpression", "a.*", re.compile("a.*"))
    rules = [rule("general", (model("m"),)), rule("tenant", (model("m"), tenant))]
    assert route(rules, "m", {"x-tenant": "abc"}).rule.name == "tenant"  # type: ignore[union-attr]
    assert route(rules, "m", {"x-tenant": "zzz"}).rule.name == "general"  # type: ignore[union-attr]


def test_hostname_routes_come_first_and_wildcards_match_subdomains() -> None:
    rules = [rule("any", (model("m"),)), rule("hosted", (model("m"),), hostnames=("*.example.com",))]
    assert route(rules, "m", {"host": "api.example.com:1975"}).rule.name == "hosted"  # type: ignore[union-attr]
    assert route(rules, "m", {"host": "example.com"}).rule.name == "any"  # type: ignore[union-attr]


def test_config_order_breaks_ties() -> None:
    rules = [rule("first", (model("m"),)), rule("second", (model("m"),))]
    assert route(rules, "m").rule.name == "first"  # type: ignore[union-attr]


def test_model_header_from_client_is_overwritten() -> None:
    with pytest.raises(GatewayError) as caught:
        route([rule("r", (model("m"),))], "other", {"x-ai-eg-model": "m"})
    assert caught.value.status == 404 and caught.value.message == ROUTE_NOT_FOUND


def test_rule_without_matches_matches_everything() -> None:
    assert route([rule("catch-all")], "anything").rule.name == "catch-all"  # type: ignore[union-attr]


def test_the_model_index_picks_what_the_full_scan_picks() -> None:
    """Random rule lists (model-only rules, hostnames, extra headers, catch-alls): index == scan."""
    rng = random.Random(7)
    tenant = HeaderMatch("x-tenant", "Exact", "a")
    for _ in range(500):
        rules = []
        for index in range(rng.randint(1, 6)):
            kind = rng.choice(["model", "model", "two-models", "tenant", "host", "catch-all"])
            models = tuple((model(rng.choice("mnop")),) for _ in range(2 if kind == "two-models" else 1))
            if kind == "tenant":
                rules.append(rule(f"r{index}", (model(rng.choice("mnop")), tenant)))
            elif kind == "host":
                rules.append(rule(f"r{index}", *models, hostnames=("api.example.com",)))
            elif kind == "catch-all":
                rules.append(rule(f"r{index}"))
            else:
                rules.append(rule(f"r{index}", *models))
        matcher = RouteMatch(RuntimeConfig(tuple(rules), (), ()))
        scan = RouteMatch(RuntimeConfig(tuple(rules), (), ()))
        scan.by_model = {}
        for name in "mnopq":
            for headers in ({}, {"x-tenant": "a"}, {"host": "api.example.com"}):
                headers = {**headers, "x-ai-eg-model": name}
                assert matcher.match(headers) is scan.match(headers), (rules, headers)
