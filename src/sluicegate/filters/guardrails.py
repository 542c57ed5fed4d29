"""Guardrails filter: request rules on the parsed body before it leaves; response rules on the way back.

Response moderation makes the response hook async (forward.py awaits an awaitable result); routes without
it keep the synchronous hook.
"""

from __future__ import annotations

from functools import partial

import orjson

from sluicegate.config.runtime import RuntimeConfig
from sluicegate.core.context import RequestContext
from sluicegate.filters.chain import Filter
from sluicegate.guardrails.engine import GuardRule, guard_request, request_texts
from sluicegate.guardrails.moderation import ModerationClient
from sluicegate.guardrails.response import ModeratedStream, StreamGuard, guard_unary, response_texts
from sluicegate.upstream.pool import Pools

# operations whose bodies carry prompts and completions, and the client API that shapes them
_APIS = {"chat": "openai", "completion": "openai", "messages": "anthropic", "embeddings": "openai"}
MODERATION_STRIDE = 1000  # a stream's text is also moderated every this many new characters


class Guardrails(Filter):
    """Applies the GuardrailPolicy rules of the matched route; built only when some policy exists."""

    def __init__(self, config: RuntimeConfig, pools: Pools) -> None:
        guardrails = config.guardrails
        self.moderation = ModerationClient(pools)
        self.config = guardrails
        # per route with rules: (request rules, response rules, request moderation, response moderation),
        # split once; a route without rules is not listed, so that its requests pass at the first look-up
        self.split: dict[str, tuple[tuple[GuardRule, ...], ...]] = {}
        for route in {rule.route for rule in config.rules}:
            rules = guardrails.rules_for(route)
            if not rules:
                continue
            self.split[route] = (
                tuple(r for r in rules if r.request and r.moderation is None),
                tuple(r for r in rules if r.response and r.moderation is None),
                tuple(r for r in rules if r.request and r.moderation is not None),
                tuple(r for r in rules if r.response and r.moderation is not None),
            )

    async def on_request(self, ctx: RequestContext) -> None:
        """Block, redact or log the prompt; arm the response hook when the route has response rules."""
        api = _APIS.get(ctx.operation)
        if api is None or ctx.rule is None or ctx.body is None:
            return
        split = self.split.get(ctx.rule.route)
        if split is None:
            return
        request_rules, response_rules, moderated, moderated_response = split
        if request_rules and guard_request(request_rules, ctx.body):
            ctx.request.body = orjson.dumps(ctx.body)  # passthroughs forward these bytes
        for rule in moderated:
            await self.moderation.check(rule, request_texts(ctx.body), "request")
        if ctx.operation == "embeddings" or not (response_rules or moderated_response):
            return
        if not moderated_response:
            if ctx.stream:
                ctx.response_filter = StreamGuard(response_rules, api)
            else:
                ctx.response_filter = partial(_unary, response_rules, api)
        elif ctx.stream:
            window = max(rule.window for rule in moderated_response)
            guard = StreamGuard(response_rules, api, collect=True, window=window)
            check = partial(self._moderate, moderated_response)
            ctx.response_filter = ModeratedStream(guard, check, MODERATION_STRIDE)
        else:
            ctx.response_filter = partial(self._unary_moderated, response_rules, moderated_response, api)

    async def _moderate(self, rules: tuple[GuardRule, ...], texts: list[str]) -> None:
        for rule in rules:
            await self.moderation.check(rule, texts, "response")

    async def _unary_moderated(
        self, rules: tuple[GuardRule, ...], moderated: tuple[GuardRule, ...], api: str, out: bytes, end: bool
    ) -> bytes:
        """The answer after the detector rules, once the moderation backend has passed its text."""
        if rules:
            out = guard_unary(rules, api, out)
        await self._moderate(moderated, response_texts(api, out))
        return out


def _unary(rules: tuple[GuardRule, ...], api: str, out: bytes, end: bool) -> bytes:
    return guard_unary(rules, api, out)
