"""Vertex AI translators (Gemini and Claude on Vertex): golden tables per pair, and the conversions' edges.

Each case under tests/golden/<pair>/<case>/ holds config.json, request.json, upstream_request.json,
upstream_response.json and client_response.json (streams as event lists, fed to the translator in small
pieces; Gemini's own frames end in CRLF as Vertex sends them). Generated tool-call ids are shown as
`call_<generated>`. `SLUICEGATE_REGOLDEN=1 pytest tests/translate/test_gemini.py` rewrites the expected files.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
import pytest

from goldens import ENDPOINTS, REGOLDEN, cases, load, parse_stream, save, usage_dict
from sluicegate.config.runtime import Backend, BackendRef, BodyMutation, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.translate import gemini as g
from sluicegate.translate.anthropic_gcpanthropic import AnthropicToGCPAnthropic
from sluicegate.translate.anthropic_gcpvertexai import (
    AnthropicCountTokensToGCPVertexAI,
    AnthropicToGCPVertexAI,
)
from sluicegate.translate.embeddings_gcpvertexai import EmbeddingsToGCPVertexAI
from sluicegate.translate.openai_gcpanthropic import OpenAIToGCPAnthropic
from sluicegate.translate.openai_gcpvertexai import OpenAIToGCPVertexAI, to_gemini

PAIRS = {
    "openai_gcpvertexai": "chat",
    "anthropic_gcpvertexai": "messages",
    "openai_gcpanthropic": "chat",
    "anthropic_gcpanthropic": "messages",
    "embeddings_gcpvertexai": "embeddings",
}
CASES = cases(PAIRS)
_GENERATED = re.compile(r"call_[0-9a-f]{24}")


def make(pair: str, config: dict[str, Any], request: dict[str, Any]) -> tuple[Any, RequestContext]:
    mutation = config.get("body_mutation", {})
    ref = BackendRef(
        Backend("default/vertex", Schema(**config["schema"]), ENDPOINTS),
        model_name_override=config.get("model_name_override"),
        body_mutation=BodyMutation(tuple(mutation.get("set", {}).items()), tuple(mutation.get("remove", ()))),
    )
    operation = config.get("operation", PAIRS[pair])
    ctx = RequestContext(Request("POST", "/", "", {}, orjson.dumps(request), []), operation)
    ctx.body, ctx.model, ctx.stream = request, request["model"], request.get("stream") is True
    factories = {
        "openai_gcpvertexai": OpenAIToGCPVertexAI,
        "anthropic_gcpvertexai": AnthropicCountTokensToGCPVertexAI
        if operation == "count_tokens"
        else AnthropicToGCPVertexAI,
        "openai_gcpanthropic": OpenAIToGCPAnthropic,
        "anthropic_gcpanthropic": AnthropicToGCPAnthropic,
        "embeddings_gcpvertexai": EmbeddingsToGCPVertexAI,
    }
    return factories[pair](ctx, ref), ctx


def frame(pair: str, event: Any) -> bytes:
    """An upstream stream event as its wire bytes: Anthropic SSE, or Vertex's CRLF-framed SSE."""
    if pair.endswith("_gcpanthropic"):
        return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
    return b"data: " + orjson.dumps(event) + b"\r\n\r\n"


def normalize(value: Any) -> Any:
    """Drop `created`, show generated tool-call ids as call_<generated>."""
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if k != "created"}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        return _GENERATED.sub("call_<generated>", value)
    return value


@pytest.mark.parametrize(("pair", "case"), CASES)
def test_golden(pair: str, case: str) -> None:
    config, request = load(pair, case, "config"), load(pair, case, "request")
    translator, ctx = make(pair, config, request)
    upstream = translator.request(ctx)
    actual_request = {
        "method": upstream.method,
        "target": upstream.target,
        "headers": [list(h) for h in upstream.headers],
        "body": normalize(orjson.loads(upstream.body)),
    }
    response = load(pair, case, "upstream_response")
    status, headers = response["status"], [(k.encode(), v.encode()) for k, v in response["headers"].items()]
    client: dict[str, Any] = {"status": status}
    if status >= 400:
        body = response["body"]
        raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
        client["body"] = orjson.loads(translator.error(status, raw))
    else:
        client["headers"] = {k.decode(): v.decode() for k, v in translator.response_headers(status, headers)}
        if "events" in response:
            wire = b"".join(frame(pair, e) for e in response["events"])
            out, usage = [], None
            for i in range(0, len(wire), 11):  # chunk boundaries fall anywhere, CRLF pairs split too
                sent, got = translator.response_body(wire[i : i + 11], False)
                out.append(sent)
                usage = got or usage
            sent, got = translator.response_body(b"", True)
            out.append(sent)
            usage = got or usage
            client["events"] = parse_stream(b"".join(out), pair.startswith("anthropic_"), normalize)
        else:
            out, usage = translator.response_body(orjson.dumps(response["body"]), True)
            client["body"] = normalize(orjson.loads(out))
        client["usage"] = usage_dict(usage)
        client["model"] = translator.response_model
    if REGOLDEN:
        save(pair, case, "upstream_request", actual_request)
        save(pair, case, "client_response", client)
    assert actual_request == load(pair, case, "upstream_request")
    assert client == load(pair, case, "client_response")


# Conversions' edges


def test_tool_call_ids_carry_signatures_both_ways() -> None:
    signature = base64.b64encode(bytes(range(256))).decode()  # has + and / and padding
    call_id = g.new_tool_call_id(signature)
    assert re.fullmatch(r"call_[0-9a-f]{24}_ts_[A-Za-z0-9_-]+", call_id)  # fits Anthropic's tool id pattern
    assert g.signature_of_id(call_id) == signature
    assert g.signature_of_id(g.new_tool_call_id()) is None
    assert g.signature_of_id("toolu_01abc") is None
    assert g.new_tool_call_id() != g.new_tool_call_id()


def test_model_parts_place_signatures() -> None:
    sig = "c2ln"
    calls = [("call", ("a", {}, None)), ("call", ("b", {}, None))]
    parts = g.model_parts([("text", "x"), *calls], sig)
    assert parts[1] == {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": sig}
    assert "thoughtSignature" not in parts[2]
    assert g.model_parts(calls, None)[0]["thoughtSignature"] == g.DUMMY_SIGNATURE
    assert g.model_parts([("thought", "t"), ("text", "x")], sig) == [
        {"text": "t", "thought": True},
        {"text": "x", "thoughtSignature": sig},
    ]
    assert g.model_parts([("thought", "t")], sig) == [{"text": "t", "thought": True, "thoughtSignature": sig}]


def test_json_schema_conversion_for_old_models() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "$defs": {"Unit": {"type": "string", "enum": ["c", "f"]}},
        "properties": {
            "unit": {"$ref": "#/$defs/Unit"},
            "note": {"type": ["string", "null"], "description": "free text"},
            "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "fixed": {"const": "x"},
        },
        "required": ["unit"],
    }
    assert g.to_gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "unit": {"type": "STRING", "enum": ["c", "f"]},
            "note": {"type": "STRING", "nullable": True, "description": "free text"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "nullable": True}},
            "fixed": {"enum": ["x"]},
        },
        "required": ["unit"],
    }
    looped = {"type": "object", "properties": {"self": {"$ref": "#"}}}
    with pytest.raises(GatewayError) as caught:
        g.to_gemini_schema(looped)
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),
        ("gemini-3-flash", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
        ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH", "includeThoughts": True}),
        ("gemini-3-flash", "minimal", {"thinkingLevel": "MINIMAL"}),
    ],
)
def test_reasoning_effort(model: str, effort: str, expected: dict[str, Any]) -> None:
    assert g.thinking_from_effort(effort, model) == expected


def test_version_gate() -> None:
    assert g.takes_json_schema("gemini-2.5-flash") and g.takes_json_schema("gemini-3-pro-preview")
    assert not g.takes_json_schema("gemini-1.5-pro-003") and not g.takes_json_schema("gemini-2.0-flash")
    assert g.model_target("google", "m@1", "streamGenerateContent", "alt=sse") == (
        "/publishers/google/models/m@1:streamGenerateContent?alt=sse"
    )


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (_chat(messages=[]), 400, "non-empty"),
        (_chat(messages=[{"role": "robot", "content": "x"}]), 400, "not a chat role"),
        (_chat(tool_choice="sometimes"), 422, "tool_choice"),
        (_chat(tools=[{"type": "code_interpreter"}]), 422, "code_interpreter"),
        (_chat(reasoning_effort="extreme"), 422, "reasoning_effort"),
        (_chat(response_format={"type": "grammar"}), 422, "grammar"),
        (_chat(modalities=["text", "audio"]), 422, "Audio output"),
        (_chat(messages=[{"role": "tool", "tool_call_id": "call_x", "content": "42"}]), 422, "call_x"),
        (
            _chat(
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}
                ]
            ),
            422,
            "data URI",
        ),
        (
            _chat(
                messages=[
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{not json"}}],
                    }
                ]
            ),
            422,
            "not valid JSON",
        ),
    ],
)
def test_untranslatable_requests(body: dict[str, Any], status: int, words: str) -> None:
    with pytest.raises(GatewayError) as caught:
        to_gemini(body, body["model"])
    assert caught.value.status == status and words in caught.value.message


def test_google_errors() -> None:
    body = b'[{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}]'
    assert g.google_error(body) == ("bad", "INVALID_ARGUMENT")
    assert g.google_error(b"upstream connect error") == ("upstream connect error", None)
    envelope = orjson.loads(g.gemini_error(503, b"", "anthropic"))
    assert envelope["error"] == {"type": "api_error", "message": "the Vertex AI backend returned status 503"}
