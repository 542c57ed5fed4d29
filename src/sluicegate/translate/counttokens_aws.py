"""Anthropic count_tokens -> AWS Bedrock CountTokens (`POST /model/{id}/count-tokens`), as Envoy AI Gateway.

Both AWS schemas count through the same operation; only the input differs:
- AWSBedrock: `{"input": {"converse": {messages, system, toolConfig, additionalModelRequestFields}}}`,
  the Converse request the Messages call would send, cut to the fields CountTokens takes;
- AWSAnthropic: `{"input": {"invokeModel": {"body": ...}}}`, the InvokeModel body the Messages call would
  send; `body` is a blob, so on the wire it is the base64 of that JSON (as boto3 sends it).
bodyMutation applies to that model body (the upstream body of the Messages call the count stands for).
The answer `{"inputTokens": N}` becomes `{"input_tokens": N}`; errors come back in Anthropic's envelope.
"""

from __future__ import annotations

import base64

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.usage import Usage
from sluicegate.translate import converse as cv
from sluicegate.translate.anthropic_awsanthropic import AnthropicToAWSAnthropic
from sluicegate.translate.anthropic_awsbedrock import AnthropicToAWSBedrock
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps, upstream_json_object

# The members of bedrock-runtime's ConverseTokensRequest (botocore's service model).
CONVERSE_TOKEN_FIELDS = ("messages", "system", "toolConfig", "additionalModelRequestFields")
_JSON_HEADERS = (("content-type", "application/json"), ("accept", "application/json"))


def count_tokens_request(model: str, counted: dict) -> UpstreamRequest:
    """POST /model/{id}/count-tokens with `{"input": counted}`."""
    target = cv.model_target(model, "count-tokens")
    return UpstreamRequest("POST", target, list(_JSON_HEADERS), dumps({"input": counted}))


class _CountTokensAnswer:
    """`{"inputTokens": N}` -> `{"input_tokens": N}`; the unary JSON body is gathered first."""

    _parts: list[bytes]

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The headers as they are (CountTokens answers JSON)."""
        return headers

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """Anthropic's count_tokens answer at the end of the body."""
        self._parts.append(chunk)
        if not end:
            return b"", None
        counted = upstream_json_object(b"".join(self._parts), "AWS Bedrock")
        tokens = counted.get("inputTokens")
        return dumps({"input_tokens": tokens if isinstance(tokens, int) else 0}), None


class AnthropicCountTokensToAWSBedrock(_CountTokensAnswer, AnthropicToAWSBedrock):
    """Messages count_tokens -> CountTokens with the Converse input."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        super().__init__(ctx, ref)
        self.stream = False

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The Converse request's countable fields, in `input.converse`."""
        converse = apply_body_mutation(self.converse_body(ctx), self.ref)
        counted = {name: converse[name] for name in CONVERSE_TOKEN_FIELDS if name in converse}
        return count_tokens_request(self.response_model, {"converse": counted})


class AnthropicCountTokensToAWSAnthropic(_CountTokensAnswer, AnthropicToAWSAnthropic):
    """Messages count_tokens -> CountTokens with the InvokeModel input (Claude's Messages body)."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        super().__init__(ctx, ref)
        self.stream = False

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The InvokeModel body the Messages call would send, base64 in `input.invokeModel.body`."""
        invoke = super().request(ctx).body
        encoded = base64.b64encode(invoke).decode("ascii")
        return count_tokens_request(self.response_model, {"invokeModel": {"body": encoded}})
