"""Route match: the model (as header x-ai-eg-model) and other headers pick an AIGatewayRoute rule."""

from __future__ import annotations

from sluicegate.config.runtime import Rule, RuntimeConfig
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import ROUTE_NOT_FOUND, GatewayError
from sluicegate.filters.chain import Filter

MODEL_HEADER = "x-ai-eg-model"


def precedence(rule: Rule) -> tuple[int, int]:
    """Gateway API precedence, simplified: hostnames first, then rules with more header matches."""
    most_headers = max((len(match) for match in rule.matches), default=0)
    return (0 if rule.hostnames else 1, -most_headers)


class RouteMatch(Filter):
    """The first rule, by precedence then config order, whose hostnames and headers accept the request."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.rules = sorted(config.rules, key=precedence)  # stable: config order breaks ties

    def match(self, headers: dict[str, str]) -> Rule | None:
        """The rule for these headers (with x-ai-eg-model already set from the body)."""
        host = headers.get("host", "")
        for rule in self.rules:
            if rule.matches_host(host) and rule.matches_headers(headers):
                return rule
        return None

    async def on_request(self, ctx: RequestContext) -> None:
        """Set ctx.rule, or answer 404 the way Envoy AI Gateway does."""
        headers = ctx.request.headers
        headers[MODEL_HEADER] = ctx.model  # overwrite anything the client sent
        ctx.rule = self.match(headers)
        if ctx.rule is None:
            raise GatewayError(404, ROUTE_NOT_FOUND, code="model_not_found", param="model")
