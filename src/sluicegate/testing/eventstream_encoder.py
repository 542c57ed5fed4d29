"""The small AWS event stream encoder the fake needs (botocore only decodes): prelude, CRC32s, headers."""

from __future__ import annotations

import struct
import zlib

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame: total length, headers length, prelude CRC, string headers, payload, message CRC."""
    parts = []
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        parts.append(bytes((len(raw_name),)) + raw_name + bytes((_STRING,)))
        parts.append(struct.pack(">H", len(raw_value)) + raw_value)
    header_bytes = b"".join(parts)
    prelude = struct.pack(">II", 16 + len(header_bytes) + len(payload), len(header_bytes))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + header_bytes + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type: str, payload: bytes) -> bytes:
    """An `event` frame with a JSON payload."""
    return encode_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}, payload
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    """An `exception` frame, e.g. `throttlingException` with `{"message": ...}`."""
    return encode_message(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        payload,
    )
