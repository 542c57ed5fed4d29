"""The one-step ConverseStream -> OpenAI chunks translator against the two-step way it replaces.

The reference is what OpenAIToAWSBedrock did before: ConverseStreamToAnthropic, then ClaudeStreamToOpenAI
over its Anthropic events. Random streams (text, tools, reasoning, redactions, stops, usage, exceptions,
bad payloads, broken and truncated frames) cut into random reads must give the same bytes and usage.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from typing import Any

import orjson
import pytest

from sluicegate.core.usage import Usage
from sluicegate.testing.eventstream_encoder import encode_message
from sluicegate.testing.eventstream_encoder import event as encode_event
from sluicegate.testing.eventstream_encoder import exception as encode_exception
from sluicegate.translate import claude
from sluicegate.translate import converse as cv
from sluicegate.translate.converse_openai import ConverseStreamToOpenAI
from sluicegate.translate.eventstream import EventStreamDecoder

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CREATED = re.compile(rb'"created":\d+')


class TwoSteps:
    """The former OpenAIToAWSBedrock stream path (the Anthropic pair still decodes this way)."""

    def __init__(self, model: str, message_id: str, include_usage: bool) -> None:
        self.decoder = EventStreamDecoder()
        self.events = cv.ConverseStreamToAnthropic(model, message_id)
        self.chunks = claude.ClaudeStreamToOpenAI(model, include_usage)

    def render(self, events: list[dict[str, Any]]) -> bytes:
        return b"".join(self.chunks.event(event) for event in events)

    def body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        events = self.events
        known = events.usage
        rendered = self.render(events.frames(self.decoder, chunk))
        if end:
            rendered += self.render(events.end())
            rendered += b"" if self.chunks.error is not None else self.chunks.finish()
        return rendered, events.usage if events.usage is not known else None


class OneStep:
    """The new path, as OpenAIToAWSBedrock.response_body drives it."""

    def __init__(self, model: str, message_id: str, include_usage: bool) -> None:
        self.chunks = ConverseStreamToOpenAI(model, message_id, include_usage)

    def body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        known = self.chunks.usage
        out = self.chunks.feed(chunk)
        if end:
            out += self.chunks.end()
        return out, self.chunks.usage if self.chunks.usage is not known else None


TEXTS = ["Hello", " wor", "ld", "", 'quote " and \\ back', "é✓ 漢字 🎉", "\n\t", "</script>", "a" * 300]
# Pieces of the texts of text_delta(): every escape orjson writes and those it does not (\u, \/), every
# control character, DEL, non-ASCII, line separators.
PIECES = [*TEXTS, '"', "\\", "/", "a/b", "\x7f", "\u2028", "\u2029", "\ud7ff", "\U0001f600", "x" * 50, " "]
PIECES += [chr(c) for c in range(32)]
STOPS = [*cv.STOP_REASONS, "something_new", None]


def text_delta(rng: random.Random, index: int) -> bytes:
    """A text delta payload as Bedrock writes it, or nearly: escapes, padding, key order, bad bytes."""
    text = "".join(rng.choice(PIECES) for _ in range(rng.choice([0, 1, 1, 2, 3, 6])))
    raw = json.dumps(text, ensure_ascii=rng.random() < 0.2).encode()  # \u escapes for non-ASCII
    if rng.random() < 0.3:
        raw = raw.replace(b"/", b"\\/")
    if rng.random() < 0.1:
        raw = raw.replace(b"\\n", b"\\u000a").replace(b"\\u001f", b"\\u001F")
    if rng.random() < 0.06:
        raw = raw[:-1] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc3\xa9"]) + b'"'  # bad UTF-8
    if rng.random() < 0.02:
        raw = raw[:-1] + rng.choice([b"\x01", b"\\", b"\\x"]) + b'"'  # not JSON
    padding = b""
    roll = rng.random()
    if roll < 0.6:
        letters = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(0, 30)))
        padding = b',"p":"' + letters.encode() + b'"'
    elif roll < 0.72:
        padding = b',"p":' + rng.choice([b'"a b"', b'"\\u0041"', b'"\xc3\xa9"', b'"\xff"', b"1", b'"a\\"b"'])
    elif roll < 0.76:
        padding = b',"extra":{"text":"no"}'
    head = b'{"contentBlockIndex":' + rng.choice([b"%d" % index] * 8 + [b"00", b"-0", b"0.0", b"1e0"])
    body = head + b',"delta":{"text":' + raw + b"}" + padding + b"}"
    if rng.random() < 0.05:
        body = rng.choice(
            [
                b'{"delta":{"text":' + raw + b'},"contentBlockIndex":%d}' % index,
                b'{"contentBlockIndex":%d,"delta":{"text":' % index + raw + b',"more":1}}',
                b'{"contentBlockIndex":%d, "delta":{"text":' % index + raw + b"}}",
                body + b" ",
                body.replace(b"}}", b"}", 1),
                body.replace(b",", b",\n"),  # JSON still, across lines
                body + b"\n" + body,  # not JSON, two lines of Bedrock's form
                b'{"contentBlockIndex":%d,"delta":{"text":' % index + raw + b'},"delta":{"text":"2nd"}}',
            ]
        )
    return body


def random_frame(rng: random.Random) -> bytes:
    """One ConverseStream frame, mostly well-formed, sometimes odd."""
    index = rng.choice([0, 0, 0, 1, 2])
    roll = rng.random()
    if roll < 0.2:
        return encode_event("contentBlockDelta", text_delta(rng, index))
    if roll < 0.35:
        text: Any = rng.choice(TEXTS) if rng.random() > 0.02 else rng.choice([None, 5])
        payload: Any = {"contentBlockIndex": index, "delta": {"text": text}, "p": "abc"}
        if rng.random() < 0.05:
            del payload["contentBlockIndex"]
        return encode_event("contentBlockDelta", orjson.dumps(payload))
    if roll < 0.42:
        delta = rng.choice(
            [
                {"toolUse": {"input": rng.choice(['{"a":', "1}", ""])}},
                {"toolUse": {}},
                {"toolUse": None},
                {"reasoningContent": {"text": rng.choice(TEXTS)}},
                {"reasoningContent": {"signature": "sig=="}},
                {"reasoningContent": {"text": "t", "signature": "s"}},
                {"reasoningContent": {"redactedContent": base64.b64encode(b"secret").decode()}},
                {"reasoningContent": {"redactedContent": "not base64!"}},
                {"reasoningContent": {}},
                {"reasoningContent": None},
                {"somethingElse": 1},
                {},
            ]
        )
        return encode_event("contentBlockDelta", orjson.dumps({"contentBlockIndex": index, "delta": delta}))
    if roll < 0.50:
        start = rng.choice([{"toolUse": {"toolUseId": f"t{index}", "name": "get_weather"}}, {}, {"x": 1}])
        return encode_event("contentBlockStart", orjson.dumps({"contentBlockIndex": index, "start": start}))
    if roll < 0.60:
        return encode_event("contentBlockStop", orjson.dumps({"contentBlockIndex": index}))
    if roll < 0.66:
        return encode_event("messageStart", b'{"role":"assistant"}')
    if roll < 0.74:
        stop = rng.choice(STOPS)
        body = {} if stop is None else {"stopReason": stop}
        if rng.random() < 0.3:
            body["additionalModelResponseFields"] = {"stop_sequence": "END"}
        return encode_event("messageStop", orjson.dumps(body))
    if roll < 0.80:
        usage = rng.choice(
            [
                {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15},
                {
                    "inputTokens": 3,
                    "outputTokens": 2,
                    "cacheReadInputTokens": 100,
                    "cacheWriteInputTokens": 7,
                },
                None,
                {},
            ]
        )
        return encode_event("metadata", orjson.dumps({"usage": usage, "metrics": {"latencyMs": 1}}))
    if roll < 0.83:
        return encode_event("somethingNew", b'{"x":1}')
    if roll < 0.86:
        return encode_event(
            rng.choice(["contentBlockDelta", "messageStart"]), rng.choice([b"[1]", b"{", b"null", b""])
        )
    if roll < 0.88:
        name = rng.choice([*cv.EXCEPTION_STATUS, "weirdException"])
        return encode_exception(name, rng.choice([b'{"message":"slow down"}', b"plain text", b""]))
    if roll < 0.89:
        headers = {":error-code": "InternalFailure", ":error-message": "x", ":message-type": "error"}
        return encode_message(headers, b"")
    if roll < 0.90:
        return b"\x00\x00\x00\x05garbage!"
    return encode_event("contentBlockDelta", orjson.dumps({"contentBlockIndex": 0, "delta": {"text": "x"}}))


def random_stream(rng: random.Random) -> bytes:
    """A stream that mostly looks like Bedrock's: start, blocks, stop, metadata; sometimes anything."""
    frames = []
    if rng.random() < 0.9:
        frames.append(encode_event("messageStart", b'{"role":"assistant"}'))
    frames += [random_frame(rng) for _ in range(rng.randint(0, 25))]
    if rng.random() < 0.7:
        frames.append(encode_event("messageStop", orjson.dumps({"stopReason": rng.choice(STOPS[:-1])})))
    if rng.random() < 0.6:
        usage = {"inputTokens": 30, "outputTokens": 9, "totalTokens": 39}
        frames.append(encode_event("metadata", orjson.dumps({"usage": usage})))
    wire = b"".join(frames)
    if rng.random() < 0.1:
        wire = wire[: rng.randint(0, len(wire))]  # cut short
    if rng.random() < 0.05 and wire:
        at = rng.randrange(len(wire))
        wire = wire[:at] + bytes((wire[at] ^ 0x55,)) + wire[at + 1 :]  # corrupt
    return wire


def run(translator: TwoSteps | OneStep, wire: bytes, reads: list[int]) -> tuple[bytes, list[Usage | None]]:
    out, usages, i = [], [], 0
    for size in reads:
        sent, usage = translator.body(wire[i : i + size], False)
        out.append(sent)
        usages.append(usage)
        i += size
    sent, usage = translator.body(wire[i:], True)
    return CREATED.sub(b'"created":0', b"".join(out) + sent), [*usages, usage]


@pytest.mark.parametrize("seed", range(40))
def test_one_step_gives_what_two_steps_gave(seed: int) -> None:
    rng = random.Random(seed)
    compared = 0
    for _ in range(100):
        wire = random_stream(rng)
        reads = [rng.choice([1, 7, 29, 100, 4096]) for _ in range(rng.randint(0, 30))]
        include_usage = rng.random() < 0.5
        message_id = rng.choice(["chatcmpl-abc", "6f1c3f5e-0000"])
        try:
            expected = run(TwoSteps(MODEL, message_id, include_usage), wire, reads)
        except (AttributeError, TypeError):
            continue  # inputs the two-step way could not translate at all
        assert run(OneStep(MODEL, message_id, include_usage), wire, reads) == expected, wire
        compared += 1
    assert compared > 80


def test_a_text_delta_is_the_usual_chunk() -> None:
    translator = ConverseStreamToOpenAI(MODEL, "chatcmpl-1", False)
    wire = encode_event("messageStart", b'{"role":"assistant"}') + encode_event(
        "contentBlockDelta", b'{"contentBlockIndex":0,"delta":{"text":"Hi \\"you\\" \\u00e9"}}'
    )
    out = translator.feed(wire)
    chunks = [orjson.loads(line[6:]) for line in out.split(b"\n\n") if line]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": 'Hi "you" é'},
    ]
    assert {c["id"] for c in chunks} == {"chatcmpl-1"} and {c["model"] for c in chunks} == {MODEL}
