"""The Gemini wire format on Vertex AI: pieces shared by the translators that speak it."""

from __future__ import annotations

import base64
import mimetypes
import re
import time
import uuid
from calendar import timegm
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import orjson

from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage
from sluicegate.translate.base import UpstreamRequest

JSON_HEADERS = [("content-type", "application/json")]
# Google's documented escape for clients that cannot echo a thought signature on a function call.
DUMMY_SIGNATURE = base64.b64encode(b"skip_thought_signature_validator").decode()
_ID_PREFIX = "call_"
_SIG_MARK = "_ts_"  # call_<24 hex>_ts_<url-safe signature>
_ID_LEN = len(_ID_PREFIX) + 24
_MAX_SCHEMA_DEPTH = 64
_PLAIN_MODEL = re.compile(r"[A-Za-z0-9._@-]+\Z")  # needs no percent-encoding in a path
_GEMINI_VERSION = re.compile(r"gemini-(\d+)(?:\.(\d+))?")
_SCHEMA_KEYS = frozenset(
    {
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "propertyOrdering",
        "default",
        "example",
    }
)
_CONTENT_FILTER = (
    "SAFETY",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
)
OPENAI_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(_CONTENT_FILTER, "content_filter"),
    "RECITATION": "recitation",
    "IMAGE_RECITATION": "recitation",
    "MALFORMED_FUNCTION_CALL": "malformed_function_call",
    "UNEXPECTED_TOOL_CALL": "unexpected_tool_call",
    "LANGUAGE": "language",
    "NO_IMAGE": "no_image",
}
ANTHROPIC_STOP = {
    "STOP": "end_turn",
    "MAX_TOKENS": "max_tokens",
    **dict.fromkeys((*_CONTENT_FILTER, "RECITATION", "IMAGE_RECITATION"), "refusal"),
}


def model_target(publisher: str, model: str, method: str, query: str = "") -> str:
    """`/publishers/{publisher}/models/{model}:{method}`; the GCP credential prepends the project part."""
    if not _PLAIN_MODEL.match(model):
        model = quote(model, safe="@")
    target = f"/publishers/{publisher}/models/{model}:{method}"
    return f"{target}?{query}" if query else target


def generate_request(body: dict[str, Any], model: str, stream: bool) -> UpstreamRequest:
    """The generateContent (or, streaming, streamGenerateContent?alt=sse) request for a Gemini body."""
    if stream:
        target = model_target("google", model, "streamGenerateContent", "alt=sse")
    else:
        target = model_target("google", model, "generateContent")
    return UpstreamRequest("POST", target, list(JSON_HEADERS), orjson.dumps(body))


def gemini_version(model: str) -> tuple[int, int]:
    """(major, minor) of a `gemini-X.Y-...` model name; (0, 0) when the name says nothing."""
    found = _GEMINI_VERSION.search(model)
    if found is None:
        return 0, 0
    return int(found.group(1)), int(found.group(2) or 0)


def takes_json_schema(model: str) -> bool:
    """Gemini 2.5 and later take plain JSON Schema (`parametersJsonSchema`, `responseJsonSchema`)."""
    return gemini_version(model) >= (2, 5)


def new_tool_call_id(signature: str | None = None) -> str:
    """A tool-call id for a Gemini function call (Gemini sends none); carries its thought signature."""
    base = _ID_PREFIX + uuid.uuid4().hex[:24]
    if not signature:
        return base
    return base + _SIG_MARK + signature.replace("+", "-").replace("/", "_").rstrip("=")


def signature_of_id(call_id: str) -> str | None:
    """The thought signature a tool-call id of ours carries, as standard base64; None if none."""
    if not call_id.startswith(_ID_PREFIX) or call_id[_ID_LEN : _ID_LEN + len(_SIG_MARK)] != _SIG_MARK:
        return None
    sig = call_id[_ID_LEN + len(_SIG_MARK) :].replace("-", "+").replace("_", "/")
    return sig + "=" * (-len(sig) % 4) if sig else None


def inline_from_data_uri(url: str, what: str = "image") -> dict[str, Any]:
    """`{"inlineData": ...}` from a data URI, or a 422."""
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise GatewayError(422, f"The {what} data URI is malformed; expected data:<mime>;base64,<data>.")
    mime, _, encoding = head[5:].partition(";")
    if encoding != "base64":
        data = base64.b64encode(unquote_to_bytes(data)).decode()
    return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": data}}


def part_from_url(url: str, default_mime: str = "image/jpeg", what: str = "image") -> dict[str, Any]:
    """An inline part for a data URI, a `fileData` part for http(s) and gs:// URLs, else a 422."""
    if url.startswith("data:"):
        return inline_from_data_uri(url, what)
    if url.startswith(("https://", "http://", "gs://")):
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or default_mime
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise GatewayError(422, f"The {what} URL must be a data URI or an http(s):// or gs:// URL.")


def to_gemini_schema(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON Schema as Gemini's OpenAPI-subset Schema: $refs inlined, unsupported keywords dropped."""
    if not isinstance(schema, dict):
        return schema
    if depth > _MAX_SCHEMA_DEPTH:
        raise GatewayError(422, "A JSON schema nests too deeply (or refers to itself) for Gemini's Schema.")
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return to_gemini_schema(_resolve_ref(ref, root), root, depth + 1)
    out: dict[str, Any] = {key: value for key, value in schema.items() if key in _SCHEMA_KEYS}
    kind = schema.get("type")
    if isinstance(kind, list):
        if "null" in kind:
            out["nullable"] = True
        kinds = [k for k in kind if k != "null"]
        if len(kinds) == 1:
            kind = kinds[0]
        else:
            kind = None
            out["anyOf"] = [{"type": k.upper()} for k in kinds if isinstance(k, str)]
    if isinstance(kind, str):
        out["type"] = kind.upper()
    if "const" in schema:
        out["enum"] = [schema["const"]]
    variants = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(variants, list):
        kept = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        if len(kept) < len(variants):
            out["nullable"] = True
        converted = [to_gemini_schema(v, root, depth + 1) for v in kept]
        if len(converted) == 1 and isinstance(converted[0], dict):
            out = {**converted[0], **out}
        elif converted:
            out["anyOf"] = converted
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        for item in all_of:
            merged = to_gemini_schema(item, root, depth + 1)
            if isinstance(merged, dict):
                out = {**merged, **out}
    props = schema.get("properties")
    if isinstance(props, dict):
        out["properties"] = {name: to_gemini_schema(sub, root, depth + 1) for name, sub in props.items()}
        if isinstance(schema.get("required"), list):
            out["required"] = schema["required"]
    if "items" in schema:
        out["items"] = to_gemini_schema(schema["items"], root, depth + 1)
    return out


def _resolve_ref(ref: str, root: dict[str, Any]) -> Any:
    if not ref.startswith("#/"):
        raise GatewayError(422, f"Only local JSON schema references (#/...) are supported, not {ref!r}.")
    node: Any = root
    for name in ref[2:].split("/"):
        if not isinstance(node, dict) or name not in node:
            raise GatewayError(422, f"The JSON schema reference {ref!r} points nowhere.")
        node = node[name]
    return node


def function_declaration(name: Any, description: Any, parameters: Any, model: str) -> dict[str, Any]:
    """One `functionDeclarations` entry; plain JSON Schema for 2.5+, the converted Schema before."""
    if not isinstance(name, str) or not name:
        raise GatewayError(422, "Every tool needs a non-empty name.")
    decl: dict[str, Any] = {"name": name}
    if description:
        decl["description"] = description
    if isinstance(parameters, dict) and parameters:
        if takes_json_schema(model):
            decl["parametersJsonSchema"] = parameters
        else:
            decl["parameters"] = to_gemini_schema(parameters)
    return decl


def response_schema(config: dict[str, Any], schema: Any, model: str) -> None:
    """Ask for JSON output following `schema` (None: any JSON)."""
    config["responseMimeType"] = "application/json"
    if isinstance(schema, dict) and schema:
        if takes_json_schema(model):
            config["responseJsonSchema"] = schema
        else:
            config["responseSchema"] = to_gemini_schema(schema)


def thinking_from_effort(effort: Any, model: str) -> dict[str, Any]:
    """`thinkingConfig` for an OpenAI `reasoning_effort`: a level on Gemini 3, a budget on 2.5."""
    if not isinstance(effort, str):
        raise GatewayError(422, "reasoning_effort must be a string: none, minimal, low, medium or high.")
    flash = "flash" in model.lower()
    if effort in ("none", "minimal"):
        if gemini_version(model) >= (3, 0):
            return {"thinkingLevel": "MINIMAL" if flash else "LOW"}
        return {"thinkingBudget": 0 if flash else 128}
    budgets = {"low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
    if effort not in budgets:
        raise GatewayError(
            422, f"reasoning_effort {effort!r} is not one of none, minimal, low, medium, high."
        )
    if gemini_version(model) >= (3, 0):
        level = {"low": "LOW", "medium": "MEDIUM" if flash else "HIGH"}.get(effort, "HIGH")
        return {"thinkingLevel": level, "includeThoughts": True}
    return {"thinkingBudget": budgets[effort], "includeThoughts": True}


def thinking_from_anthropic(thinking: Any) -> dict[str, Any] | None:
    """`thinkingConfig` for an Anthropic-style `thinking` object (enabled, adaptive, disabled)."""
    if not isinstance(thinking, dict):
        return None
    kind = thinking.get("type")
    include = thinking.get("include_thoughts", thinking.get("display") != "omitted")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        config: dict[str, Any] = {"includeThoughts": bool(include)}
        if isinstance(budget, int):
            config["thinkingBudget"] = budget
        return config
    if kind == "adaptive":
        return {"thinkingBudget": -1, "includeThoughts": bool(include)}
    if kind == "disabled":
        return {"thinkingBudget": 0}
    raise GatewayError(422, f"thinking.type {kind!r} is not supported; use enabled, adaptive or disabled.")


def read_parts(parts: Any) -> tuple[str, str, list[tuple[str, Any, str | None]], str | None]:
    """(thought text, text, function calls (name, args, own signature), first non-call signature)."""
    thoughts: list[str] = []
    texts: list[str] = []
    calls: list[tuple[str, Any, str | None]] = []
    signature = None
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        sig = part.get("thoughtSignature")
        call = part.get("functionCall")
        if isinstance(call, dict):
            calls.append((call.get("name") or "", call.get("args") or {}, sig))
            continue
        if isinstance(text := part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(text)
        if sig and signature is None:
            signature = sig
    return "".join(thoughts), "".join(texts), calls, signature


def model_parts(items: list[tuple[str, Any]], signature: str | None) -> list[dict[str, Any]]:
    """Gemini parts of a model turn from ("thought"|"text"|"call", value) items, signature placed.

    A call value is (name, args, call signature or None). The first function call carries a thought
    signature (Gemini 3 rejects the turn otherwise): its own, the turn's, or Google's documented dummy;
    without calls the turn's signature goes on its last text part, else on its thought part.
    """
    parts: list[dict[str, Any]] = []
    first_call = last_text = thought = None
    for kind, value in items:
        if kind == "call":
            name, args, call_sig = value
            part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
            if first_call is None:
                first_call = part
                part["thoughtSignature"] = call_sig or signature or DUMMY_SIGNATURE
            parts.append(part)
        elif value:
            part = {"text": value, "thought": True} if kind == "thought" else {"text": value}
            if kind == "thought":
                thought = part
            else:
                last_text = part
            parts.append(part)
    if first_call is None and signature:
        target = last_text or thought
        if target is not None:
            target["thoughtSignature"] = signature
        else:
            parts.append({"text": "", "thoughtSignature": signature})
    return parts


def openai_logprobs(result: Any) -> dict[str, Any] | None:
    """OpenAI `logprobs` of a candidate's `logprobsResult`; None without one."""
    if not isinstance(result, dict) or not result.get("chosenCandidates"):
        return None
    top = result.get("topCandidates") or []
    content = []
    for i, chosen in enumerate(result["chosenCandidates"]):
        alternatives = top[i].get("candidates") or [] if i < len(top) and isinstance(top[i], dict) else []
        content.append(
            {
                "token": chosen.get("token", ""),
                "logprob": chosen.get("logProbability", 0.0),
                "bytes": None,
                "top_logprobs": [
                    {"token": a.get("token", ""), "logprob": a.get("logProbability", 0.0), "bytes": None}
                    for a in alternatives
                ],
            }
        )
    return {"content": content}


def usage_of(meta: Any) -> Usage:
    """Usage from `usageMetadata`; output counts thoughts, as OpenAI counts reasoning tokens."""
    if not isinstance(meta, dict):
        return Usage()
    prompt = meta.get("promptTokenCount") or 0
    thoughts = meta.get("thoughtsTokenCount") or 0
    output = (meta.get("candidatesTokenCount") or 0) + thoughts
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=meta.get("totalTokenCount") or prompt + output,
        cached_input_tokens=meta.get("cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    """The OpenAI `usage` object of a Usage."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def created_at(create_time: Any) -> int:
    """Unix seconds of Gemini's RFC 3339 `createTime` (UTC, `Z`); now when missing or malformed."""
    if isinstance(create_time, str) and len(create_time) >= 19:
        t = create_time
        try:
            date = (int(t[0:4]), int(t[5:7]), int(t[8:10]), int(t[11:13]), int(t[14:16]), int(t[17:19]))
        except ValueError:
            return int(time.time())
        return timegm(date)
    return int(time.time())


def google_error(body: bytes) -> tuple[str, str | None]:
    """(message, Google status such as INVALID_ARGUMENT) of a Google error body; raw text otherwise."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]  # streamGenerateContent without alt=sse answers errors in a JSON array
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        status = error.get("status")
        return error["message"], status if isinstance(status, str) else None
    return body.decode("utf-8", "replace").strip()[:1000], None


def gemini_error(status: int, body: bytes, api: str) -> bytes:
    """A Gemini/Vertex error in the client API's envelope, with Google's message and status name."""
    message, google_status = google_error(body)
    message = message or f"the Vertex AI backend returned status {status}"
    return GatewayError(status, message, code=google_status).body(api)


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """One response header's value."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def with_content_type(headers: list[tuple[bytes, bytes]], content_type: bytes) -> list[tuple[bytes, bytes]]:
    """Headers with the content type replaced."""
    return [(n, v) for n, v in headers if n.lower() != b"content-type"] + [(b"content-type", content_type)]
