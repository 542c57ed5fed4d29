"""Guardrails filter: request rules on the parsed body before it leaves; response rules on the way back."""

from __future__ import annotations

from functools import partial

import orjson

from sluicegate.config.runtime import RuntimeConfig
from sluicegate.core.context import RequestContext
from sluicegate.filters.chain import Filter
from sluicegate.guardrails.engine import GuardRule, guard_request, request_texts
from sluicegate.guardrails.moderation import ModerationClient
from sluicegate.guardrails.response import StreamGuard, guard_unary
from sluicegate.upstream.pool import Pools

# operations whose bodies carry prompts and completions, and the client API that shapes them
_APIS = {"chat": "openai", "completion": "openai", "messages": "anthropic", "embeddings": "openai"}


class Guardrails(Filter):
    """Applies the GuardrailPolicy rules of the matched route; built only when some policy exists."""

    def __init__(self, config: RuntimeConfig, pools: Pools) -> None:
        guardrails = config.guardrails
        self.moderation = ModerationClient(pools)
        self.config = guardrails
        # per route: (request rules, response rules, moderation rules), split once per config
        self.split: dict[str, tuple[tuple[GuardRule, ...], ...]] = {}
        for route in {rule.route for rule in config.rules}:
            rules = guardrails.rules_for(route)
            self.split[route] = (
                tuple(r for r in rules if r.request and r.moderation is None),
                tuple(r for r in rules if r.response and r.moderation is None),
                tuple(r for r in rules if r.request and r.moderation is not None),
            )

    async def on_request(self, ctx: RequestContext) -> None:
        """Block, redact or log the prompt; arm the response hook when the route has response rules."""
        api = _APIS.get(ctx.operation)
        if api is None or ctx.rule is None or ctx.body is None:
            return
        request_rules, response_rules, moderated = self.split.get(ctx.rule.route, ((), (), ()))
        if request_rules and guard_request(request_rules, ctx.body):
            ctx.request.body = orjson.dumps(ctx.body)  # passthroughs forward these bytes
        for rule in moderated:
            await self.moderation.check(rule, request_texts(ctx.body), "request")
        if response_rules and ctx.operation != "embeddings":
            if ctx.stream:
                ctx.response_filter = StreamGuard(response_rules, api)
            else:
                ctx.response_filter = partial(_unary, response_rules, api)


def _unary(rules: tuple[GuardRule, ...], api: str, out: bytes, end: bool) -> bytes:
    return guard_unary(rules, api, out)
