"""Our event-stream decoder against botocore's, the reference: every header type, split reads, bad frames."""

from __future__ import annotations

import struct
import uuid
import zlib
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from sluicegate.testing.eventstream_encoder import event, exception
from sluicegate.translate.eventstream import EventStreamDecoder

UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def header(name: str, kind: int, value: Any) -> bytes:
    """One header of any of the ten value types, encoded as the AWS spec says."""
    out = bytes((len(name),)) + name.encode() + bytes((kind,))
    if kind in (0, 1):
        return out
    if kind in (2, 3, 4, 5, 8):
        width = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8}[kind]
        return out + value.to_bytes(width, "big", signed=True)
    if kind in (6, 7):
        raw = value if kind == 6 else value.encode()
        return out + struct.pack(">H", len(raw)) + raw
    return out + value.bytes


def frame(headers: bytes, payload: bytes) -> bytes:
    prelude = struct.pack(">II", 16 + len(headers) + len(payload), len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


ALL_TYPES = b"".join(
    [
        header(":message-type", 7, "event"),
        header(":event-type", 7, "chunk"),
        header("t", 0, True),
        header("f", 1, False),
        header("byte", 2, -7),
        header("short", 3, -300),
        header("int", 4, 70000),
        header("long", 5, -(2**40)),
        header("bytes", 6, b"\x00\xffraw"),
        header("when", 8, 1_700_000_000_000),
        header("id", 9, UUID),
        header("unicode", 7, "héllo ✓"),
    ]
)

STREAM = [
    event("messageStart", b'{"role":"assistant"}'),
    frame(ALL_TYPES, b'{"bytes":"eyJ0eXBlIjoicGluZyJ9"}'),
    event("contentBlockDelta", b'{"delta":{"text":"' + "é".encode() * 300 + b'"}}'),
    frame(header(":message-type", 7, "event") + header(":event-type", 7, "empty"), b""),
    exception("throttlingException", b'{"message":"slow down"}'),
]


def botocore_view(wire: bytes) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(wire)
    return [(dict(message.headers), message.payload) for message in buffer]


def normalise(headers: dict[str, Any]) -> dict[str, Any]:
    """botocore gives a uuid as its 16 bytes; we give uuid.UUID."""
    return {k: (v.bytes if isinstance(v, uuid.UUID) else v) for k, v in headers.items()}


@pytest.mark.parametrize("piece", [1, 5, 13, 64, 10_000])
def test_same_frames_as_botocore_over_any_split(piece: int) -> None:
    wire = b"".join(STREAM)
    decoder = EventStreamDecoder()
    frames = []
    for i in range(0, len(wire), piece):
        frames += decoder.feed(wire[i : i + piece])
    assert decoder.error is None and decoder.pending == 0
    assert [(normalise(f.headers), f.payload) for f in frames] == botocore_view(wire)
    assert [(f.message_type, f.event_type) for f in frames] == [
        ("event", "messageStart"),
        ("event", "chunk"),
        ("event", "contentBlockDelta"),
        ("event", "empty"),
        ("exception", "throttlingException"),
    ]


def corrupt(data: bytes, at: int) -> bytes:
    return data[:at] + bytes((data[at] ^ 0xFF,)) + data[at + 1 :]


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        (9, "prelude checksum"),  # inside the prelude CRC
        (-6, "message checksum"),  # inside the payload
        (-1, "message checksum"),  # inside the message CRC
    ],
)
def test_a_corrupt_frame_ends_the_stream_after_the_good_ones(where: int, reason: str) -> None:
    good, bad = STREAM[0], STREAM[2]
    broken = corrupt(bad, where % len(bad))
    with pytest.raises(Exception):  # noqa: B017 - botocore agrees that the frame is bad
        botocore_view(broken)
    decoder = EventStreamDecoder()
    frames = decoder.feed(good + broken + good)
    assert [f.event_type for f in frames] == ["messageStart"]
    assert decoder.error is not None and reason in decoder.error
    assert decoder.feed(good) == []  # nothing after a bad frame


def test_a_corrupt_length_is_an_error_before_waiting_for_it() -> None:
    frame = bytearray(STREAM[0])
    frame[1] ^= 0x01  # the total length now reaches 64 KiB further; the prelude CRC no longer matches
    decoder = EventStreamDecoder()
    assert decoder.feed(bytes(frame)) == []
    assert decoder.error is not None and "prelude checksum" in decoder.error
    assert decoder.pending == 0


def test_an_impossible_length_is_an_error() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(struct.pack(">II", 8, 0) + b"\x00" * 8) == []
    assert decoder.error is not None and "length 8" in decoder.error


def test_headers_longer_than_the_frame_are_an_error() -> None:
    lying = bytearray(STREAM[0])
    lying[4:8] = (10_000).to_bytes(4, "big")
    lying[8:12] = zlib.crc32(bytes(lying[:8])).to_bytes(4, "big")
    lying[-4:] = zlib.crc32(bytes(lying[:-4])).to_bytes(4, "big")
    decoder = EventStreamDecoder()
    assert decoder.feed(bytes(lying)) == []
    assert decoder.error is not None and "headers length" in decoder.error


def test_a_large_frame_in_many_small_reads() -> None:
    payload = b'{"text":"' + b"x" * 300_000 + b'"}'
    wire = event("contentBlockDelta", payload) + STREAM[0]
    decoder = EventStreamDecoder()
    frames = []
    for i in range(0, len(wire), 1000):
        frames += decoder.feed(wire[i : i + 1000])
        if not frames:
            assert decoder.pending == i + 1000  # buffered until the frame is whole
    assert [(f.event_type, f.payload) for f in frames] == [
        ("contentBlockDelta", payload),
        ("messageStart", b'{"role":"assistant"}'),
    ]
    assert decoder.error is None and decoder.pending == 0


def test_messages_share_the_decoded_header_block() -> None:
    decoder = EventStreamDecoder()
    (first, second), (one, two) = decoder.messages(STREAM[2] + STREAM[2])
    assert first is second and one == two  # decoded once: converse_openai.py relies on the identity
    assert (first.kind, first.name) == ("event", "contentBlockDelta")


@pytest.mark.parametrize("name", [":message-type", ":event-type"])
def test_a_type_header_that_is_not_a_string_is_an_error(name: str) -> None:
    other = ":event-type" if name == ":message-type" else ":message-type"
    odd = header(name, 4, 7) + header(other, 7, "event")
    decoder = EventStreamDecoder()
    frames = decoder.feed(STREAM[0] + frame(odd, b"{}") + STREAM[0])
    assert [f.event_type for f in frames] == ["messageStart"]  # the frames before it, nothing after
    assert decoder.error == (
        "invalid event stream frame: the message type or event type header is not a string"
    )
