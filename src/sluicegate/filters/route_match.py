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
        # model -> rule, for the leading rules that match on the model alone (the usual config): the first
        # of them naming a model is the one the full scan would pick, since no other kind of rule comes before
        self.by_model: dict[str, Rule] = {}
        for rule in self.rules:
            models = _models_only(rule)
            if models is None:
                break
            for model in models:
                self.by_model.setdefault(model, rule)

    def match(self, headers: dict[str, str]) -> Rule | None:
        """The rule for these headers (with x-ai-eg-model already set from the body)."""
        found = self.by_model.get(headers.get(MODEL_HEADER, ""))
        if found is not None:
            return found
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


def _models_only(rule: Rule) -> list[str] | None:
    """The models a rule matches when it matches on nothing but an exact x-ai-eg-model, else None."""
    if rule.hostnames or not rule.matches:
        return None
    models = []
    for match in rule.matches:
        if len(match) != 1 or match[0].name != MODEL_HEADER or match[0].pattern is not None:
            return None
        models.append(match[0].value)
    return models
