"""OpenAI Chat Completions request -> Anthropic Messages request (claude.py re-exports it)."""

from __future__ import annotations

from typing import Any

import orjson

from sluicegate.core.errors import GatewayError

# Anthropic requires max_tokens, OpenAI does not: a request without max_tokens/max_completion_tokens
# gets this many (every Claude model, even Claude 3 Haiku, can produce 4096 output tokens).
DEFAULT_MAX_TOKENS = 4096
# reasoning_effort -> thinking budget_tokens when the request has no explicit `thinking`.
REASONING_BUDGETS = {
    "minimal": 1024,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": 32768,
    "max": 32768,
}
# OpenAI request fields that have an Anthropic meaning of their own, copied as they are.
_VENDOR_FIELDS = ("thinking", "top_k", "output_config", "container", "mcp_servers", "context_management")
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def _unsupported(what: str) -> GatewayError:
    return GatewayError(422, f"Cannot translate this request for an Anthropic backend: {what}.")


def _invalid(what: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, what, param=param)


def _with_cache(block: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    cache = source.get("cache_control")
    if cache is not None:
        block["cache_control"] = cache
    return block


def _data_uri(url: str) -> tuple[str, str]:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URI."""
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise _unsupported("only base64 data URIs are accepted as inline images")
    return head[5:-7].lower(), data


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _invalid("image_url parts need a url", "messages")
    if url.startswith("data:"):
        media_type, data = _data_uri(url)
        if media_type == "application/pdf":
            return _with_cache(
                {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}},
                part,
            )
        if media_type not in _IMAGE_TYPES:
            raise _unsupported(f"image type {media_type!r} (Claude takes jpeg, png, gif, webp and pdf)")
        return _with_cache(
            {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}, part
        )
    if not url.startswith(("http://", "https://")):
        raise _unsupported("image URLs must be http(s) or data URIs")
    kind = "document" if url.lower().split("?", 1)[0].endswith(".pdf") else "image"
    return _with_cache({"type": kind, "source": {"type": "url", "url": url}}, part)


def _file_block(part: dict[str, Any]) -> dict[str, Any]:
    file = part.get("file") or {}
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise _unsupported(
            "file parts must carry file_data as a base64 data URI (file ids are not supported)"
        )
    media_type, payload = _data_uri(data)
    if media_type != "application/pdf":
        raise _unsupported(f"file type {media_type!r} (only application/pdf)")
    return _with_cache(
        {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": payload}}, part
    )


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content (string or parts) as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid("message content must be a string or a list of parts", "messages")
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append(_with_cache({"type": "text", "text": part["text"]}, part))
        elif kind == "image_url":
            blocks.append(_image_block(part))
        elif kind == "file":
            blocks.append(_file_block(part))
        elif kind == "input_audio":
            raise _unsupported("audio input")
        elif kind == "refusal":
            if part.get("refusal"):
                blocks.append({"type": "text", "text": part["refusal"]})
        else:
            raise _unsupported(f"content part type {kind!r}")
    return blocks


def _message_content(message: dict[str, Any]) -> str | list[dict[str, Any]]:
    """A user message's content: kept a string when it is one and nothing asks for caching."""
    content = message.get("content")
    if isinstance(content, str) and message.get("cache_control") is None:
        return content
    blocks = _content_blocks(content)
    if blocks and message.get("cache_control") is not None:
        blocks[-1]["cache_control"] = message["cache_control"]
    return blocks


def _system_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [_with_cache({"type": "text", "text": content}, message)] if content else []
    blocks = [b for b in _content_blocks(content) if b["type"] == "text"]
    if blocks and message.get("cache_control") is not None:
        blocks[-1]["cache_control"] = message["cache_control"]
    return blocks


def _thinking_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Thinking blocks of an assistant message: `thinking_blocks`, or thinking parts in its content."""
    blocks = []
    for block in message.get("thinking_blocks") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking" and block.get("signature"):
            blocks.append(
                {"type": "thinking", "thinking": block.get("thinking") or "", "signature": block["signature"]}
            )
        elif block.get("type") == "redacted_thinking" and block.get("data"):
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
    return blocks


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = _thinking_blocks(message)
    content = message.get("content")
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "thinking" and part.get("signature"):  # Envoy AI Gateway's assistant part shape
                text = part.get("thinking", part.get("text")) or ""
                blocks.append({"type": "thinking", "thinking": text, "signature": part["signature"]})
            elif kind == "redacted_thinking":
                data = part.get("data", part.get("redacted_content"))
                if data:
                    blocks.append({"type": "redacted_thinking", "data": data})
            else:
                blocks.extend(_content_blocks([part]))
    else:
        blocks.extend(_content_blocks(content))
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not call.get("id"):
            raise _invalid(f"tool_calls[{i}] needs an id and a function", "messages")
        arguments = function.get("arguments") or "{}"
        try:
            tool_input = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise _invalid(f"tool_calls[{i}].function.arguments is not valid JSON", "messages") from None
        if not isinstance(tool_input, dict):
            raise _invalid(f"tool_calls[{i}].function.arguments must be a JSON object", "messages")
        block = {
            "type": "tool_use",
            "id": call["id"],
            "name": function.get("name") or "",
            "input": tool_input,
        }
        blocks.append(_with_cache(block, call))
    if blocks and message.get("cache_control") is not None:
        blocks[-1]["cache_control"] = message["cache_control"]
    return blocks


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id") or ""}
    if isinstance(content, str):
        block["content"] = content
    else:
        parts = _content_blocks(content)
        if parts:
            block["content"] = parts
    return _with_cache(block, message)


def _messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, Anthropic messages); consecutive same-role turns are merged."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list", "messages")
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise _invalid("each message must be an object", "messages")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_system_blocks(message))
            continue
        if role == "user":
            turn, content = "user", _message_content(message)
        elif role == "assistant":
            turn, content = "assistant", _assistant_blocks(message)
            if not content:
                continue  # Claude refuses an empty assistant turn
        elif role == "tool":
            turn, content = "user", [_tool_result(message)]
        elif role == "function":
            raise _unsupported("the deprecated `function` role (use tool messages)")
        else:
            raise _invalid(f"unknown message role {role!r}", "messages")
        if out and out[-1]["role"] == turn:
            previous = out[-1]["content"]
            if isinstance(previous, str):
                previous = [{"type": "text", "text": previous}] if previous else []
            if isinstance(content, str):
                content = [{"type": "text", "text": content}] if content else []
            out[-1]["content"] = previous + content
        else:
            out.append({"role": turn, "content": content})
    return system, out


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise _unsupported(f"tool type {kind!r} (only function tools)")
        function = tool.get("function")
        if not isinstance(function, dict) or not function.get("name"):
            raise _invalid("function tools need a function with a name", "tools")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        converted: dict[str, Any] = {"name": function["name"], "input_schema": schema}
        if function.get("description"):
            converted["description"] = function["description"]
        if function.get("strict") is True:
            converted["strict"] = True
        cache = tool.get("cache_control", function.get("cache_control"))
        if cache is not None:
            converted["cache_control"] = cache
        out.append(converted)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice in ("required", "any"):
        result = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and isinstance(choice.get("function"), dict)
        and choice["function"].get("name")
    ):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _unsupported(f"tool_choice {choice!r}")
    if result is not None and parallel is False:
        result["disable_parallel_tool_use"] = True
    return result


def openai_to_claude(body: dict) -> dict:
    """An OpenAI chat request as an Anthropic Messages request body (with `model`; GatewayError if not)."""
    system, messages = _messages(body.get("messages"))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if system:
        out["system"] = system
    if (n := body.get("n")) is not None and n != 1:
        raise _unsupported("n other than 1")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    for name in _VENDOR_FIELDS:
        if body.get(name) is not None:
            out[name] = body[name]
    effort = body.get("reasoning_effort")
    if effort is not None and "thinking" not in out and effort != "none":
        if effort not in REASONING_BUDGETS:
            raise _unsupported(f"reasoning_effort {effort!r}")
        out["thinking"] = {"type": "enabled", "budget_tokens": REASONING_BUDGETS[effort]}
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
        budget = (out.get("thinking") or {}).get("budget_tokens")
        if isinstance(budget, int) and budget >= max_tokens:
            max_tokens = budget + DEFAULT_MAX_TOKENS
    out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    if body.get("stream") is True:
        out["stream"] = True
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            out["output_config"] = {
                **(out.get("output_config") or {}),
                "format": {"type": "json_schema", "schema": schema},
            }
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    return out
