"""ConverseStream -> OpenAI `chat.completion.chunk` SSE in one step, for the OpenAI -> AWS Bedrock pair.

The same chunks as ConverseStreamToAnthropic followed by ClaudeStreamToOpenAI (the Anthropic pair still
goes that way; tests/translate/test_converse_openai.py proves the two agree byte for byte), without
building an Anthropic event per frame: a text delta is the constant chunk head, its text as JSON, and
the constant chunk tail, all written into one bytearray (the text by msgspec's encode_into, which writes
the JSON string where orjson.dumps would make a bytes object of it first).
"""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec
import orjson

from sluicegate.core.usage import Usage
from sluicegate.translate import converse as cv
from sluicegate.translate.eventstream import EventStreamDecoder, HeaderBlock

_TAIL: Final = b',"logprobs":null,"finish_reason":null}]}\n\n'
_CONTENT_TAIL: Final = b"}" + _TAIL
_ROLE_TAIL: Final = b'{"role":"assistant","content":""}' + _TAIL
_DEFAULT_STOP: Final = ("stop", "end_turn")
_NOT_AN_OBJECT: Final = b"AWS Bedrock sent a stream event that is not a JSON object."
_CUT_SHORT: Final = "AWS Bedrock ended the stream before the model finished."
_ENCODER: Final = msgspec.json.Encoder()


class ConverseStreamToOpenAI:
    """Event-stream reads in, OpenAI chunks out; `usage` is Bedrock's, once the metadata event came."""

    __slots__ = (
        "_between",
        "_content",
        "_id",
        "_index",
        "_opened",
        "_prefix",
        "_signatures",
        "_started",
        "_stop_reason",
        "_text_block",
        "_thinking",
        "_tools",
        "_usage_owed",
        "decoder",
        "done",
        "error",
        "include_usage",
        "message_id",
        "model",
        "usage",
    )

    def __init__(
        self, model: str, message_id: str, include_usage: bool, decoder: EventStreamDecoder | None = None
    ) -> None:
        self.model = model
        self.message_id = message_id
        self.include_usage = include_usage
        self.decoder = decoder or EventStreamDecoder()
        self.usage: Usage | None = None
        self.done = False  # the stop (or an error) was emitted: nothing more is read
        self.error = False  # an error chunk was emitted: the stream ends without [DONE]
        self._id = ""  # the chunks' id: the message id from messageStart on
        self._prefix = b""  # `data: {"id",…,"choices":[{"index":0,"delta":`, made at the first chunk
        self._content = b""  # _prefix + `{"content":`
        self._between = b""  # the text chunk's tail + _content: what goes between two text chunks in a row
        self._usage_owed = False  # a usage chunk closes the stream (metadata came, or a stop without it)
        self._text_block: HeaderBlock | None = None  # the header block of a text delta frame, as last seen
        self._stop_reason: str | None = None  # Bedrock's stopReason from messageStop
        self._started = False
        self._index: dict[Any, int] = {}  # Bedrock contentBlockIndex of an open block -> our block index
        self._opened = 0  # blocks opened so far (our block indexes are never reused)
        self._tools: dict[int, int] = {}  # our block index -> tool call index
        self._thinking: dict[int, list[str]] = {}  # our block index -> thinking text pieces
        self._signatures: dict[int, str] = {}

    def feed(self, chunk: bytes, end: bool = False) -> bytes:
        """The chunks for one read of the upstream body; with `end`, also what the end of the body owes."""
        out = bytearray()
        if chunk and not self.done:  # after the stop or an error the rest of the body is dropped
            self._read(chunk, out)
        if end:
            self._end(out)
        return bytes(out)

    def end(self) -> bytes:
        """What the end of the upstream body still owes: the stop, the usage chunk, `[DONE]` (or an error)."""
        return self.feed(b"", True)

    def _read(self, chunk: bytes, out: bytearray) -> None:
        decode, encode_into = cv.decode_content_block_delta, _ENCODER.encode_into
        index, content, between = self._index, self._content, self._between
        # Text chunks in a row are written head, text, tail + head, text, ..., tail: one write between two
        # texts (`between`) instead of two; a run of them ends with the tail.
        in_run = False
        # Frames with the same header block share its HeaderBlock: after the first, a text delta frame is
        # known by identity. `open_index`: a Bedrock block index known to be open.
        text_block, open_index = self._text_block, None
        blocks, payloads = self.decoder.messages(chunk)
        for i in range(len(payloads)):  # not zip(): the compiled build iterates a range natively
            block = blocks[i]
            payload = payloads[i]
            if block is not text_block and block.name == "contentBlockDelta" and block.kind == "event":
                text_block = block
            if block is text_block and content:  # every token's frame: kept short
                try:
                    event = decode(payload)
                except ValueError:  # not JSON, bad UTF-8, other types: _message says what is wrong
                    event = None
                if event is not None:
                    delta = event.delta
                    text = delta.text if delta is not None else None
                    if text is not None:
                        bedrock_index = event.content_block_index
                        if bedrock_index is not open_index:
                            if bedrock_index not in index:
                                self._open(bedrock_index)  # a text block starts with its first delta
                            open_index = bedrock_index
                        out += between if in_run else content
                        encode_into(text, out, -1)
                        in_run = True
                        continue
            if in_run:
                out += _CONTENT_TAIL
                in_run = False
            self._message(block.kind, block.name, payload, out)
            if self.done:
                break
            content, between, open_index = self._content, self._between, None  # _message may close blocks
        self._text_block = text_block
        if in_run:
            out += _CONTENT_TAIL
        if self.decoder.error is not None and not self.done:
            broken = f"AWS Bedrock sent a broken event stream: {self.decoder.error}".encode()
            out += self._exception("", broken)

    def _end(self, out: bytearray) -> None:
        if not self.done:
            if self._stop_reason is not None:
                self._usage_owed = True
                self._stop(out)
            else:
                self.done = True
                out += self._error_chunk("api_error", _CUT_SHORT)
        if self.error:
            return
        if self.include_usage and self._usage_owed:
            chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model,
                "choices": [],
                "usage": cv.openai_usage(self.usage or Usage()),  # nothing changes a Usage once made
            }
            out += b"data: " + orjson.dumps(chunk) + b"\n\n"
        out += b"data: [DONE]\n\n"

    def _frame(self) -> None:
        head = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }
        self._prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'
        self._content = self._prefix + b'{"content":'
        self._between = _CONTENT_TAIL + self._content

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        if not self._prefix:
            self._frame()
        return self._prefix + orjson.dumps(delta) + _TAIL

    def _open(self, bedrock_index: Any) -> int:
        index = self._index[bedrock_index] = self._opened
        self._opened += 1
        return index

    def _message(self, kind: str, name: str, payload: bytes, out: bytearray) -> None:
        """Any frame."""
        if kind != "event":
            out += self._exception(name, payload)
            return
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            data = None
        if type(data) is not dict:
            out += self._exception("", _NOT_AN_OBJECT)
            return
        if name == "contentBlockDelta":
            delta = data.get("delta") or {}
            bedrock_index = data.get("contentBlockIndex", 0)
            if isinstance(delta, dict) and "text" in delta:
                if bedrock_index not in self._index:
                    self._open(bedrock_index)
                out += self._chunk({"content": delta["text"]})
            else:
                self._delta(bedrock_index, delta, out)
        elif name == "contentBlockStart":
            start = data.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(use, dict):
                index = self._open(data.get("contentBlockIndex", 0))
                position = self._tools[index] = len(self._tools)
                call = {
                    "index": position,
                    "id": use.get("toolUseId"),
                    "type": "function",
                    "function": {"name": use.get("name"), "arguments": ""},
                }
                out += self._chunk({"tool_calls": [call]})
        elif name == "contentBlockStop":
            stopped = self._index.pop(data.get("contentBlockIndex", 0), None)
            if stopped is not None:
                self._block_stop(stopped, out)
        elif name == "messageStart":
            self._id = self.message_id
            self._frame()
            self._started = True
            out += self._prefix + _ROLE_TAIL
        elif name == "messageStop":
            self._stop_reason = data.get("stopReason") or "end_turn"
        elif name == "metadata":
            self.usage = cv.converse_usage(data.get("usage"))
            self._usage_owed = True
            self._stop(out)

    def _delta(self, bedrock_index: Any, delta: Any, out: bytearray) -> None:
        if not isinstance(delta, dict):
            return
        index = self._index.get(bedrock_index)
        if "toolUse" in delta:
            if index is not None:
                use = delta["toolUse"]
                piece = (use.get("input") if isinstance(use, dict) else None) or ""
                if piece and index in self._tools:
                    call = {"index": self._tools[index], "function": {"arguments": piece}}
                    out += self._chunk({"tool_calls": [call]})
        elif "reasoningContent" in delta:
            reasoning = delta["reasoningContent"]
            if not isinstance(reasoning, dict):
                reasoning = {}
            if "redactedContent" in reasoning:
                if index is None:
                    self._open(bedrock_index)
                    data = cv.redacted_from_bedrock(reasoning["redactedContent"])
                    block = {"type": "redacted_thinking", "data": data or ""}
                    out += self._chunk({"thinking_blocks": [block]})
                return
            if index is None:
                index = self._open(bedrock_index)
                self._thinking[index] = []
            text = reasoning.get("text")
            if text:
                self._thinking.setdefault(index, []).append(text)
                out += self._chunk({"reasoning_content": text})
            signature = reasoning.get("signature")
            if signature:
                self._signatures[index] = self._signatures.get(index, "") + signature

    def _block_stop(self, index: int, out: bytearray) -> None:
        if index in self._thinking or index in self._signatures:
            text = "".join(self._thinking.pop(index, ()))
            block = {"type": "thinking", "thinking": text, "signature": self._signatures.pop(index, "")}
            out += self._chunk({"thinking_blocks": [block]})

    def _stop(self, out: bytearray) -> None:
        """Close the open blocks and send the finish chunk (once the message started)."""
        self.done = True
        if self._index:
            for index in sorted(self._index.values()):
                self._block_stop(index, out)
            self._index.clear()
        if self._started:  # messageStart made the prefix
            finish = cv.STOP_REASONS.get(self._stop_reason or "end_turn", _DEFAULT_STOP)[0]
            out += self._prefix + b'{},"logprobs":null,"finish_reason":"' + finish.encode() + b'"}]}\n\n'

    def _exception(self, exception_type: str, payload: bytes) -> bytes:
        """An exception frame (or a broken stream) as an OpenAI error chunk; nothing follows it."""
        self.done = True
        status = cv.EXCEPTION_STATUS.get(exception_type, 500)
        kind = cv.ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        message = cv.exception_message(payload)
        return self._error_chunk(kind, f"{message} ({exception_type})" if exception_type else message)

    def _error_chunk(self, kind: str, message: str) -> bytes:
        self.error = True
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return b"data: " + orjson.dumps(body) + b"\n\n"
