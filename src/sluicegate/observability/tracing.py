"""OpenTelemetry traces over OTLP/HTTP (protobuf): a server span per request, a client span per attempt.

Only built when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; otherwise
nothing here is imported and ctx.trace stays None, so tracing off costs one `is None` test per attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sluicegate import __version__
from sluicegate.core.context import RequestContext

if TYPE_CHECKING:
    from sluicegate.config.runtime import BackendRef

log = logging.getLogger("sluicegate.tracing")

CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
SESSION_HEADER = "agent-session-id"
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
CAPTURE_BYTES = 256 * 1024  # client-bound bytes kept for gen_ai.output.messages (content capture only)
CAPTURE_TEXT = 64 * 1024  # characters of completion text kept per message


class Tracing:
    """The process's tracer provider with a batching OTLP/HTTP exporter (export runs on its own thread)."""

    def __init__(self, env: Mapping[str, str], provider_name: Any) -> None:
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol and protocol != "http/protobuf":
            log.warning("OTLP protocol %s is not supported; exporting traces over http/protobuf", protocol)
        resource = Resource.create(
            {"service.name": env.get("OTEL_SERVICE_NAME") or "sluicegate", "service.version": __version__}
        )
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("sluicegate", __version__)
        self.capture_content = env.get(CAPTURE_CONTENT, "").strip().lower() == "true"
        self.provider_name = provider_name  # BackendRef | None -> gen_ai.provider.name

    def start(self, ctx: RequestContext) -> RequestTrace:
        """Open the request's server span, continuing the client's W3C traceparent if it sent one."""
        return RequestTrace(self, ctx)

    def shutdown(self) -> None:
        """Export what is buffered and stop."""
        self.provider.shutdown()


class RequestTrace:
    """The spans of one request: the server span and the current attempt's client span."""

    __slots__ = ("attempt_span", "capture", "output", "span", "tracing")

    def __init__(self, tracing: Tracing, ctx: RequestContext) -> None:
        self.tracing = tracing
        headers = ctx.request.headers
        parent: Context | None = None
        if "traceparent" in headers:
            parent = _PROPAGATOR.extract(headers)
        started_ns = time.time_ns() - int((time.monotonic() - ctx.started_at) * 1e9)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": ctx.operation,
            "gen_ai.request.model": ctx.model,
            "http.request.method": ctx.request.method,
            "url.path": ctx.request.path,
        }
        session = headers.get(SESSION_HEADER)
        if session:
            attributes["session.id"] = session
        if tracing.capture_content and ctx.body is not None:
            content = _input_content(ctx.body)
            if content is not None:
                attributes["gen_ai.input.messages"] = content
        self.span: Span = tracing.tracer.start_span(
            f"{ctx.operation} {ctx.model}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=started_ns,
        )
        self.attempt_span: Span | None = None
        self.capture = tracing.capture_content  # upstream/forward.py hands us client-bound bytes when set
        self.output = bytearray()

    def capture_output(self, data: bytes) -> None:
        """Keep the first CAPTURE_BYTES the client receives; parsed into gen_ai.output.messages at the end."""
        room = CAPTURE_BYTES - len(self.output)
        if room > 0:
            self.output += data[:room]

    def attempt(self, ref: BackendRef, headers: list[tuple[str, str]]) -> None:
        """Open a client span for an upstream attempt and put its traceparent on the upstream headers."""
        self._end_attempt(None)
        model = ref.model_name_override or self.span.attributes.get("gen_ai.request.model", "")  # type: ignore[attr-defined]
        span = self.tracing.tracer.start_span(
            f"{self.span.attributes.get('gen_ai.operation.name', '')} {model}",  # type: ignore[attr-defined]
            context=set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.provider.name": self.tracing.provider_name(ref),
                "gen_ai.request.model": model,
                "sluicegate.backend": ref.backend.name,
            },
        )
        self.attempt_span = span
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        headers[:] = [h for h in headers if h[0] not in _TRACE_HEADERS]
        headers.extend(carrier.items())

    def _end_attempt(self, ctx: RequestContext | None) -> None:
        span = self.attempt_span
        if span is None:
            return
        self.attempt_span = None
        if ctx is not None and ctx.status:
            span.set_attribute("http.response.status_code", ctx.status)
            if ctx.status >= 400 or ctx.error:
                span.set_status(Status(StatusCode.ERROR, ctx.error or None))
        span.end()

    def finish(self, ctx: RequestContext) -> None:
        """Close the spans with what the response told us (usage, response model, status)."""
        self._end_attempt(ctx)
        span = self.span
        status = ctx.status or 500
        ref = ctx.backend_ref
        attributes: dict[str, Any] = {
            "http.response.status_code": status,
            "sluicegate.attempts": ctx.attempts,
        }
        if ref is not None:
            attributes["gen_ai.provider.name"] = self.tracing.provider_name(ref)
            attributes["sluicegate.backend"] = ref.backend.name
        if ctx.rule is not None:
            attributes["sluicegate.route"] = ctx.rule.route
        if ctx.response_model:
            attributes["gen_ai.response.model"] = ctx.response_model
        usage = ctx.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cached_input_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
            if usage.reasoning_tokens:
                attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        for key, cost in ctx.costs.items():
            attributes[f"sluicegate.cost.{key}"] = cost
        if self.output:
            content = _output_content(bytes(self.output))
            if content is not None:
                attributes["gen_ai.output.messages"] = content
        span.set_attributes(attributes)
        if status >= 400 or ctx.error:
            span.set_attribute("error.type", str(status) if status >= 400 else "_OTHER")
            span.set_status(Status(StatusCode.ERROR, ctx.error or None))
        span.end()


def _input_content(body: dict[str, Any]) -> str | None:
    """The prompt of a request body as JSON text (only when content capture is enabled)."""
    for name in ("messages", "input", "prompt", "query", "documents"):
        value = body.get(name)
        if value is not None:
            return orjson.dumps(value).decode()
    return None


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text[:CAPTURE_TEXT]}


def _message(parts: list[dict[str, Any]], finish: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "parts": parts}
    if finish:
        out["finish_reason"] = finish
    return out


def _openai_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "tool_call",
        "id": call.get("id"),
        "name": function.get("name"),
        "arguments": (function.get("arguments") or "")[:CAPTURE_TEXT],
    }


def _from_json(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """OpenAI chat/completions choices or an Anthropic message -> semconv output messages."""
    choices = body.get("choices")
    if isinstance(choices, list):
        messages = []
        for choice in choices:
            message = choice.get("message") or {}
            parts: list[dict[str, Any]] = []
            text = message.get("content") if message else choice.get("text")  # completions: choices[].text
            if isinstance(text, str) and text:
                parts.append(_text_part(text))
            parts += [_openai_tool_call(call) for call in message.get("tool_calls") or ()]
            messages.append(_message(parts, choice.get("finish_reason")))
        return messages
    content = body.get("content")
    if isinstance(content, list) and body.get("type", "message") == "message":
        parts = []
        for block in content:
            kind = block.get("type")
            if kind == "text":
                parts.append(_text_part(block.get("text") or ""))
            elif kind == "tool_use":
                arguments = orjson.dumps(block.get("input")).decode()[:CAPTURE_TEXT]
                parts.append(
                    {
                        "type": "tool_call",
                        "id": block.get("id"),
                        "name": block.get("name"),
                        "arguments": arguments,
                    }
                )
        return [_message(parts, body.get("stop_reason"))]
    return None


def _from_events(data: bytes) -> list[dict[str, Any]] | None:
    """OpenAI chat chunks (delta.content, delta.tool_calls) or Anthropic text_delta events, concatenated."""
    texts: dict[int, list[str]] = {}
    calls: dict[tuple[int, int], dict[str, Any]] = {}
    finish: dict[int, Any] = {}
    for line in data.splitlines():
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            continue  # [DONE]
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue  # cut off by CAPTURE_BYTES
        if not isinstance(event, dict):
            continue
        choices = event.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                index = choice.get("index", 0)
                delta = choice.get("delta") or {}
                text = delta.get("content") if delta else choice.get("text")
                if isinstance(text, str) and text:
                    texts.setdefault(index, []).append(text)
                for call in delta.get("tool_calls") or ():
                    found = calls.setdefault(
                        (index, call.get("index", 0)), {"id": None, "name": None, "args": []}
                    )
                    function = call.get("function") or {}
                    found["id"] = call.get("id") or found["id"]
                    found["name"] = function.get("name") or found["name"]
                    found["args"].append(function.get("arguments") or "")
                if choice.get("finish_reason"):
                    finish[index] = choice["finish_reason"]
            continue
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                texts.setdefault(0, []).append(delta.get("text") or "")
        elif kind == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                finish[0] = reason
    indexes = sorted(set(texts) | {i for i, _ in calls} | set(finish))
    if not indexes:
        return None
    messages = []
    for index in indexes:
        parts: list[dict[str, Any]] = []
        if texts.get(index):
            parts.append(_text_part("".join(texts[index])))
        for (choice, _), call in sorted(calls.items()):
            if choice == index:
                arguments = "".join(call["args"])[:CAPTURE_TEXT]
                parts.append(
                    {"type": "tool_call", "id": call["id"], "name": call["name"], "arguments": arguments}
                )
        messages.append(_message(parts, finish.get(index)))
    return messages


def _output_content(data: bytes) -> str | None:
    """What the client received (JSON or server-sent events) as gen_ai.output.messages JSON text."""
    try:
        if data.lstrip().startswith(b"{"):
            body = orjson.loads(data)
            messages = _from_json(body) if isinstance(body, dict) else None
        else:
            messages = _from_events(data)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None  # cut off by CAPTURE_BYTES, or not a shape we know
    if not messages:
        return None
    return orjson.dumps(messages).decode()
