"""bodyMutation lands in the body sent upstream (after translation), modelNameOverride before: one table.

As Envoy AI Gateway: `remove` and `set` act on the top-level fields of the provider's body, so a field
that exists only after translation can be removed, and a provider-only field can be set. For count_tokens
on AWS the mutation acts on the model body the count stands for (Converse or InvokeModel), not on the
`{"input": ...}` wrapper.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from sluicegate.config.runtime import Backend, BackendRef, BodyMutation, Endpoint, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.translate.anthropic_openai import AnthropicToOpenAI
from sluicegate.translate.base import apply_body_mutation, mutated_body
from sluicegate.translate.counttokens_aws import (
    AnthropicCountTokensToAWSAnthropic,
    AnthropicCountTokensToAWSBedrock,
)
from sluicegate.translate.openai_anthropic import OpenAIToAnthropic
from sluicegate.translate.openai_awsanthropic import OpenAIToAWSAnthropic
from sluicegate.translate.openai_awsbedrock import OpenAIToAWSBedrock
from sluicegate.translate.openai_gcpanthropic import OpenAIToGCPAnthropic
from sluicegate.translate.openai_gcpvertexai import OpenAIToGCPVertexAI

CHAT = {"model": "m", "max_completion_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
COUNT = {"model": "m", "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]}


def _converse_of_count(body: dict[str, Any]) -> dict[str, Any]:
    return body["input"]["converse"]


def _invoke_of_count(body: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(base64.b64decode(body["input"]["invokeModel"]["body"]))


# (id, factory, schema, client body, operation, set, remove, the upstream field the mutation must remove,
#  how to find the mutated body in the upstream body)
CASES = [
    # Anthropic family: OpenAI chat -> Anthropic Messages (max_tokens exists only after translation)
    ("openai->anthropic", OpenAIToAnthropic, "Anthropic", CHAT, "chat", {"top_k": 5}, "max_tokens", None),
    (
        "openai->awsanthropic",
        OpenAIToAWSAnthropic,
        "AWSAnthropic",
        CHAT,
        "chat",
        {"top_k": 5},
        "max_tokens",
        None,
    ),
    (
        "openai->gcpanthropic",
        OpenAIToGCPAnthropic,
        "GCPAnthropic",
        CHAT,
        "chat",
        {"top_k": 5},
        "max_tokens",
        None,
    ),
    # OpenAI family from Anthropic Messages (max_completion_tokens exists only after translation)
    (
        "anthropic->openai",
        AnthropicToOpenAI,
        "OpenAI",
        MESSAGES,
        "messages",
        {"seed": 7},
        "max_completion_tokens",
        None,
    ),
    # Bedrock Converse (inferenceConfig exists only after translation)
    (
        "openai->awsbedrock",
        OpenAIToAWSBedrock,
        "AWSBedrock",
        CHAT,
        "chat",
        {"performanceConfig": {"latency": "optimized"}},
        "inferenceConfig",
        None,
    ),
    # Gemini (generationConfig exists only after translation)
    (
        "openai->gcpvertexai",
        OpenAIToGCPVertexAI,
        "GCPVertexAI",
        CHAT,
        "chat",
        {"safetySettings": []},
        "generationConfig",
        None,
    ),
    # count_tokens on AWS: the mutation acts on the counted model body
    (
        "count_tokens->awsbedrock",
        AnthropicCountTokensToAWSBedrock,
        "AWSBedrock",
        COUNT,
        "count_tokens",
        {"additionalModelRequestFields": {"k": 1}},
        "system",
        _converse_of_count,
    ),
    (
        "count_tokens->awsanthropic",
        AnthropicCountTokensToAWSAnthropic,
        "AWSAnthropic",
        COUNT,
        "count_tokens",
        {"top_k": 5},
        "max_tokens",
        _invoke_of_count,
    ),
]


def _ref(schema: str, set_: dict[str, Any], remove: str, override: str | None = None) -> BackendRef:
    return BackendRef(
        Backend("default/b", Schema(schema), (Endpoint("127.0.0.1", 1, False),)),
        model_name_override=override,
        body_mutation=BodyMutation(tuple(set_.items()), (remove,)),
    )


def _ctx(body: dict[str, Any], operation: str) -> RequestContext:
    ctx = RequestContext(Request("POST", "/", "", {}, orjson.dumps(body), []), operation)
    ctx.body, ctx.model, ctx.stream = dict(body), body["model"], False
    return ctx


@pytest.mark.parametrize(
    ("factory", "schema", "body", "operation", "set_", "remove", "inner"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_body_mutation_lands_in_the_upstream_body(
    factory: Any,
    schema: str,
    body: dict[str, Any],
    operation: str,
    set_: dict[str, Any],
    remove: str,
    inner: Any,
) -> None:
    # Without a mutation the translated body has the field the mutation removes: it exists only upstream.
    plain_ctx = _ctx(body, operation)
    plain = orjson.loads(factory(plain_ctx, _ref(schema, {}, "")).request(plain_ctx).body)
    plain = inner(plain) if inner else plain
    assert remove in plain
    ctx = _ctx(body, operation)
    upstream = orjson.loads(factory(ctx, _ref(schema, set_, remove)).request(ctx).body)
    mutated = inner(upstream) if inner else upstream
    assert remove not in mutated
    for name, value in set_.items():
        assert mutated[name] == value
    assert ctx.body == body  # the client's body is left alone


def test_model_name_override_is_applied_before_translation() -> None:
    ctx = _ctx(CHAT, "chat")
    ref = _ref("Anthropic", {"top_k": 5}, "max_tokens", override="claude-real")
    upstream = orjson.loads(OpenAIToAnthropic(ctx, ref).request(ctx).body)
    assert upstream["model"] == "claude-real" and upstream["top_k"] == 5 and "max_tokens" not in upstream
    ctx = _ctx(MESSAGES, "messages")
    upstream = orjson.loads(
        AnthropicToOpenAI(ctx, _ref("OpenAI", {}, "", override="gpt-real")).request(ctx).body
    )
    assert upstream["model"] == "gpt-real"


def test_passthrough_helpers() -> None:
    ref = _ref("OpenAI", {"temperature": 0.5}, "user", override="o")
    ctx = _ctx({**CHAT, "user": "u"}, "chat")
    assert mutated_body(ctx, ref) == {**CHAT, "model": "o", "temperature": 0.5}
    assert mutated_body(ctx, BackendRef(ref.backend)) is None
    assert apply_body_mutation({"a": 1, "user": 2}, ref) == {"a": 1, "temperature": 0.5}
