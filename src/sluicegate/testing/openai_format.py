"""OpenAI wire-format bodies, stream chunks, error envelopes and the fake's reply rules."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from typing import Any

import orjson

MODELS: tuple[str, ...] = ("demo", "fake-gpt", "fake-embedding")
MODEL_CREATED = 1_700_000_000
OWNED_BY = "sluicegate-fake"
SYSTEM_FINGERPRINT = "fp_sluicegate"
EMBEDDING_DIMENSIONS = 8
DEFAULT_REPLY = "Hello from the Sluicegate fake provider."
DONE = b"data: [DONE]\n\n"

_WORD_PIECES = re.compile(r"\s*\S+\s*")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "unprocessable_entity_error",
    429: "rate_limit_error",
}


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": OWNED_BY}


MODELS_LIST = orjson.dumps({"object": "list", "data": [_model(m) for m in MODELS]})
MODEL_OBJECTS = {m: orjson.dumps(_model(m)) for m in MODELS}


def error_type(status: int) -> str:
    """The OpenAI error `type` used for an HTTP status."""
    if status >= 500:
        return "server_error"
    return _ERROR_TYPES.get(status, "api_error")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    """An OpenAI error envelope."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the `text` parts of a list joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def chat_reply(messages: list[Any]) -> str:
    """The default chat reply: "Echo: " + the last user message's text."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = text_of(message.get("content"))
            return f"Echo: {text}" if text else DEFAULT_REPLY
    return DEFAULT_REPLY


def chat_prompt_tokens(messages: list[Any]) -> int:
    """Whitespace-separated words over the text of all messages, at least 1."""
    words = sum(len(text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
    return max(words, 1)


def input_texts(value: Any) -> list[str] | None:
    """A `prompt` or `input` (string, strings, tokens or token lists) as texts; None if invalid."""
    # A token array becomes its numbers joined by spaces, so it counts one word per token.
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(t, int) for t in value):
            return [_tokens_text(value)]
        if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
            return [_tokens_text(v) for v in value]
    return None


def _tokens_text(tokens: list[int]) -> str:
    return " ".join(map(str, tokens))


def completion_reply(texts: list[str]) -> str:
    """The default legacy-completions reply: "Echo: " + the last prompt."""
    return f"Echo: {texts[-1]}" if texts and texts[-1] else DEFAULT_REPLY


def word_tokens(texts: list[str]) -> int:
    """Whitespace-separated words over texts, at least 1."""
    return max(sum(len(t.split()) for t in texts), 1)


def split_reply(reply: str, chunks: int | None = None) -> list[str]:
    """Pieces that join to `reply`: one per word, or exactly `chunks` near-equal (maybe empty) pieces."""
    if chunks is None:
        pieces = _WORD_PIECES.findall(reply)
        return pieces or ([reply] if reply else [])
    if chunks <= 0:
        return []
    size, extra = divmod(len(reply), chunks)
    pieces, start = [], 0
    for i in range(chunks):
        end = start + size + (1 if i < extra else 0)
        pieces.append(reply[start:end])
        start = end
    return pieces


def usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """An OpenAI `usage` object."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(cid: str, created: int, model: str, reply: str, use: dict[str, Any]) -> bytes:
    """A unary `chat.completion` body."""
    return orjson.dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": use,
        }
    )


def text_completion(cid: str, created: int, model: str, reply: str, use: dict[str, Any]) -> bytes:
    """A unary legacy `text_completion` body."""
    return orjson.dumps(
        {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"text": reply, "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": use,
        }
    )


class ChatChunks:
    """Builds the `data: ...` events of a streamed chat completion."""

    def __init__(self, cid: str, created: int, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        self._choice: dict[str, Any] = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}
        self._chunk: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [self._choice],
        }
        if include_usage:
            self._chunk["usage"] = None

    def _event(self) -> bytes:
        return b"data: " + orjson.dumps(self._chunk) + b"\n\n"

    def first(self) -> bytes | None:
        """The opening chunk with the assistant role."""
        self._choice["delta"] = {"role": "assistant", "content": "", "refusal": None}
        return self._event()

    def content(self, piece: str) -> bytes:
        """A content chunk."""
        self._choice["delta"] = {"content": piece}
        return self._event()

    def finish(self) -> bytes:
        """The chunk with `finish_reason: stop`."""
        self._choice["delta"] = {}
        self._choice["finish_reason"] = "stop"
        return self._event()

    def usage(self, use: dict[str, Any]) -> bytes:
        """The final usage chunk, with no choices."""
        return b"data: " + orjson.dumps({**self._chunk, "choices": [], "usage": use}) + b"\n\n"


class TextChunks(ChatChunks):
    """Builds the `data: ...` events of a streamed legacy text completion."""

    def __init__(self, cid: str, created: int, model: str, include_usage: bool) -> None:
        super().__init__(cid, created, model, include_usage)
        self._chunk["object"] = "text_completion"
        self._choice = {"text": "", "index": 0, "logprobs": None, "finish_reason": None}
        self._chunk["choices"] = [self._choice]

    def first(self) -> bytes | None:
        """Legacy completions have no opening chunk."""
        return None

    def content(self, piece: str) -> bytes:
        """A text chunk."""
        self._choice["text"] = piece
        return self._event()

    def finish(self) -> bytes:
        """The chunk with `finish_reason: stop`."""
        self._choice["text"] = ""
        self._choice["finish_reason"] = "stop"
        return self._event()


def embedding_vector(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic vector derived from a hash of the text; exact in float32."""
    digest = hashlib.shake_128(text.encode()).digest(dimensions)
    return [(b - 128) / 128 for b in digest]


def embeddings(model: str, texts: list[str], dimensions: int, b64: bool, prompt_tokens: int) -> bytes:
    """An embeddings `list` body, with float or base64 (little-endian float32) vectors."""
    data = []
    for i, text in enumerate(texts):
        vector: Any = embedding_vector(text, dimensions)
        if b64:
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )
