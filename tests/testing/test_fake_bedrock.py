"""boto3's bedrock-runtime client pointed straight at the fake: boto3 judges the fake's wire format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from sluicegate.testing import FakeProviderThread
from sluicegate.testing.eventstream_encoder import encode_message, event
from sluicegate.testing.fake_bedrock import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
from sluicegate.translate.eventstream import EventStreamDecoder

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NOVA = "amazon.nova-pro-v1:0"
TOOLS = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Weather in a city",
                "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
            }
        }
    ]
}


def _client(port: int, secret: str = FAKE_SECRET_KEY, scenario: str | None = None, **knobs: str) -> Any:
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=FAKE_ACCESS_KEY,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )
    headers = {f"x-fake-{k.replace('_', '-')}": v for k, v in knobs.items()}
    if scenario:
        headers["x-fake-scenario"] = scenario

    def add_headers(request: Any, **_: Any) -> None:
        for name, value in headers.items():
            request.headers[name] = value

    client.meta.events.register_first("before-sign.bedrock-runtime.*", add_headers)
    return client


@pytest.fixture
def bedrock(fake: FakeProviderThread) -> Iterator[Any]:
    fake.reset()
    yield _client(fake.port)


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse_text_and_signature_checked(bedrock: Any, fake: FakeProviderThread) -> None:
    reply = bedrock.converse(modelId=CLAUDE, messages=_user("hello bedrock"))
    assert reply["output"]["message"]["content"] == [{"text": "Echo: hello bedrock"}]
    assert reply["stopReason"] == "end_turn"
    assert (
        reply["usage"]["inputTokens"] == 2
        and reply["usage"]["totalTokens"] == 2 + reply["usage"]["outputTokens"]
    )
    assert reply["ResponseMetadata"]["HTTPHeaders"]["x-fake-sigv4"] == "valid"
    recorded = fake.requests[-1]
    assert recorded.path == f"/model/{CLAUDE}/converse"
    assert recorded.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={FAKE_ACCESS_KEY}/")


def test_wrong_secret_is_403_invalid_signature(fake: FakeProviderThread) -> None:
    client = _client(fake.port, secret="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.converse(modelId=CLAUDE, messages=_user("hi"))
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException"
    assert "signature we calculated does not match" in error["Error"]["Message"]


def test_converse_stream_text(fake: FakeProviderThread) -> None:
    client = _client(fake.port, chunks="4")
    response = client.converse_stream(modelId=NOVA, messages=_user("one two three"))
    events = list(response["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Echo: one two three"
    assert kinds.count("contentBlockDelta") == 4
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 4


def test_converse_tool_and_tool_result_round_trip(fake: FakeProviderThread) -> None:
    client = _client(fake.port, scenario="tool")
    first = client.converse(modelId=CLAUDE, messages=_user("weather in Paris?"), toolConfig=TOOLS)
    assert first["stopReason"] == "tool_use"
    use = first["output"]["message"]["content"][0]["toolUse"]
    assert use["name"] == "get_weather" and use["input"] == {"city": "Paris"}
    assert use["toolUseId"].startswith("tooluse_")
    history = [
        *_user("weather in Paris?"),
        first["output"]["message"],
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": "sunny"}]}}],
        },
    ]
    second = client.converse(modelId=CLAUDE, messages=history, toolConfig=TOOLS)
    assert second["output"]["message"]["content"] == [{"text": "Tool said: sunny"}]
    bad = [*history[:2], {"role": "user", "content": [{"toolResult": {"toolUseId": "nope", "content": []}}]}]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.converse(modelId=CLAUDE, messages=bad, toolConfig=TOOLS)
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_converse_stream_tool_arguments_arrive_in_pieces(fake: FakeProviderThread) -> None:
    client = _client(fake.port, scenario="parallel-tools")
    events = list(
        client.converse_stream(modelId=CLAUDE, messages=_user("two calls"), toolConfig=TOOLS)["stream"]
    )
    starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert [s["start"]["toolUse"]["name"] for s in starts] == ["get_weather", "get_weather"]
    for start in starts:
        pieces = [
            e["contentBlockDelta"]["delta"]["toolUse"]["input"]
            for e in events
            if "contentBlockDelta" in e
            and e["contentBlockDelta"]["contentBlockIndex"] == start["contentBlockIndex"]
        ]
        assert len(pieces) > 1
        assert json.loads("".join(pieces))["city"].startswith("Paris")
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"


def test_converse_thinking_signature_is_checked_on_the_way_back(fake: FakeProviderThread) -> None:
    client = _client(fake.port, scenario="thinking")
    reply = client.converse(modelId=CLAUDE, messages=_user("think"))
    reasoning = reply["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"]
    assert reasoning["text"] and reasoning["signature"]
    history = [*_user("think"), reply["output"]["message"], *_user("again")]
    assert client.converse(modelId=CLAUDE, messages=history)["stopReason"] == "end_turn"
    reasoning["signature"] = "tampered"
    with pytest.raises(botocore.exceptions.ClientError):
        client.converse(modelId=CLAUDE, messages=history)
    events = list(client.converse_stream(modelId=CLAUDE, messages=_user("think"))["stream"])
    deltas = [e["contentBlockDelta"]["delta"] for e in events if "contentBlockDelta" in e]
    assert any("signature" in d.get("reasoningContent", {}) for d in deltas)


def test_converse_cached_usage(fake: FakeProviderThread) -> None:
    reply = _client(fake.port, scenario="cached").converse(modelId=CLAUDE, messages=_user("cache me"))
    usage = reply["usage"]
    assert usage["cacheReadInputTokens"] == 128 and usage["cacheWriteInputTokens"] == 64


def test_errors_in_bedrock_shape(fake: FakeProviderThread) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        _client(fake.port, status="429").converse(modelId=CLAUDE, messages=_user("hi"))
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert info.value.response["Error"]["Message"] == "fake error: status 429"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        _client(fake.port).converse(
            modelId=CLAUDE, messages=[{"role": "assistant", "content": [{"text": "x"}]}]
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"
    stream = _client(fake.port, scenario="error").converse_stream(modelId=CLAUDE, messages=_user("a b c"))[
        "stream"
    ]
    with pytest.raises(botocore.exceptions.EventStreamError) as stream_info:
        list(stream)
    assert "modelStreamErrorException" in str(stream_info.value)


def test_converse_stream_drop_after(fake: FakeProviderThread) -> None:
    stream = _client(fake.port, drop_after="2").converse_stream(modelId=CLAUDE, messages=_user("a b c"))[
        "stream"
    ]
    with pytest.raises(Exception):  # noqa: B017 - botocore surfaces a truncated stream as a read error
        list(stream)


def test_invoke_model_claude(bedrock: Any) -> None:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hey"}],
    }
    reply = bedrock.invoke_model(modelId=CLAUDE, body=json.dumps(body))
    message = json.loads(reply["body"].read())
    assert message["type"] == "message" and message["content"][0]["text"] == "Echo: hey"
    assert message["model"] == CLAUDE
    with pytest.raises(botocore.exceptions.ClientError) as info:
        bedrock.invoke_model(modelId=CLAUDE, body=json.dumps({**body, "model": CLAUDE}))
    assert "extraneous key [model]" in info.value.response["Error"]["Message"]


def test_invoke_model_with_response_stream_claude(fake: FakeProviderThread) -> None:
    client = _client(fake.port, scenario="tool")
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {}}}}],
    }
    response = client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(body))
    events = [json.loads(e["chunk"]["bytes"]) for e in response["body"]]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    assert "amazon-bedrock-invocationMetrics" in events[-1]
    arguments = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta")
    assert json.loads(arguments) == {"city": "Paris"}


def test_invoke_model_titan_embeddings(bedrock: Any) -> None:
    reply = bedrock.invoke_model(
        modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "a b c", "dimensions": 256})
    )
    titan = json.loads(reply["body"].read())
    assert len(titan["embedding"]) == 256 and titan["inputTextTokenCount"] == 3
    v1 = json.loads(
        bedrock.invoke_model(modelId="amazon.titan-embed-text-v1", body=b'{"inputText": "x"}')["body"].read()
    )
    assert len(v1["embedding"]) == 1536


def test_encoder_frames_decode_with_botocore_across_any_split() -> None:
    frames = [
        event("contentBlockDelta", b'{"contentBlockIndex":0,"delta":{"text":"h\xc3\xa9"}}'),
        encode_message({":message-type": "exception", ":exception-type": "throttlingException"}, b"{}"),
        event("metadata", b"{}" * 500),
    ]
    data = b"".join(frames)
    for size in (1, 7, 64, len(data)):
        decoder = EventStreamDecoder()
        decoded = [f for i in range(0, len(data), size) for f in decoder.feed(data[i : i + size])]
        assert [(f.message_type, f.event_type) for f in decoded] == [
            ("event", "contentBlockDelta"),
            ("exception", "throttlingException"),
            ("event", "metadata"),
        ]
        assert decoded[0].payload == b'{"contentBlockIndex":0,"delta":{"text":"h\xc3\xa9"}}'
        assert decoder.pending == 0


def test_event_stream_checksum_error() -> None:
    frame = bytearray(event("messageStart", b'{"role":"assistant"}'))
    frame[-1] ^= 0xFF
    decoder = EventStreamDecoder()
    good = event("messageStop", b"{}")
    assert [f.event_type for f in decoder.feed(good + bytes(frame) + good)] == ["messageStop"]
    assert decoder.error is not None and "invalid event stream frame" in decoder.error
    assert decoder.feed(good) == []


def test_count_tokens_converse_and_invoke_model(bedrock: Any) -> None:
    """boto3's CountTokens (botocore base64-encodes invokeModel.body, a blob) against the fake."""
    converse = {"messages": _user("count these four words"), "system": [{"text": "Be brief."}]}
    converse["toolConfig"] = TOOLS
    counted = bedrock.count_tokens(modelId=NOVA, input={"converse": converse})
    assert counted["inputTokens"] == 4 + 2 + 1 + 4  # messages, system, tool name, tool description
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10}
    body["messages"] = [{"role": "user", "content": "a b"}]
    counted = bedrock.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": json.dumps(body).encode()}})
    assert counted["inputTokens"] == 2
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock.count_tokens(modelId=CLAUDE, input={"converse": {"messages": []}})
    assert caught.value.response["Error"]["Code"] == "ValidationException"
