"""AWS event stream (`application/vnd.amazon.eventstream`): complete frames out of arbitrary reads.

Decoded here, not by botocore's EventStreamBuffer, because that costs ~6 µs a frame and a Bedrock
stream is one frame per token; tests/translate/test_eventstream.py proves this decoder agrees with
botocore's on every header type, on split reads and on corrupt frames.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_PRELUDE = 12
_MAX_FRAME = 16 * 1024 * 1024  # the AWS limit is 16 MiB per message
_FIXED = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8}  # header value type -> size of its signed big-endian integer
_SEEN_HEADERS: dict[bytes, dict[str, Any]] = {}  # a stream repeats a few header blocks: decode each once
_MAX_SEEN = 512


class FrameError(ValueError):
    """A frame that does not decode: bad lengths, checksums or header types."""


@dataclass(slots=True)
class Frame:
    """One decoded message: `:message-type` (event | exception | error), its type and JSON payload."""

    message_type: str
    event_type: str  # `:event-type`, or `:exception-type` / `:error-code` for the other kinds
    payload: bytes
    headers: dict  # shared between frames with the same header block: read it, do not change it


class EventStreamDecoder:
    """Feeds arbitrary chunks; yields the frames they complete, CRC-checked.

    A frame that does not decode (bad length or checksum) ends the stream: `error` says why, the frames
    before it are still returned, and nothing after it is.
    """

    def __init__(self) -> None:
        self._data = bytearray()
        self.error: str | None = None

    def feed(self, chunk: bytes) -> list[Frame]:
        """The frames completed by this chunk."""
        if self.error is not None:
            return []
        data = self._data
        data += chunk
        frames: list[Frame] = []
        start, size = 0, len(data)
        view = memoryview(data)
        error = None
        try:
            while size - start >= _PRELUDE:
                length = int.from_bytes(view[start : start + 4], "big")
                if length < 16 or length > _MAX_FRAME:
                    error = f"invalid event stream frame length {length}"
                    break
                if size - start < length:
                    break
                try:
                    frames.append(decode_frame(view[start : start + length]))
                except FrameError as exc:
                    error = f"invalid event stream frame: {exc}"
                    break
                start += length
        finally:
            view.release()
        if error is not None:
            return self._fail(frames, error)
        if start:
            del data[:start]
        return frames

    def _fail(self, frames: list[Frame], reason: str) -> list[Frame]:
        self.error = reason
        self._data.clear()
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._data)


def decode_frame(frame: memoryview | bytes) -> Frame:
    """One whole frame (its length already checked against the prelude) into a Frame."""
    length = len(frame)
    headers_length = int.from_bytes(frame[4:8], "big")
    if zlib.crc32(frame[:8]) != int.from_bytes(frame[8:12], "big"):
        raise FrameError("prelude checksum mismatch")
    if zlib.crc32(frame[: length - 4]) != int.from_bytes(frame[length - 4 :], "big"):
        raise FrameError("message checksum mismatch")
    end = _PRELUDE + headers_length
    if end > length - 4:
        raise FrameError(f"headers length {headers_length} exceeds the frame")
    block = bytes(frame[_PRELUDE:end])
    headers = _SEEN_HEADERS.get(block)
    if headers is None:
        headers = _headers(block, 0, len(block))
        if len(_SEEN_HEADERS) < _MAX_SEEN:
            _SEEN_HEADERS[block] = headers
    kind = headers.get(":message-type", "event")
    if kind == "event":
        name = headers.get(":event-type", "")
    elif kind == "exception":
        name = headers.get(":exception-type", "")
    else:
        name = headers.get(":error-code", "")
    return Frame(kind, name, bytes(frame[end : length - 4]), headers)


def _headers(frame: memoryview | bytes, i: int, end: int) -> dict[str, Any]:
    """The header block: name (1-byte length), type byte, value."""
    headers: dict[str, Any] = {}
    try:
        while i < end:
            name_length = frame[i]
            name = bytes(frame[i + 1 : i + 1 + name_length]).decode("utf-8")
            i += 1 + name_length
            kind = frame[i]
            i += 1
            if kind in (0, 1):
                value: Any = kind == 0
            elif kind in _FIXED:
                width = _FIXED[kind]
                value = int.from_bytes(frame[i : i + width], "big", signed=True)
                i += width
            elif kind in (6, 7):
                size = int.from_bytes(frame[i : i + 2], "big")
                raw = bytes(frame[i + 2 : i + 2 + size])
                value = raw.decode("utf-8") if kind == 7 else raw
                i += 2 + size
            elif kind == 9:
                value = uuid.UUID(bytes=bytes(frame[i : i + 16]))
                i += 16
            else:
                raise FrameError(f"unknown header value type {kind}")
            headers[name] = value
    except (IndexError, UnicodeDecodeError) as exc:
        raise FrameError(f"malformed headers ({type(exc).__name__})") from None
    if i != end:
        raise FrameError("headers overrun their length")
    return headers
