"""OpenAI <-> Anthropic translators (and the OpenAI passthroughs): golden tables per pair, and edges.

Each case under tests/golden/<pair>/<case>/ holds config.json, request.json, upstream_request.json,
upstream_response.json and client_response.json (streams as event lists, fed to the translator in small
pieces). `SLUICEGATE_REGOLDEN=1 pytest tests/translate/test_claude.py` rewrites the expected files.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from goldens import ENDPOINTS, REGOLDEN, cases, load, parse_stream, save, usage_dict, without_created
from sluicegate.config.runtime import Backend, BackendRef, BodyMutation, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.translate.anthropic_anthropic import AnthropicToAnthropic
from sluicegate.translate.anthropic_azureopenai import AnthropicToAzureOpenAI
from sluicegate.translate.anthropic_openai import AnthropicToOpenAI
from sluicegate.translate.claude import (
    DEFAULT_MAX_TOKENS,
    ClaudeStreamToOpenAI,
    claude_error_to_openai,
    claude_usage,
    openai_to_claude,
)
from sluicegate.translate.claude_openai import OpenAIStreamToClaude, claude_request_to_openai
from sluicegate.translate.openai_anthropic import OpenAIToAnthropic
from sluicegate.translate.openai_azureopenai import OpenAIToAzureOpenAI
from sluicegate.translate.openai_openai import OpenAIToOpenAI

PAIRS = {
    "openai_anthropic": "chat",
    "anthropic_openai": "messages",
    "anthropic_anthropic": "messages",
    "openai_openai": "chat",
}
CASES = cases(PAIRS)


def make_translator(pair: str, config: dict[str, Any], request: dict[str, Any]) -> tuple[Any, RequestContext]:
    schema = Schema(**config["schema"])
    mutation = config.get("body_mutation", {})
    ref = BackendRef(
        Backend("default/b", schema, ENDPOINTS),
        model_name_override=config.get("model_name_override"),
        body_mutation=BodyMutation(tuple(mutation.get("set", {}).items()), tuple(mutation.get("remove", ()))),
    )
    raw = orjson.dumps(request)
    headers = config.get("headers", {})
    ctx = RequestContext(Request("POST", "/", "", headers, raw, []), config.get("operation", PAIRS[pair]))
    ctx.body, ctx.model, ctx.stream = request, request["model"], request.get("stream") is True
    if pair == "openai_anthropic":
        return OpenAIToAnthropic(ctx, ref), ctx
    if pair == "anthropic_anthropic":
        return AnthropicToAnthropic(ctx, ref), ctx
    if pair == "openai_openai":
        return (OpenAIToAzureOpenAI if schema.name == "AzureOpenAI" else OpenAIToOpenAI)(ctx, ref), ctx
    factory = AnthropicToAzureOpenAI if schema.name == "AzureOpenAI" else AnthropicToOpenAI
    return factory(ctx, ref), ctx


def frame(pair: str, event: Any) -> bytes:
    """An upstream stream event as its wire bytes."""
    if pair.endswith("_anthropic"):
        return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
    return b"data: " + (event.encode() if isinstance(event, str) else orjson.dumps(event)) + b"\n\n"


@pytest.mark.parametrize(("pair", "case"), CASES)
def test_golden(pair: str, case: str) -> None:
    config, request = load(pair, case, "config"), load(pair, case, "request")
    translator, ctx = make_translator(pair, config, request)
    upstream = translator.request(ctx)
    actual_request = {
        "method": upstream.method,
        "target": upstream.target,
        "headers": [list(h) for h in upstream.headers],
        "body": orjson.loads(upstream.body),
    }
    passthrough = pair in ("anthropic_anthropic", "openai_openai")
    if passthrough and "model_name_override" not in config and "body_mutation" not in config:
        assert upstream.body is ctx.request.body  # passthrough-first: the client's bytes
    response = load(pair, case, "upstream_response")
    status, headers = response["status"], [(k.encode(), v.encode()) for k, v in response["headers"].items()]
    client: dict[str, Any] = {"status": status}
    if status >= 400:
        body = response["body"]
        raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
        client["body"] = orjson.loads(translator.error(status, raw))
    else:
        assert translator.response_headers(status, headers) == headers
        if "events" in response:
            wire = b"".join(frame(pair, e) for e in response["events"])
            out, usage = [], None
            for i in range(0, len(wire), 13):  # chunk boundaries fall anywhere
                sent, got = translator.response_body(wire[i : i + 13], False)
                out.append(sent)
                usage = got or usage
            sent, got = translator.response_body(b"", True)
            out.append(sent)
            usage = got or usage
            relayed = b"".join(out)
            if passthrough:
                assert relayed == wire  # the stream is relayed untouched
            client["events"] = parse_stream(relayed, anthropic=pair.startswith("anthropic_"))
        else:
            out, usage = translator.response_body(orjson.dumps(response["body"]), True)
            client["body"] = without_created(orjson.loads(out))
        client["usage"] = usage_dict(usage)
        client["model"] = translator.response_model
    if REGOLDEN:
        save(pair, case, "upstream_request", actual_request)
        save(pair, case, "client_response", client)
    assert actual_request == load(pair, case, "upstream_request")
    assert client == load(pair, case, "client_response")


# Conversions' edges


def test_default_max_tokens_grows_with_the_thinking_budget() -> None:
    body = {
        "model": "c",
        "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "enabled", "budget_tokens": 8000},
    }
    assert openai_to_claude(body)["max_tokens"] == 8000 + DEFAULT_MAX_TOKENS
    assert openai_to_claude({**body, "max_tokens": 9000})["max_tokens"] == 9000


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"n": 2}, 422, "n other than 1"),
        ({"tools": [{"type": "code_interpreter"}]}, 422, "tool type 'code_interpreter'"),
        (
            {"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]},
            422,
            "tool_choice",
        ),
        ({"reasoning_effort": "extreme"}, 422, "reasoning_effort"),
        ({"messages": []}, 400, "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "unknown message role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            422,
            "audio",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}],
                    }
                ]
            },
            422,
            "image/bmp",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                    }
                ]
            },
            422,
            "http(s)",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}],
                    }
                ]
            },
            400,
            "not valid JSON",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}
                ]
            },
            400,
            "needs an id",
        ),
    ],
)
def test_openai_requests_that_cannot_be_translated(change: dict[str, Any], status: int, message: str) -> None:
    body = {"model": "c", "messages": [{"role": "user", "content": "x"}], **change}
    with pytest.raises(GatewayError) as caught:
        openai_to_claude(body)
    assert caught.value.status == status and message in caught.value.message


def test_tool_choice_forms() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    base = {"model": "c", "messages": [{"role": "user", "content": "x"}], "tools": tools}
    assert openai_to_claude({**base, "tool_choice": "none"})["tool_choice"] == {"type": "none"}
    assert openai_to_claude({**base, "tool_choice": "auto"})["tool_choice"] == {"type": "auto"}
    assert openai_to_claude({**base, "parallel_tool_calls": False})["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    assert "tool_choice" not in openai_to_claude(base)
    assert openai_to_claude(base)["tools"] == [
        {"name": "f", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_pdf_and_url_documents() -> None:
    parts = [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/doc.pdf?x=1"}},
        {"type": "image_url", "image_url": {"url": "data:application/pdf;base64,JVBERi0="}},
    ]
    blocks = openai_to_claude({"model": "c", "messages": [{"role": "user", "content": parts}]})["messages"][
        0
    ]["content"]
    assert [(b["type"], b["source"]["type"]) for b in blocks] == [
        ("document", "base64"),
        ("document", "url"),
        ("document", "base64"),
    ]


def test_claude_usage_normalises_explicit_caching() -> None:
    usage = claude_usage(
        {
            "input_tokens": 3,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 10,
            "output_tokens": 7,
        }
    )
    assert usage == Usage(113, 7, 120, 100, 10, 0)
    assert claude_usage({}) == Usage()


def test_error_envelopes_from_any_body() -> None:
    anthropic_body = b'{"type":"error","error":{"type":"not_found_error","message":"model: x"}}'
    assert orjson.loads(claude_error_to_openai(404, anthropic_body))["error"] == {
        "message": "model: x",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }
    assert orjson.loads(claude_error_to_openai(403, b'{"message":"denied"}'))["error"]["message"] == "denied"
    assert orjson.loads(claude_error_to_openai(500, b""))["error"] == {
        "message": "upstream returned status 500",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_stream_usage_is_known_even_without_message_delta() -> None:
    stream = ClaudeStreamToOpenAI("m", include_usage=True)
    stream.event(
        {"type": "message_start", "message": {"id": "msg", "usage": {"input_tokens": 5, "output_tokens": 1}}}
    )
    assert stream.usage == Usage(5, 1, 6, 0, 0, 0)
    tail = stream.finish()
    assert tail.endswith(b"data: [DONE]\n\n") and b'"prompt_tokens":5' in tail


def test_openai_stream_to_claude_is_empty_without_chunks() -> None:
    assert OpenAIStreamToClaude("m").finish() == b""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "server tool"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "document", "source": {"type": "text", "data": "x"}}],
                    }
                ]
            },
            "source type",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "search_result"}]}]}, "search_result"),
        ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ],
)
def test_anthropic_requests_that_cannot_go_to_openai(change: dict[str, Any], message: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **change}
    with pytest.raises(GatewayError) as caught:
        claude_request_to_openai(body)
    assert caught.value.status == 422 and message in caught.value.message
