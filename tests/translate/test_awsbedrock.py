"""AWS translators: golden tables per pair (Converse and Claude on InvokeModel), Titan embeddings, the edges.

Each case under tests/golden/<pair>/<case>/ holds config.json, request.json, upstream_request.json,
upstream_response.json and client_response.json. A stream's upstream events are written as boto3 shows
them (`{"contentBlockDelta": {...}}`, `{"throttlingException": {"message"}}`) or, for InvokeModel, as the
Anthropic events the `chunk` frames wrap; the test encodes them as the binary event stream and feeds it
to the translator in small pieces. A request the translator refuses has `{"error": {status, message}}`
as its upstream_request. `SLUICEGATE_REGOLDEN=1 pytest tests/translate/test_awsbedrock.py` rewrites
the expected files.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest

from goldens import ENDPOINTS, REGOLDEN, cases, load, parse_stream, save, usage_dict, without_created
from sluicegate.config.runtime import Backend, BackendRef, BodyMutation, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.testing.eventstream_encoder import event as encode_event
from sluicegate.testing.eventstream_encoder import exception as encode_exception
from sluicegate.translate import converse as cv
from sluicegate.translate.anthropic_awsanthropic import AnthropicToAWSAnthropic
from sluicegate.translate.anthropic_awsbedrock import AnthropicToAWSBedrock
from sluicegate.translate.embeddings_awsbedrock import EmbeddingsToAWSBedrock
from sluicegate.translate.openai_awsanthropic import OpenAIToAWSAnthropic
from sluicegate.translate.openai_awsbedrock import OpenAIToAWSBedrock

PAIRS = {
    "openai_awsbedrock": ("chat", OpenAIToAWSBedrock),
    "anthropic_awsbedrock": ("messages", AnthropicToAWSBedrock),
    "openai_awsanthropic": ("chat", OpenAIToAWSAnthropic),
    "anthropic_awsanthropic": ("messages", AnthropicToAWSAnthropic),
}
CASES = cases(PAIRS)


def context(request: dict[str, Any], operation: str, headers: dict[str, str] | None = None) -> RequestContext:
    ctx = RequestContext(Request("POST", "/", "", headers or {}, orjson.dumps(request), []), operation)
    ctx.body, ctx.model, ctx.stream = request, request.get("model", ""), request.get("stream") is True
    return ctx


def backend_ref(config: dict[str, Any]) -> BackendRef:
    mutation = config.get("body_mutation", {})
    return BackendRef(
        Backend("default/b", Schema(**config["schema"]), ENDPOINTS),
        model_name_override=config.get("model_name_override"),
        body_mutation=BodyMutation(tuple(mutation.get("set", {}).items()), tuple(mutation.get("remove", ()))),
    )


def frame(item: dict[str, Any]) -> bytes:
    """One upstream stream item as an event-stream frame."""
    if "type" in item:  # an Anthropic event inside InvokeModelWithResponseStream's `chunk`
        wrapped = {"bytes": base64.b64encode(orjson.dumps(item)).decode()}
        return encode_event("chunk", orjson.dumps(wrapped))
    ((name, payload),) = item.items()
    if name.endswith("Exception"):
        return encode_exception(name, orjson.dumps(payload))
    return encode_event(name, orjson.dumps(payload))


def run_case(pair: str, case: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(upstream request, client response) the translator makes of the case's inputs."""
    config, request = load(pair, case, "config"), load(pair, case, "request")
    operation, factory = PAIRS[pair]
    ctx = context(request, operation, config.get("headers"))
    translator = factory(ctx, backend_ref(config))
    try:
        upstream = translator.request(ctx)
    except GatewayError as exc:
        return {"error": {"status": exc.status, "message": exc.message}}, None
    actual_request = {
        "method": upstream.method,
        "target": upstream.target,
        "headers": [list(h) for h in upstream.headers],
        "body": orjson.loads(upstream.body),
    }
    response = load(pair, case, "upstream_response")
    status = response["status"]
    headers = [(k.encode(), v.encode()) for k, v in response["headers"].items()]
    client: dict[str, Any] = {"status": status}
    if status >= 400:
        body = response["body"]
        client["body"] = orjson.loads(
            translator.error(status, body.encode() if isinstance(body, str) else orjson.dumps(body))
        )
        return actual_request, client
    client["headers"] = {k.decode(): v.decode() for k, v in translator.response_headers(status, headers)}
    if "events" in response:
        wire = b"".join(frame(item) for item in response["events"])
        out, usage = [], None
        for i in range(0, len(wire), 29):  # frame boundaries fall anywhere
            sent, got = translator.response_body(wire[i : i + 29], False)
            out.append(sent)
            usage = got or usage
        sent, got = translator.response_body(b"", True)
        out.append(sent)
        client["events"] = parse_stream(b"".join(out), anthropic=pair.startswith("anthropic_"))
        client["usage"] = usage_dict(got or usage)
    else:
        out, usage = translator.response_body(orjson.dumps(response["body"]), True)
        client["body"] = without_created(orjson.loads(out))
        client["usage"] = usage_dict(usage)
    client["model"] = translator.response_model
    return actual_request, client


@pytest.mark.parametrize(("pair", "case"), CASES)
def test_golden(pair: str, case: str) -> None:
    actual_request, client = run_case(pair, case)
    if REGOLDEN:
        save(pair, case, "upstream_request", actual_request)
        if client is not None:
            save(pair, case, "client_response", client)
    assert actual_request == load(pair, case, "upstream_request")
    if client is not None:
        assert client == load(pair, case, "client_response")


def test_model_ids_are_encoded_as_boto3_encodes_them() -> None:
    assert cv.model_target("anthropic.claude-3-5-sonnet-20240620-v1:0", "converse") == (
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    )
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku~v1:0"
    assert cv.model_target(arn, "invoke") == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku~v1%3A0/invoke"
    )


def test_usage_normalisation() -> None:
    usage = cv.converse_usage(
        {"inputTokens": 10, "outputTokens": 5, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 7}
    )
    assert usage == Usage(117, 5, 122, 100, 7, 0)
    assert cv.converse_usage(None) == Usage()


def test_stream_usage_returned_once_and_kept_at_the_end() -> None:
    ctx = context({"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}, "chat")
    translator = OpenAIToAWSBedrock(ctx, backend_ref({"schema": {"name": "AWSBedrock"}}))
    translator.request(ctx)
    translator.response_headers(200, [(b"content-type", b"application/vnd.amazon.eventstream")])
    wire = b"".join(
        frame(item)
        for item in (
            {"messageStart": {"role": "assistant"}},
            {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "hi"}}},
            {"messageStop": {"stopReason": "end_turn"}},
            {"metadata": {"usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}},
        )
    )
    first, usage = translator.response_body(wire, False)
    assert usage == Usage(3, 1, 4) and first.count(b"data: ") == 3
    last, again = translator.response_body(b"", True)
    assert again is None and last == b"data: [DONE]\n\n"  # no usage chunk: the client did not ask


def embeddings(request: dict[str, Any], override: str | None = None) -> EmbeddingsToAWSBedrock:
    ctx = context(request, "embeddings")
    ref = backend_ref({"schema": {"name": "AWSBedrock"}, "model_name_override": override})
    return EmbeddingsToAWSBedrock(ctx, ref)


def test_titan_embeddings_request_and_response() -> None:
    translator = embeddings(
        {"model": "t", "input": ["hello"], "dimensions": 256, "encoding_format": "base64"},
        "amazon.titan-embed-text-v2:0",
    )
    ctx = context(
        {"model": "t", "input": ["hello"], "dimensions": 256, "encoding_format": "base64"}, "embeddings"
    )
    upstream = translator.request(ctx)
    assert upstream.target == "/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert orjson.loads(upstream.body) == {"inputText": "hello", "dimensions": 256}
    body, usage = translator.response_body(
        orjson.dumps({"embedding": [0.5, -1.0, 0.25], "inputTextTokenCount": 2}), True
    )
    reply = orjson.loads(body)
    packed = base64.b64decode(reply["data"][0]["embedding"])
    assert struct.unpack("<3f", packed) == (0.5, -1.0, 0.25)
    assert (
        reply["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
        and reply["model"] == "amazon.titan-embed-text-v2:0"
    )
    assert usage == Usage(input_tokens=2, total_tokens=2)


@pytest.mark.parametrize(
    ("value", "status", "words"),
    [
        (["one", "two"], 422, "one text per request; this request has 2"),
        ([[1, 2, 3]], 422, "not token arrays"),
        ([1, 2], 422, "not token arrays"),
        (None, 400, "string or a list of one string"),
    ],
)
def test_titan_refuses_what_it_cannot_embed(value: Any, status: int, words: str) -> None:
    request = {"model": "amazon.titan-embed-text-v2:0", "input": value}
    with pytest.raises(GatewayError) as info:
        embeddings(request).request(context(request, "embeddings"))
    assert info.value.status == status and words in info.value.message


def test_titan_float_response_and_errors() -> None:
    request = {"model": "amazon.titan-embed-text-v2:0", "input": "x"}
    translator = embeddings(request)
    translator.request(context(request, "embeddings"))
    body, _ = translator.response_body(orjson.dumps({"embedding": [0.1], "inputTextTokenCount": 1}), True)
    assert orjson.loads(body)["data"][0]["embedding"] == [0.1]
    error = orjson.loads(translator.error(400, b'{"message": "Malformed input request"}'))
    assert (
        error["error"]["message"] == "Malformed input request"
        and error["error"]["type"] == "invalid_request_error"
    )
    with pytest.raises(GatewayError) as info:
        embeddings(request).response_body(b"{}", True)
    assert info.value.status == 502


def test_unary_without_output_is_502() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    translator = OpenAIToAWSBedrock(context(request, "chat"), backend_ref({"schema": {"name": "AWSBedrock"}}))
    with pytest.raises(GatewayError) as info:
        translator.response_body(b'{"stopReason": "guardrail_intervened"}', True)
    assert info.value.status == 502 and "guardrail_intervened" in info.value.message


@pytest.mark.parametrize(
    ("request_body", "status", "words"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 422, "n other than 1"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, 422, "function"),
        ({"messages": []}, 400, "non-empty"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{"}}],
                    }
                ]
            },
            400,
            "not valid JSON",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]},
            422,
            "only function",
        ),
    ],
)
def test_openai_requests_bedrock_refuses(request_body: dict[str, Any], status: int, words: str) -> None:
    request = {"model": "m", **request_body}
    translator = OpenAIToAWSBedrock(context(request, "chat"), backend_ref({"schema": {"name": "AWSBedrock"}}))
    with pytest.raises(GatewayError) as info:
        translator.request(context(request, "chat"))
    assert info.value.status == status and words in info.value.message
    assert "Anthropic backend" not in info.value.message


@pytest.mark.parametrize("pair", ["anthropic_awsbedrock", "anthropic_awsanthropic"])
def test_garbage_in_the_stream_becomes_an_error_event(pair: str) -> None:
    request = {"model": "m", "stream": True, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    operation, factory = PAIRS[pair]
    translator = factory(context(request, operation), backend_ref({"schema": {"name": pair.split("_")[1]}}))
    translator.response_headers(200, [(b"content-type", b"application/vnd.amazon.eventstream")])
    name = "chunk" if pair.endswith("awsanthropic") else "messageStart"
    out, _ = translator.response_body(encode_event(name, b"[1, 2]"), False)
    events = parse_stream(out, anthropic=True)
    assert events[-1]["type"] == "error" and "not" in events[-1]["error"]["message"]
    out, _ = translator.response_body(encode_event(name, b"{}"), True)
    assert out == b""  # nothing after the error


@pytest.mark.parametrize("pair", ["openai_awsbedrock", "anthropic_awsanthropic"])
def test_a_broken_frame_ends_the_stream_with_an_error(pair: str) -> None:
    request = {"model": "m", "stream": True, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    operation, factory = PAIRS[pair]
    translator = factory(context(request, operation), backend_ref({"schema": {"name": pair.split("_")[1]}}))
    translator.response_headers(200, [(b"content-type", b"application/vnd.amazon.eventstream")])
    start = frame(
        {"messageStart": {"role": "assistant"}} if pair == "openai_awsbedrock" else {"type": "ping"}
    )
    out, _ = translator.response_body(start + b"\x00\x00\x00\x05garbage!", False)
    events = parse_stream(out, anthropic=pair.startswith("anthropic"))
    error = events[-1]["error"]
    assert "broken event stream: invalid event stream frame length 5" in error["message"]
    assert translator.response_body(b"more", True)[0] == b""
