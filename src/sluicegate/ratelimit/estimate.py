"""An offline estimate of a request's usage: prompt tokens from its text size, output from max_tokens."""

from __future__ import annotations

import re
from typing import Any

from sluicegate.core.usage import Usage

BYTES_PER_TOKEN = 3  # English BPE averages ~4 bytes a token: dividing by 3 errs on the high side
PER_MESSAGE_TOKENS = 4  # role and framing tokens of each chat message
_TEXT_KEYS = (
    "messages",
    "prompt",
    "input",
    "system",
    "tools",
    "functions",
    "instructions",
    "documents",
    "query",
)
# Binary payloads are not text: an image costs its provider's per-image tokens, not its base64 length.
_SKIP_KEYS = frozenset(
    {"role", "type", "image_url", "input_audio", "audio", "file", "file_data", "source", "data", "url"}
)
_MAX_DEPTH = 12
_BINARY = re.compile(rb'"(?:image_url|input_audio|file_data|data|image|audio)"')  # one search, in C


def _text_bytes(value: Any, depth: int = 0) -> tuple[int, int]:
    """(UTF-8 bytes of the text in value, number of message-like objects) without following binary parts."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "replace")) if not value.isascii() else len(value), 0
    if depth > _MAX_DEPTH:
        return 0, 0
    if isinstance(value, list):
        size = count = 0
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool):
                size += BYTES_PER_TOKEN  # a pre-tokenized prompt: one token per integer
                continue
            s, c = _text_bytes(item, depth + 1)
            size, count = size + s, count + c
        return size, count
    if isinstance(value, dict):
        size, count = 0, 1 if "role" in value else 0
        for key, item in value.items():
            if key in _SKIP_KEYS:
                continue
            s, c = _text_bytes(item, depth + 1)
            size, count = size + s, count + c
        return size, count
    return 0, 0


def estimate_input_tokens(body: dict[str, Any] | None) -> int:
    """Prompt tokens of a request body, estimated without a tokenizer (errs on the high side for English)."""
    if not body:
        return 0
    size = count = 0
    for key in _TEXT_KEYS:
        if key in body:
            s, c = _text_bytes(body[key])
            size, count = size + s, count + c
    return -(-size // BYTES_PER_TOKEN) + count * PER_MESSAGE_TOKENS


def requested_output_tokens(body: dict[str, Any] | None) -> int | None:
    """The output tokens the client allows (max_completion_tokens, max_tokens, ...) times `n`, if it says."""
    if not body:
        return None
    limit = None
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            limit = value
            break
    if limit is None:
        return None
    n = body.get("n")
    return limit * n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else limit


def estimate_usage(
    body: dict[str, Any] | None, operation: str, default_output: int, raw: bytes | None = None
) -> Usage:
    """The usage a request may reach: estimated prompt tokens, and max_tokens (or default_output) out.

    Given the raw body, a body without binary parts is estimated from its size alone (JSON syntax included,
    so a little high), which costs nothing; one with images or audio is walked to count only its text.
    """
    if raw is not None and _BINARY.search(raw) is None:
        prompt = -(-len(raw) // BYTES_PER_TOKEN)
    else:
        prompt = estimate_input_tokens(body)
    output = 0 if operation == "embeddings" else requested_output_tokens(body)
    if output is None:
        output = default_output
    return Usage(input_tokens=prompt, output_tokens=output, total_tokens=prompt + output)
