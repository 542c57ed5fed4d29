"""Server-sent events: split a byte stream into events without copying what passes through."""

from __future__ import annotations

from typing import Any

import orjson

_MAX_TAIL = 1024 * 1024  # an event larger than this is not inspected


def payloads(block: bytes) -> list[bytes]:
    """The `data:` payloads of complete events (LF-separated; multi-line data joined by \\n)."""
    out = []
    for event in block.split(b"\n\n"):
        lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if lines:
            out.append(lines[0] if len(lines) == 1 else b"\n".join(lines))
    return out


class CompleteEvents:
    """Feeds arbitrary chunks, returns the bytes of the events they complete (no per-event work)."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events so far not returned, line endings normalised to LF; b"" if none."""
        data = self._tail + chunk if self._tail else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data if len(data) <= _MAX_TAIL else b""
            return b""
        self._tail = data[end + 2 :]
        return data[:end]


class SSEEvents:
    """Feeds arbitrary chunks, returns the complete events' `data:` payloads."""

    def __init__(self) -> None:
        self._events = CompleteEvents()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data payloads of the events completed by this chunk (multi-line data joined by \\n)."""
        block = self._events.feed(chunk)
        return payloads(block) if block else []

    def objects(self, chunk: bytes) -> list[dict[str, Any]]:
        """The completed events whose payload is a JSON object, parsed (others, like [DONE], skipped)."""
        out = []
        for payload in self.feed(chunk):
            if payload.startswith(b"{"):
                try:
                    event = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    out.append(event)
        return out
