"""OpenAI client API -> OpenAI-schema backend (OpenAI, vLLM, Ollama, ...): passthrough-first."""

from __future__ import annotations

import re
from functools import cache

import orjson

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.usage import Usage
from sluicegate.translate.base import UpstreamRequest, dumps, mutated_body
from sluicegate.translate.sse import CompleteEvents, payloads

# operation -> path below the schema prefix
PATHS = {"chat": "chat/completions", "completion": "completions", "embeddings": "embeddings"}


@cache
def _target(prefix: str | None, operation: str) -> str:
    """The path of an operation below a schema prefix (`v1` when none is configured); a few per config."""
    prefix = "v1" if prefix is None else prefix.strip("/")
    return f"/{prefix}/{PATHS[operation]}" if prefix else f"/{PATHS[operation]}"


class OpenAIToOpenAI:
    """The body goes through untouched unless the model is overridden or the body mutated."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.operation = ctx.operation
        self.stream = ctx.stream
        self.response_model = ""
        self._events: CompleteEvents | None = None
        self._parts: list[bytes] = []
        self._strip = _UsageStripper() if ctx.force_usage and ctx.stream else None

    def target(self, ctx: RequestContext) -> str:
        """`/{prefix}/{operation path}`."""
        return _target(self.ref.backend.schema.prefix, self.operation)

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """Forward the client's JSON, re-serialized only when something changed."""
        body = mutated_body(ctx, self.ref)
        if self._strip is not None:  # costs need usage the client did not ask for: ask for it
            body = dict(ctx.body or {}) if body is None else body
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        raw = ctx.request.body if body is None else dumps(body)
        return UpstreamRequest("POST", self.target(ctx), [("content-type", "application/json")], raw)

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Upstream headers as they are."""
        for name, value in headers:
            if value.startswith(b"text/event-stream") and name.lower() == b"content-type":
                self._events = CompleteEvents()
        return headers

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """Pass bytes through; read usage and model from the JSON body or the stream's events."""
        if self._events is not None:
            usage = None
            block = self._events.feed(chunk) if chunk else b""
            # Per chunk only C-level scans: the first event is parsed once for the model, and only the
            # events holding a real usage object (OpenAI puts `"usage":null` on every chunk once usage is
            # asked for) are parsed for usage.
            if block and not self.response_model:
                first = block.find(b"\n\n")
                for payload in payloads(block if first < 0 else block[:first]):
                    self._read_event(payload)
            # The last usage object of the block is the one that counts. Found from the end: the last
            # "usage" is usually that object (OpenAI's final chunk) or null on a mid-stream chunk; the
            # rest of the block is searched only when that last one is null and others come before it.
            last = block.rfind(b'"usage"') if block else -1
            if last >= 0:
                if _USAGE_OBJECT.match(block, last):
                    usage = self._read_event_at(block, last)
                elif block.find(b'"usage"', 0, last) >= 0:  # an earlier "usage" may be an object
                    for match in _USAGE_OBJECT.finditer(block, 0, last):
                        usage = self._read_event_at(block, match.start()) or usage
            if self._strip is not None:
                chunk = self._strip.feed(chunk, end)
            return chunk, usage
        self._parts.append(chunk)
        if not end:
            return b"", None
        body = b"".join(self._parts)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None
        if not isinstance(parsed, dict):
            return body, None
        self.response_model = parsed.get("model") or ""
        usage = parsed.get("usage")
        return body, Usage.from_openai(usage) if isinstance(usage, dict) else None

    def _read_event_at(self, block: bytes, at: int) -> Usage | None:
        """The usage of the event around position `at` of a block of whole events."""
        start = block.rfind(b"\n\n", 0, at)
        start = 0 if start < 0 else start + 2
        stop = block.find(b"\n\n", at)
        usage = None
        for payload in payloads(block[start : stop if stop >= 0 else len(block)]):
            usage = self._read_event(payload) or usage
        return usage

    def _read_event(self, payload: bytes) -> Usage | None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(event, dict):
            return None
        if not self.response_model:
            self.response_model = event.get("model") or ""
        usage = event.get("usage")
        return Usage.from_openai(usage) if isinstance(usage, dict) else None

    def error(self, status: int, body: bytes) -> bytes:
        """OpenAI errors pass through; a body that is not JSON is wrapped in the OpenAI envelope."""
        try:
            orjson.loads(body)
            return body
        except orjson.JSONDecodeError:
            text = body.decode("utf-8", "replace").strip()[:1000] or f"upstream returned status {status}"
            error_type = "server_error" if status >= 500 else "invalid_request_error"
            return dumps({"error": {"message": text, "type": error_type, "param": None, "code": None}})


_USAGE_EVENT = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,')


class _UsageStripper:
    """Hides the stream usage the gateway asked for: the final usage event and the `"usage":null` fields.

    Works on bytes, one whole event at a time (a partial event waits for its end); nothing is re-serialized.
    """

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes, end: bool) -> bytes:
        """The client's bytes for the events this chunk completes."""
        data = self._tail + chunk if self._tail else chunk
        separator = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n"
        cut = len(data) if end else data.rfind(separator) + len(separator)
        if not end and cut < len(separator):
            self._tail = data
            return b""
        self._tail, data = data[cut:], data[:cut]
        if b'"usage"' not in data:
            return data
        kept = []
        for event in data.split(separator):
            if b'"usage"' in event:
                if _USAGE_EVENT.search(event) and _USAGE_OBJECT.search(event):
                    continue
                event = _USAGE_NULL.sub(b"", event)
            kept.append(event)
        return separator.join(kept)
