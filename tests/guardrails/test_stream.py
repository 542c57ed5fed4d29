"""The stream hold-back window: matches split across chunks are caught; events stay well-formed."""

from __future__ import annotations

import orjson
import pytest

from sluicegate.guardrails.detectors import expand
from sluicegate.guardrails.engine import GuardrailBlocked, GuardRule, builtin_scan
from sluicegate.guardrails.response import StreamGuard, guard_unary

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
