"""OpenAI -> OpenAI/Azure translators: passthrough-first requests, usage and model read from any chunking."""

from __future__ import annotations

import orjson
import pytest

from sluicegate.config.runtime import Backend, BackendRef, BodyMutation, Endpoint, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.usage import Usage
from sluicegate.translate.openai_azureopenai import OpenAIToAzureOpenAI
from sluicegate.translate.openai_openai import OpenAIToOpenAI
from sluicegate.translate.sse import SSEEvents

BACKEND = Backend("default/b", Schema("OpenAI"), (Endpoint("127.0.0.1", 1, False),))
AZURE = Backend("default/az", Schema("AzureOpenAI", version="2024-10-21"), (Endpoint("127.0.0.1", 1, False),))


def context(body: dict, operation: str = "chat") -> RequestContext:
    raw = orjson.dumps(body)
    ctx = RequestContext(Request("POST", "/v1/chat/completions", "", {}, raw, []), operation)
    ctx.body, ctx.model, ctx.stream = body, body["model"], bool(body.get("stream"))
    return ctx


def test_untouched_body_is_forwarded_byte_for_byte() -> None:
    raw_body = {"model": "m", "messages": [], "weird_vendor_field": {"keep": [1, 2]}}
    ctx = context(raw_body)
    upstream = OpenAIToOpenAI(ctx, BackendRef(BACKEND)).request(ctx)
    assert upstream.body is ctx.request.body
    assert upstream.target == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("prefix", "operation", "target"),
    [
        (None, "chat", "/v1/chat/completions"),
        ("/openai/v1", "completion", "/openai/v1/completions"),
        ("", "embeddings", "/embeddings"),
    ],
)
def test_prefix_and_operation_make_the_path(prefix: str | None, operation: str, target: str) -> None:
    backend = Backend("default/b", Schema("OpenAI", prefix=prefix), BACKEND.endpoints)
    ctx = context({"model": "m"}, operation)
    assert OpenAIToOpenAI(ctx, BackendRef(backend)).request(ctx).target == target


def test_override_and_body_mutation_reserialize() -> None:
    ref = BackendRef(
        BACKEND,
        model_name_override="real",
        body_mutation=BodyMutation(set=(("temperature", 0.5),), remove=("user",)),
    )
    ctx = context({"model": "alias", "user": "u", "messages": []})
    sent = orjson.loads(OpenAIToOpenAI(ctx, ref).request(ctx).body)
    assert sent == {"model": "real", "messages": [], "temperature": 0.5}
    assert ctx.body == {"model": "alias", "user": "u", "messages": []}  # the parsed request is not mutated


def test_azure_path_uses_override_as_deployment() -> None:
    ctx = context({"model": "alias"}, "embeddings")
    upstream = OpenAIToAzureOpenAI(ctx, BackendRef(AZURE, model_name_override="dep/1")).request(ctx)
    assert upstream.target == "/openai/deployments/dep%2F1/embeddings?api-version=2024-10-21"


def test_unary_usage_and_model() -> None:
    ctx = context({"model": "m"})
    translator = OpenAIToOpenAI(ctx, BackendRef(BACKEND))
    translator.response_headers(200, [(b"content-type", b"application/json")])
    body = orjson.dumps(
        {
            "model": "m-2024",
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        }
    )
    assert translator.response_body(body[:7], False) == (b"", None)
    out, usage = translator.response_body(body[7:], True)
    assert out == body
    assert usage == Usage(
        input_tokens=10, output_tokens=5, total_tokens=15, cached_input_tokens=4, reasoning_tokens=2
    )
    assert translator.response_model == "m-2024"


STREAM = (
    b'data: {"id":"c","model":"m-stream","choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
    b'data: {"id":"c","model":"m-stream","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
    b'"total_tokens":4}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 7, 50, len(STREAM)])
def test_stream_usage_survives_any_chunking(size: int) -> None:
    ctx = context({"model": "m", "stream": True})
    translator = OpenAIToOpenAI(ctx, BackendRef(BACKEND))
    translator.response_headers(200, [(b"content-type", b"text/event-stream")])
    relayed, usages = b"", []
    for start in range(0, len(STREAM), size):
        out, usage = translator.response_body(STREAM[start : start + size], False)
        relayed += out
        usages += [usage] if usage else []
    assert relayed == STREAM  # passthrough: bytes unchanged
    assert usages == [Usage(input_tokens=3, output_tokens=1, total_tokens=4)]
    assert translator.response_model == "m-stream"


def test_non_json_error_gets_openai_envelope() -> None:
    ctx = context({"model": "m"})
    translator = OpenAIToOpenAI(ctx, BackendRef(BACKEND))
    assert translator.error(400, b'{"error": {"message": "x"}}') == b'{"error": {"message": "x"}}'
    error = orjson.loads(translator.error(502, b"<html>bad gateway</html>"))["error"]
    assert error["message"] == "<html>bad gateway</html>" and error["type"] == "server_error"


def test_sse_events_handle_crlf_and_multiline_data() -> None:
    events = SSEEvents()
    assert events.feed(b"event: x\r\ndata: a\r\ndata: b\r\n") == []
    assert events.feed(b"\r\ndata: c\r\n\r\n: comment\n\n") == [b"a\nb", b"c"]


def _stream_usage(events: list[dict], cut: int | None = None) -> Usage | None:
    """Feed SSE events (all in one piece, or cut every `cut` bytes); the last usage the translator saw."""
    ctx = context({"model": "m", "stream": True})
    translator = OpenAIToOpenAI(ctx, BackendRef(BACKEND))
    translator.response_headers(200, [(b"content-type", b"text/event-stream")])
    data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    pieces = [data] if cut is None else [data[i : i + cut] for i in range(0, len(data), cut)]
    usage = None
    for piece in pieces:
        out, found = translator.response_body(piece, False)
        assert out == piece
        usage = found or usage
    return translator.response_body(b"", True)[1] or usage


def _chunk(usage: dict | None, content: str = "x") -> dict:
    delta = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    return {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [delta], "usage": usage}


@pytest.mark.parametrize("cut", [None, 1, 7, 64])
def test_stream_usage_is_the_last_usage_object_wherever_it_is(cut: int | None) -> None:
    final = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
    # OpenAI: null on every chunk, the object on the last one
    last = {**_chunk(final), "choices": []}
    assert _stream_usage([_chunk(None), _chunk(None), last], cut) == Usage(5, 9, 14)
    # an object followed by null chunks in the same read is not lost
    assert _stream_usage([_chunk(None), _chunk(final), _chunk(None), _chunk(None)], cut) == Usage(5, 9, 14)
    # vLLM's continuous usage: an object on every chunk, the last one counts
    running = [_chunk({"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}) for n in range(10)]
    assert _stream_usage(running, cut) == Usage(5, 9, 14)
    # the word in the text is not a usage field
    assert _stream_usage([_chunk(None, 'say "usage": {"prompt_tokens": 1}')], cut) is None
