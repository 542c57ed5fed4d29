"""OpenAI chat completions -> Gemini on Vertex AI (`:generateContent`, `:streamGenerateContent?alt=sse`)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.translate import gemini as g
from sluicegate.translate.base import UpstreamRequest, apply_body_mutation, dumps, upstream_json_object
from sluicegate.translate.sse import SSEEvents

_PLAIN_CONFIG = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("n", "candidateCount"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("seed", "seed"),
)
_DETAIL = {
    "low": "MEDIA_RESOLUTION_LOW",
    "medium": "MEDIA_RESOLUTION_MEDIUM",
    "high": "MEDIA_RESOLUTION_HIGH",
}
_DONE = b"data: [DONE]\n\n"


class OpenAIToGCPVertexAI:
    """Chat completions in, Gemini out; tool-call ids are generated and carry thought signatures."""

    def __init__(self, ctx: RequestContext, ref: BackendRef) -> None:
        self.ref = ref
        self.model = ref.model_name_override or ctx.model
        self.response_model = self.model
        self.stream = ctx.stream
        options = (ctx.body or {}).get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self._parts: list[bytes] = []
        self._state: _StreamToOpenAI | None = None

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """The generateContent request for the chat body."""
        body = apply_body_mutation(to_gemini(ctx.body or {}, self.model), self.ref)
        return g.generate_request(body, self.model, self.stream)

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """SSE for streams, JSON otherwise."""
        if self.stream:
            self._state = _StreamToOpenAI(self.model, self.include_usage)
            return g.with_content_type(headers, b"text/event-stream")
        return g.with_content_type(headers, b"application/json")

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """OpenAI chunks per Gemini event, or the whole completion once the body is complete."""
        state = self._state
        if state is not None:
            out = state.feed(chunk) if chunk else b""
            if end:
                out += state.finish()
            self.response_model = state.model
            return out, state.usage if end else None
        self._parts.append(chunk)
        if not end:
            return b"", None
        response = upstream_json_object(b"".join(self._parts), "The Vertex AI backend")
        completion, usage = to_openai(response, self.model)
        self.response_model = completion["model"]
        return dumps(completion), usage

    def error(self, status: int, body: bytes) -> bytes:
        """Google's error in the OpenAI envelope."""
        return g.gemini_error(status, body, "openai")


def to_gemini(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A GenerateContentRequest for an OpenAI chat body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "'messages' must be a non-empty list.", param="messages")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool-call id -> function name, from the assistant turns so far
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise GatewayError(400, f"messages[{i}] must be an object.", param=f"messages[{i}]")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system += [{"text": t} for t in _texts(content, i) if t]
        elif role == "user":
            pending += _user_parts(content, model, i)
        elif role in ("tool", "function"):
            pending.append(_function_response(message, names, i))
        elif role == "assistant":
            if pending:
                contents.append({"role": "user", "parts": pending})
                pending = []
            parts = _assistant_parts(message, names, i)
            if parts:
                contents.append({"role": "model", "parts": parts})
        else:
            raise GatewayError(
                400, f"messages[{i}].role {role!r} is not a chat role.", param=f"messages[{i}]"
            )
    if pending:
        contents.append({"role": "user", "parts": pending})
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = _tools(body, model)
    if tools:
        request["tools"] = tools
    tool_config = _tool_config(body.get("tool_choice", body.get("function_call")))
    if tool_config:
        request["toolConfig"] = tool_config
    config = _generation_config(body, model)
    if config:
        request["generationConfig"] = config
    for key, name in (("safetySettings", "safety_settings"), ("cachedContent", "cached_content")):
        value = body.get(key, body.get(name))
        if value is not None:
            request[key] = value
    return request


def _texts(content: Any, i: int) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        out = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise GatewayError(422, f"messages[{i}]: only text content parts are supported here.")
            out.append(part["text"])
        return out
    raise GatewayError(400, f"messages[{i}].content must be a string or a list of parts.")


def _user_parts(content: Any, model: str, i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise GatewayError(400, f"messages[{i}].content must be a string or a list of parts.")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                continue
            converted = g.part_from_url(url)
            detail = image.get("detail") if isinstance(image, dict) else None
            if detail in _DETAIL and g.gemini_version(model) >= (3, 0):
                converted["mediaResolution"] = {"level": _DETAIL[detail]}
            parts.append(converted)
        elif kind == "input_audio" and isinstance(audio := part.get("input_audio"), dict):
            data, fmt = audio.get("data"), audio.get("format") or "wav"
            parts.append({"inlineData": {"mimeType": f"audio/{fmt}", "data": data}})
        elif kind == "file" and isinstance(file := part.get("file"), dict):
            if not isinstance(file.get("file_data"), str):
                raise GatewayError(422, "File parts need file_data (a data URI); file_id is not supported.")
            parts.append(g.inline_from_data_uri(file["file_data"], "file"))
        else:
            raise GatewayError(422, f"messages[{i}]: content part type {kind!r} is not supported by Gemini.")
    return parts


def _function_response(message: dict[str, Any], names: dict[str, str], i: int) -> dict[str, Any]:
    if message.get("role") == "function":
        name = message.get("name")
    else:
        call_id = message.get("tool_call_id")
        name = names.get(call_id) if isinstance(call_id, str) else None
        if name is None:
            raise GatewayError(
                422,
                f"messages[{i}] answers tool_call_id {call_id!r}, which no earlier assistant message "
                "called; Gemini matches tool results by function name.",
            )
    output = "".join(_texts(message.get("content"), i))
    return {"functionResponse": {"name": name, "response": {"output": output}}}


def _assistant_parts(message: dict[str, Any], names: dict[str, str], i: int) -> list[dict[str, Any]]:
    items: list[tuple[str, Any]] = []
    signature = None
    for block in message.get("thinking_blocks") or ():
        if isinstance(block, dict) and block.get("type") == "thinking":
            items.append(("thought", block.get("thinking") or ""))
            signature = signature or block.get("signature") or None
    content = message.get("content")
    if isinstance(content, str):
        items.append(("text", content))
    elif isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                items.append(("text", part.get("text") or ""))
            elif kind == "thinking":
                items.append(("thought", part.get("thinking") or part.get("text") or ""))
                signature = signature or part.get("signature") or None
            elif kind != "refusal":
                raise GatewayError(422, f"messages[{i}]: assistant content part {kind!r} is not supported.")
    calls = message.get("tool_calls") or ()
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls = [*calls, {"id": None, "function": legacy}]
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise GatewayError(400, f"messages[{i}].tool_calls[{j}] needs a function with a name.")
        call_id = call.get("id")
        if call_id is None and legacy is None:
            raise GatewayError(422, f"messages[{i}].tool_calls[{j}] is missing its id.")
        try:
            args = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise GatewayError(422, f"messages[{i}].tool_calls[{j}]: arguments are not valid JSON.") from None
        if not isinstance(args, dict):
            raise GatewayError(422, f"messages[{i}].tool_calls[{j}]: arguments must be a JSON object.")
        if isinstance(call_id, str):
            names[call_id] = function["name"]
        own = g.signature_of_id(call_id) if isinstance(call_id, str) else None
        items.append(("call", (function["name"], args, own)))
    return g.model_parts(items, signature)


def _tools(body: dict[str, Any], model: str) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for tool in body.get("tools") or ():
        kind = tool.get("type", "function") if isinstance(tool, dict) else None
        if kind == "function" and isinstance(fn := tool.get("function"), dict):
            declarations.append(
                g.function_declaration(fn.get("name"), fn.get("description"), fn.get("parameters"), model)
            )
        elif kind == "google_search":
            others.append({"googleSearch": tool.get("google_search") or {}})
        else:
            raise GatewayError(422, f"Tool type {kind!r} is not supported by Gemini.")
    for fn in body.get("functions") or ():
        if isinstance(fn, dict):
            declarations.append(
                g.function_declaration(fn.get("name"), fn.get("description"), fn.get("parameters"), model)
            )
    return [*others, {"functionDeclarations": declarations}] if declarations else others


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"functionCallingConfig": {"mode": modes[choice]}}
    if isinstance(choice, dict):
        function = choice.get("function") if choice.get("type") == "function" else choice
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise GatewayError(
        422, f"tool_choice {choice!r} is not supported; use auto, none, required or a function."
    )


def _generation_config(body: dict[str, Any], model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for source, target in _PLAIN_CONFIG:
        value = body.get(source)
        if value is not None:
            config[target] = value
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    if body.get("logprobs") is True:
        config["responseLogprobs"] = True
        if body.get("top_logprobs") is not None:
            config["logprobs"] = body["top_logprobs"]
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        g.response_schema(config, None, model)
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        g.response_schema(config, spec.get("schema") if isinstance(spec, dict) else None, model)
    elif isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise GatewayError(422, f"response_format type {fmt.get('type')!r} is not supported by Gemini.")
    if body.get("reasoning_effort") is not None:
        config["thinkingConfig"] = g.thinking_from_effort(body["reasoning_effort"], model)
    thinking = g.thinking_from_anthropic(body.get("thinking"))
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if "audio" in (body.get("modalities") or ()):
        raise GatewayError(422, "Audio output (modalities: audio) is not supported through Gemini.")
    vendor = body.get("generationConfig")
    if isinstance(vendor, dict):
        config.update(vendor)  # vendor fields win, as in Envoy AI Gateway
    return config


def _tool_calls(calls: list[tuple[str, Any, str | None]], start: int | None) -> list[dict[str, Any]]:
    out = []
    for n, (name, args, sig) in enumerate(calls):
        call: dict[str, Any] = {"id": g.new_tool_call_id(sig), "type": "function"}
        call["function"] = {"name": name, "arguments": orjson.dumps(args).decode()}
        if start is not None:
            call = {"index": start + n, **call}
        out.append(call)
    return out


def _thinking_blocks(thoughts: str, signature: str | None) -> list[dict[str, Any]]:
    block: dict[str, Any] = {"type": "thinking", "thinking": thoughts}
    if signature:
        block["signature"] = signature
    return [block]


def _finish(reason: Any, has_calls: bool) -> str | None:
    if not reason:
        return None
    finish = g.OPENAI_FINISH.get(reason, "error")
    return "tool_calls" if finish == "stop" and has_calls else finish


def to_openai(response: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage]:
    """A chat.completion for a GenerateContentResponse, and its usage."""
    choices = []
    for i, candidate in enumerate(response.get("candidates") or ()):
        thoughts, text, calls, signature = g.read_parts((candidate.get("content") or {}).get("parts"))
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = _tool_calls(calls, None)
        if thoughts:
            message["reasoning_content"] = thoughts
        signature = signature or (calls[0][2] if calls else None)
        if thoughts or signature:
            message["thinking_blocks"] = _thinking_blocks(thoughts, signature)
        choices.append(
            {
                "index": candidate.get("index", i),
                "message": message,
                "logprobs": g.openai_logprobs(candidate.get("logprobsResult")),
                "finish_reason": _finish(candidate.get("finishReason") or "STOP", bool(calls)),
            }
        )
    if not choices and (response.get("promptFeedback") or {}).get("blockReason"):
        message = {"role": "assistant", "content": None}
        choices.append({"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"})
    usage = g.usage_of(response.get("usageMetadata"))
    completion = {
        "id": response.get("responseId") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": g.created_at(response.get("createTime")),
        "model": response.get("modelVersion") or model,
        "choices": choices,
        "usage": g.openai_usage(usage),
    }
    return completion, usage


class _StreamToOpenAI:
    """Gemini SSE events -> OpenAI chat.completion.chunk events; usage kept for the end."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self._events = SSEEvents()
        self._id = ""
        self._created = 0
        self._tools: dict[int, int] = {}  # candidate index -> tool calls sent so far
        self._started: set[int] = set()
        self._failed = False  # an error event ended the stream: no usage, no [DONE]

    def feed(self, chunk: bytes) -> bytes:
        """The OpenAI events for the Gemini events this chunk completes."""
        return b"".join([self._event(event) for event in self._events.objects(chunk)])

    def finish(self) -> bytes:
        """The rest of the stream: any last event, the usage chunk if asked for, [DONE]."""
        out = self.feed(b"\n\n")
        if self._failed:
            return out
        if self.include_usage:
            usage = g.openai_usage(self.usage or Usage())
            out += self._frame({**self._head(), "choices": [], "usage": usage})
        return out + _DONE

    def _head(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
        }

    def _frame(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _event(self, event: dict[str, Any]) -> bytes:
        if self._failed:
            return b""
        if isinstance(error := event.get("error"), dict):
            self._failed = True
            message = error.get("message") or "the Vertex AI stream failed"
            return self._frame(
                {"error": {"message": message, "type": "server_error", "code": error.get("status")}}
            )
        if not self._id:
            self._id = event.get("responseId") or f"chatcmpl-{uuid.uuid4().hex}"
            self._created = g.created_at(event.get("createTime"))
            self.model = event.get("modelVersion") or self.model
        if event.get("usageMetadata"):
            self.usage = g.usage_of(event["usageMetadata"])
        choices = [self._choice(c, i) for i, c in enumerate(event.get("candidates") or ())]
        if not choices and (event.get("promptFeedback") or {}).get("blockReason"):
            choices = [
                {
                    "index": 0,
                    "delta": {"role": "assistant"},
                    "logprobs": None,
                    "finish_reason": "content_filter",
                }
            ]
        if not choices:
            return b""
        chunk = {**self._head(), "choices": choices}
        if self.include_usage:
            chunk["usage"] = None
        return self._frame(chunk)

    def _choice(self, candidate: dict[str, Any], i: int) -> dict[str, Any]:
        index = candidate.get("index", i)
        thoughts, text, calls, signature = g.read_parts((candidate.get("content") or {}).get("parts"))
        delta: dict[str, Any] = {}
        if index not in self._started:
            self._started.add(index)
            delta["role"] = "assistant"
        if text:
            delta["content"] = text
        if thoughts:
            delta["reasoning_content"] = thoughts
        signature = signature or (calls[0][2] if calls else None)
        if signature:
            delta["thinking_blocks"] = _thinking_blocks(thoughts, signature)
        sent = self._tools.get(index, 0)
        if calls:
            delta["tool_calls"] = _tool_calls(calls, sent)
            self._tools[index] = sent + len(calls)
        finish = _finish(candidate.get("finishReason"), bool(self._tools.get(index)))
        return {
            "index": index,
            "delta": delta,
            "logprobs": g.openai_logprobs(candidate.get("logprobsResult")),
            "finish_reason": finish,
        }
