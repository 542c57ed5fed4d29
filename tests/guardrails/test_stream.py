"""The stream hold-back window: matches split across chunks are caught; events stay well-formed."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from sluicegate.guardrails.detectors import expand
from sluicegate.guardrails.engine import GuardrailBlocked, GuardRule, builtin_scan
from sluicegate.guardrails.response import (
    JSON_START,
    ModeratedStream,
    StreamGuard,
    guard_unary,
    redact_json,
    response_texts,
)

REDACT = GuardRule("t/pii", "Redact", False, True, (builtin_scan(expand(["PII"])),), window=64)
BLOCK = GuardRule("t/keys", "Block", False, True, (builtin_scan(expand(["Secrets"])),), window=64)
TEXT = "Hello there, write to jane.doe@example.com or call +1 415-555-0132 soon. " * 3 + "The end."


def openai_events(text: str, size: int) -> list[bytes]:
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    events = [
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
        }
        for p in pieces
    ]
    events.append(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def openai_text(out: bytes) -> str:
    text = ""
    for line in out.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in orjson.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize("size", [1, 3, 17, 500])
def test_openai_split_matches_redacted_and_delay_bounded(size: int) -> None:
    guard = StreamGuard((REDACT,), "openai")
    out, raw = b"", b"".join(openai_events(TEXT, size))
    sent = 0
    for i in range(0, len(raw), 7):  # bytes cut anywhere, even inside events
        piece = guard(raw[i : i + 7], False)
        out += piece
        sent += len(raw[i : i + 7])
        # the delay is bounded: the window, plus a match being held whole (20 here), plus the newest chunk
        assert sum(len(t) for t in guard.pending.values()) <= 64 + 20 + size
    out += guard(b"", True)
    expected = TEXT.replace("jane.doe@example.com", "[EMAIL]").replace("+1 415-555-0132", "[PHONE]")
    assert openai_text(out) == expected
    assert out.endswith(b"data: [DONE]\n\n")


def test_anthropic_deltas_redacted_and_flushed_before_block_stop() -> None:
    guard = StreamGuard((REDACT,), "anthropic")
    frames = [{"type": "message_start", "message": {"id": "m"}}, {"type": "content_block_start", "index": 0}]
    frames += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT[i : i + 5]}}
        for i in range(0, len(TEXT), 5)
    ]
    frames += [{"type": "content_block_stop", "index": 0}, {"type": "message_stop"}]
    raw = b"".join(b"event: " + f["type"].encode() + b"\ndata: " + orjson.dumps(f) + b"\n\n" for f in frames)
    out = guard(raw, False) + guard(b"", True)
    text, kinds = "", []
    for event in out.split(b"\n\n"):
        if not event:
            continue
        name, data = event.split(b"\n")
        frame = orjson.loads(data[6:])
        assert name == b"event: " + frame["type"].encode()
        kinds.append(frame["type"])
        if frame["type"] == "content_block_delta":
            text += frame["delta"]["text"]
    assert text == TEXT.replace("jane.doe@example.com", "[EMAIL]").replace("+1 415-555-0132", "[PHONE]")
    assert kinds[-2:] == ["content_block_stop", "message_stop"]


def test_block_raises_before_the_secret_goes_out() -> None:
    guard = StreamGuard((BLOCK,), "openai")
    out = b""
    with pytest.raises(GuardrailBlocked):
        for event in openai_events("ok " * 40 + "AKIAIOSFODNN7EXAMPLE and then some more text" * 3, 4):
            out += guard(event, False)
    assert b"AKIA" not in out


def test_unary_tool_arguments_and_errors() -> None:
    body = {
        "choices": [
            {"message": {"content": None, "tool_calls": [{"function": {"arguments": '{"to": "a@b.co"}'}}]}}
        ]
    }
    out = orjson.loads(guard_unary((REDACT,), "openai", orjson.dumps(body)))
    assert out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"to": "[EMAIL]"}'
    error = b'{"error": {"message": "a@b.co"}}'
    assert guard_unary((REDACT,), "openai", error) is error
    anthropic = {
        "content": [{"type": "tool_use", "input": {"to": ["a@b.co"]}}, {"type": "text", "text": "x@y.io"}]
    }
    out = orjson.loads(guard_unary((REDACT,), "anthropic", orjson.dumps(anthropic)))
    assert out["content"] == [
        {"type": "tool_use", "input": {"to": ["[EMAIL]"]}},
        {"type": "text", "text": "[EMAIL]"},
    ]


# --- tool-call argument deltas ------------------------------------------------------------------------------

ARGS = '{"to": "jane.doe@example.com", "card": 4111111111111111, "note": "a\\"b x@y.io\\u00e9", "n": [1, 2]}'
REDACTED = {"to": "[EMAIL]", "card": "[CREDIT_CARD]", "note": 'a"b [EMAIL]\u00e9', "n": [1, 2]}


def openai_tool_events(arguments: str, size: int) -> list[bytes]:
    head = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "send", "arguments": ""}}
    deltas = [{"tool_calls": [head]}]
    deltas += [
        {"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + size]}}]}
        for i in range(0, len(arguments), size)
    ]
    events = [{"id": "c", "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def openai_arguments(out: bytes) -> str:
    arguments = ""
    for line in out.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in orjson.loads(line[6:])["choices"]:
                for call in choice["delta"].get("tool_calls") or ():
                    arguments += call["function"]["arguments"]
    return arguments


@pytest.mark.parametrize("size", [1, 2, 5, 13, 500])
def test_openai_tool_arguments_split_email_redacted_json_valid(size: int) -> None:
    guard = StreamGuard((REDACT,), "openai")
    raw = b"".join(openai_tool_events(ARGS, size))
    out = b"".join(guard(raw[i : i + 11], False) for i in range(0, len(raw), 11)) + guard(b"", True)
    arguments = openai_arguments(out)
    assert "@" not in arguments
    assert orjson.loads(arguments) == REDACTED
    kinds = [orjson.loads(line[6:])["choices"][0]["finish_reason"] for line in out.split(b"\n\n")[:-2]]
    assert kinds[-1] == "tool_calls"  # held arguments go out before the finish chunk
    assert out.endswith(b"data: [DONE]\n\n")


def test_anthropic_input_json_deltas_redacted() -> None:
    guard = StreamGuard((REDACT,), "anthropic")
    frames = [{"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "input": {}}}]
    frames += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}}
        for p in ["", *(ARGS[i : i + 3] for i in range(0, len(ARGS), 3))]
    ]
    frames += [{"type": "content_block_stop", "index": 0}, {"type": "message_stop"}]
    raw = b"".join(b"event: " + f["type"].encode() + b"\ndata: " + orjson.dumps(f) + b"\n\n" for f in frames)
    out = guard(raw, False) + guard(b"", True)
    partial, kinds = "", []
    for event in out.split(b"\n\n"):
        if event:
            frame = orjson.loads(event.split(b"\n")[1][6:])
            kinds.append(frame["type"])
            if frame["type"] == "content_block_delta":
                assert frame["delta"]["type"] == "input_json_delta"
                partial += frame["delta"]["partial_json"]
    assert orjson.loads(partial) == REDACTED
    assert kinds[-2:] == ["content_block_stop", "message_stop"]


def test_tool_arguments_block_before_the_secret_goes_out() -> None:
    guard = StreamGuard((BLOCK,), "openai")
    out = b""
    with pytest.raises(GuardrailBlocked):
        for event in openai_tool_events('{"key": "AKIAIOSFODNN7EXAMPLE", "x": "' + "y" * 200 + '"}', 4):
            out += guard(event, False)
    assert b"AKIA" not in out


def test_redact_json_keeps_escapes_and_bare_values_valid() -> None:
    text = '{"a": "x@y.io\\n", "b": 123-45-6789}'
    found = REDACT.findings(text)
    assert orjson.loads(redact_json(text, found, JSON_START)) == {"a": "[EMAIL]\n", "b": "[SSN]"}


# --- response moderation ----------------------------------------------------------------------------------


def test_response_texts() -> None:
    body = {"choices": [{"message": {"content": "one"}}, {"text": "two"}]}
    assert response_texts("openai", orjson.dumps(body)) == ["one", "two"]
    anthropic = {"content": [{"type": "text", "text": "a"}, {"type": "tool_use", "input": {}}]}
    assert response_texts("anthropic", orjson.dumps(anthropic)) == ["a"]
    assert response_texts("openai", b'{"error": {}}') == []


def test_moderated_stream_checks_before_the_tail_goes_out() -> None:
    seen: list[list[str]] = []

    async def check(texts: list[str]) -> None:
        seen.append(texts)
        if "attack" in texts[0]:
            raise GuardrailBlocked("t/mod", "Moderation:violence", "response")

    async def scenario() -> None:
        moderated = ModeratedStream(StreamGuard((), "openai", collect=True, window=64), check, stride=1000)
        out = moderated(b"".join(openai_events("a calm answer", 4)), False)
        assert not isinstance(out, bytes)  # the finish chunk asks for a check: the bytes wait for it
        assert openai_text(await out) == "a calm answer" and seen == [["a calm answer"]]
        assert isinstance(moderated(b"", True), bytes)  # nothing new: no second check
        flagged = ModeratedStream(StreamGuard((), "openai", collect=True, window=64), check, stride=1000)
        with pytest.raises(GuardrailBlocked):
            await flagged(b"".join(openai_events("we attack at dawn", 3)), False)

    asyncio.run(scenario())


def test_moderated_stream_stride() -> None:
    seen: list[list[str]] = []

    async def check(texts: list[str]) -> None:
        seen.append(texts)

    moderated = ModeratedStream(StreamGuard((), "openai", collect=True, window=16), check, stride=50)
    events = openai_events("x" * 200, 10)[:-2]  # no finish chunk, no [DONE]
    for event in events:
        out = moderated(event, False)
        if not isinstance(out, bytes):
            asyncio.run(out)
    assert len(seen) == 3 and all(len(t[0]) >= 50 * (i + 1) for i, t in enumerate(seen))
