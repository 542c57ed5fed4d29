"""The `x-fake-*` request headers that steer one fake-provider answer."""

from __future__ import annotations

from typing import Any

import orjson

_INT_KNOBS = {
    "delay_ms": "x-fake-delay-ms",
    "chunk_delay_ms": "x-fake-chunk-delay-ms",
    "chunks": "x-fake-chunks",
    "status": "x-fake-status",
    "prompt_tokens": "x-fake-prompt-tokens",
    "completion_tokens": "x-fake-completion-tokens",
    "cached_tokens": "x-fake-cached-tokens",
    "reasoning_tokens": "x-fake-reasoning-tokens",
    "drop_after": "x-fake-drop-after",
}


class Knobs:
    """The `x-fake-*` request headers of one request."""

    __slots__ = ("reply", "error_body", "tool_args", *_INT_KNOBS)
    delay_ms: int | None
    chunk_delay_ms: int | None
    chunks: int | None
    status: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    drop_after: int | None
    reply: str | None
    error_body: str | None
    tool_args: dict[str, Any] | None

    def __init__(self, headers: dict[str, str]) -> None:
        for attr, name in _INT_KNOBS.items():
            value = headers.get(name)
            if value is not None:
                try:
                    number = int(value)
                except ValueError:
                    raise ValueError(f"invalid integer in header {name}: {value!r}") from None
                if number < 0:
                    raise ValueError(f"negative value in header {name}: {value!r}")
                setattr(self, attr, number)
            else:
                setattr(self, attr, None)
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"x-fake-status must be between 100 and 599, not {self.status}")
        self.reply = headers.get("x-fake-reply")
        self.error_body = headers.get("x-fake-error-body")
        self.tool_args = None
        if (raw := headers.get("x-fake-tool-args")) is not None:
            try:
                self.tool_args = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.tool_args = None
            if not isinstance(self.tool_args, dict):
                raise ValueError(f"x-fake-tool-args must be a JSON object, not {raw!r}")
