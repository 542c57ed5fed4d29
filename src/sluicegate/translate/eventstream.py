"""AWS event stream (`application/vnd.amazon.eventstream`): complete frames out of arbitrary reads."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.eventstream import EventStreamBuffer, EventStreamMessage

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_PRELUDE = 12
_MAX_FRAME = 16 * 1024 * 1024  # the AWS limit is 16 MiB per message


@dataclass(slots=True)
class Frame:
    """One decoded message: `:message-type` (event | exception | error), its type and JSON payload."""

    message_type: str
    event_type: str  # `:event-type`, or `:exception-type` / `:error-code` for the other kinds
    payload: bytes
    headers: dict


class EventStreamDecoder:
    """Feeds arbitrary chunks; yields the frames they complete, checked by botocore's decoder.

    A frame that does not decode (bad length or checksum) ends the stream: `error` says why, the frames
    before it are still returned, and nothing after it is.
    """

    def __init__(self) -> None:
        self._data = bytearray()
        self._buffer = EventStreamBuffer()
        self.error: str | None = None

    def feed(self, chunk: bytes) -> list[Frame]:
        """The frames completed by this chunk."""
        if self.error is not None:
            return []
        data = self._data
        data += chunk
        frames: list[Frame] = []
        start, size = 0, len(data)
        # botocore re-slices its buffer per message (quadratic on big reads): give it one frame at a time.
        while size - start >= _PRELUDE:
            length = int.from_bytes(data[start : start + 4], "big")
            if length < 16 or length > _MAX_FRAME:
                return self._fail(frames, f"invalid event stream frame length {length}")
            if size - start < length:
                break
            self._buffer.add_data(bytes(data[start : start + length]))
            try:
                message: EventStreamMessage = next(iter(self._buffer))
            except Exception as exc:  # botocore raises its own ParserError subclasses
                return self._fail(frames, f"invalid event stream frame: {exc}")
            frames.append(_frame(message))
            start += length
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


def _frame(message: EventStreamMessage) -> Frame:
    headers = message.headers
    kind = headers.get(":message-type", "event")
    if kind == "event":
        name = headers.get(":event-type", "")
    elif kind == "exception":
        name = headers.get(":exception-type", "")
    else:
        name = headers.get(":error-code", "")
    return Frame(kind, name, message.payload, headers)
