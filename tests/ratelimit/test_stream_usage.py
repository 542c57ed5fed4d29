"""Forced stream usage: the backend is asked for it, the client sees exactly the stream it asked for."""

from __future__ import annotations

import orjson
import pytest

from sluicegate.config.runtime import Backend, BackendRef, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.ratelimit.estimate import estimate_input_tokens, estimate_usage, requested_output_tokens
from sluicegate.translate.openai_openai import OpenAIToOpenAI

REF = BackendRef(Backend("ns/b", Schema("OpenAI"), ()))
HEAD = [(b"content-type", b"text/event-stream")]


def context(body: dict, force: bool) -> RequestContext:
    raw = orjson.dumps(body)
    ctx = RequestContext(Request("POST", "/v1/chat/completions", "", {}, raw, []), "chat")
    ctx.body, ctx.stream, ctx.force_usage = body, True, force
    return ctx


def event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


CHUNK = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
UPSTREAM = (
    event({**CHUNK, "usage": None})
    + event({**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None})
    + event({**CHUNK, "choices": [], "usage": USAGE})
    + b"data: [DONE]\n\n"
)
CLIENT = event(CHUNK) + event({**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
CLIENT += b"data: [DONE]\n\n"


def relay(translator: OpenAIToOpenAI, pieces: list[bytes]) -> tuple[bytes, object]:
    translator.response_headers(200, HEAD)
    out, usage = [], None
    for piece in pieces:
        data, found = translator.response_body(piece, False)
        out.append(data)
        usage = found or usage
    data, found = translator.response_body(b"", True)
    return b"".join(out) + data, found or usage


@pytest.mark.parametrize("size", [1, 7, 64, len(UPSTREAM)])
def test_forced_usage_is_read_and_hidden(size: int) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ctx = context(body, force=True)
    translator = OpenAIToOpenAI(ctx, REF)
    sent = orjson.loads(translator.request(ctx).body)
    assert sent["stream_options"] == {"include_usage": True} and sent["messages"] == body["messages"]
    pieces = [UPSTREAM[i : i + size] for i in range(0, len(UPSTREAM), size)]
    data, usage = relay(translator, pieces)
    assert data == CLIENT
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (3, 5)


def test_client_that_said_no_gets_no_usage() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": False, "x": 1}, "messages": []}
    ctx = context(body, force=True)
    translator = OpenAIToOpenAI(ctx, REF)
    assert orjson.loads(translator.request(ctx).body)["stream_options"] == {"include_usage": True, "x": 1}
    assert relay(translator, [UPSTREAM])[0] == CLIENT


def test_without_force_the_stream_passes_untouched() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    ctx = context(body, force=False)
    translator = OpenAIToOpenAI(ctx, REF)
    assert translator.request(ctx).body == ctx.request.body  # not re-serialized
    assert relay(translator, [UPSTREAM])[0] == UPSTREAM


def test_crlf_streams_and_spaced_json() -> None:
    spaced = (
        b'data: {"id": "c", "choices": [{"delta": {"content": "x"}}], "usage": null}\r\n\r\n'
        b'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    ctx = context({"model": "m", "stream": True}, force=True)
    data, usage = relay(OpenAIToOpenAI(ctx, REF), [spaced])
    assert data == b'data: {"id": "c", "choices": [{"delta": {"content": "x"}}]}\r\n\r\ndata: [DONE]\r\n\r\n'
    assert usage.output_tokens == 2


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({}, 0),
        ({"messages": [{"role": "user", "content": "x" * 30}]}, 10 + 4),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "abcdef"}]}]}, 2 + 4),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "A" * 9999}}]}
                ]
            },
            4,  # an image is not its base64 text
        ),
        ({"prompt": ["abc", "def"]}, 2),
        ({"prompt": [1, 2, 3, 4]}, 4),
        ({"input": "héllo"}, 2),
        ({"messages": [{"role": "system", "content": "ab"}, {"role": "user", "content": "cd"}]}, 2 + 8),
    ],
)
def test_prompt_estimate(body: dict, tokens: int) -> None:
    assert estimate_input_tokens(body) == tokens


def test_output_estimate() -> None:
    assert requested_output_tokens({"max_tokens": 100}) == 100
    assert requested_output_tokens({"max_completion_tokens": 50, "max_tokens": 100, "n": 3}) == 150
    assert requested_output_tokens({"max_tokens": True}) is None
    assert estimate_usage({"prompt": "abcdef"}, "completion", 77).output_tokens == 77
    assert estimate_usage({"input": "abcdef"}, "embeddings", 77).output_tokens == 0
    assert estimate_usage({"prompt": "abcdef", "max_tokens": 5}, "completion", 77).total_tokens == 7
