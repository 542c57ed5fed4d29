"""Vertex AI for the fake provider: Gemini (JSON and SSE), embeddings, Claude via rawPredict, OAuth tokens.

Paths: POST `.../publishers/google/models/{m}:generateContent | :streamGenerateContent[?alt=sse] |
:predict | :countTokens`, POST `.../publishers/anthropic/models/{m}:rawPredict | :streamRawPredict`, and
POST `/token`, which answers google-auth's jwt-bearer grant with `ya29.fake-N` tokens. Every Vertex path
wants a Bearer token issued here, or found in a registry appended to `state(provider).trusted` (such as
fake_identity's Google STS and impersonation tokens); 401 in Google's error shape otherwise. Scenarios
come from the `x-fake-scenario` header: text, tool, parallel-tools, thinking, cached, error; thought
signatures the fake hands out must come back intact (and, for gemini-3 models, on the first function
call of a turn).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import time
from collections.abc import Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from sluicegate.testing import fake_anthropic as claude
from sluicegate.testing import openai_format as fmt
from sluicegate.testing.dialects import Dialect
from sluicegate.testing.knobs import Knobs

if TYPE_CHECKING:
    from sluicegate.testing.fake_provider import FakeProvider

THINKING_TEXT = claude.THINKING_TEXT
DUMMY_SIGNATURE = base64.b64encode(b"skip_thought_signature_validator").decode()
CACHED_TOKENS = 128  # the cached scenario's default cachedContentTokenCount
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_REQUEST_FIELDS = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings"}
    | {"cachedContent", "labels", "model"}
)
_CONFIG_FIELDS = frozenset(
    {"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "seed"}
    | {"presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema"}
    | {"responseLogprobs", "logprobs", "thinkingConfig", "mediaResolution", "responseModalities"}
    | {"speechConfig", "audioTimestamp", "routingConfig", "imageConfig", "enableAffectiveDialog"}
)
_THINKING_FIELDS = frozenset({"thinkingBudget", "includeThoughts", "thinkingLevel"})
_PART_FIELDS = frozenset(
    {"text", "thought", "thoughtSignature", "inlineData", "fileData", "functionCall", "functionResponse"}
    | {"executableCode", "codeExecutionResult", "videoMetadata", "mediaResolution"}
)
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_JSON = "application/json"


@dataclass
class VertexState:
    """What the fake Vertex remembers: tokens and thought signatures it issued."""

    token_lifetime: int = 3600  # expires_in of the tokens /token hands out
    tokens: set[str] = field(default_factory=set)
    trusted: list[Container[str]] = field(default_factory=list)  # other issuers' live token collections
    signatures: set[bytes] = field(default_factory=set)  # decoded: proto JSON takes either base64 alphabet
    token_requests: int = 0
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))


class BadRequest(Exception):
    """A request Vertex would answer with a 400 INVALID_ARGUMENT."""


def state(provider: FakeProvider) -> VertexState:
    """The Vertex state of a fake provider (made on first use)."""
    found = getattr(provider, "vertex_state", None)
    if found is None:
        found = provider.vertex_state = VertexState()  # type: ignore[attr-defined]
    return found


def error_body(status: int, message: str) -> bytes:
    """Google's error envelope."""
    name = _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    return orjson.dumps({"error": {"code": status, "message": message, "status": name}})


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(status, message), content_type=_JSON)


def status_error(knobs: Knobs) -> web.Response:
    """The answer to x-fake-status: Google's envelope, or x-fake-error-body as it is."""
    status = knobs.status or 500
    if knobs.error_body is not None:
        return web.Response(status=status, body=knobs.error_body.encode(), content_type=_JSON)
    return _error(status, f"fake error: status {status}")


def _signature(provider: FakeProvider, seed: str) -> str:
    raw = hashlib.sha256(b"fake-gemini:" + seed.encode()).digest()
    state(provider).signatures.add(raw)
    return base64.b64encode(raw).decode()


def _signature_bytes(sig: str) -> bytes | None:
    try:
        return base64.b64decode(sig.replace("-", "+").replace("_", "/"), validate=True)
    except ValueError:
        return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _check_fields(obj: Any, allowed: frozenset[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise BadRequest(f"Invalid value at '{where}': expected an object")
    for name in obj:
        if _camel(name) not in allowed:
            raise BadRequest(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}'")


def check_request(provider: FakeProvider, data: dict[str, Any], model: str) -> None:
    """Reject what Vertex rejects: unknown fields, bad roles, orphan function responses, bad signatures."""
    _check_fields(data, _REQUEST_FIELDS, "request")
    config = data.get("generationConfig", data.get("generation_config")) or {}
    _check_fields(config, _CONFIG_FIELDS, "generation_config")
    _check_fields(config.get("thinkingConfig") or {}, _THINKING_FIELDS, "generation_config.thinking_config")
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("contents is not specified")
    issued = state(provider).signatures
    calls: list[str] = []
    for i, content in enumerate(contents):
        role = content.get("role") if isinstance(content, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        if role not in ("user", "model"):
            raise BadRequest(f"Please use a valid role: user, model. (contents[{i}])")
        if not isinstance(parts, list) or not parts:
            raise BadRequest(f"contents[{i}].parts must not be empty")
        for part in parts:
            _check_fields(part, _PART_FIELDS, f"contents[{i}].parts")
            sig = part.get("thoughtSignature")
            if sig and sig != DUMMY_SIGNATURE and _signature_bytes(sig) not in issued:
                raise BadRequest(f"Corrupted thought signature in contents[{i}]")
        turn_calls = [p["functionCall"].get("name") for p in parts if "functionCall" in p]
        answers = [p["functionResponse"].get("name") for p in parts if "functionResponse" in p]
        if answers and sorted(answers) != sorted(calls):
            raise BadRequest(
                "Please ensure that the number of function response parts is equal to the number of "
                f"function call parts of the function call turn (contents[{i}])."
            )
        if turn_calls and model.startswith("gemini-3"):
            first = next(p for p in parts if "functionCall" in p)
            if not first.get("thoughtSignature"):
                raise BadRequest(f"Function call is missing a thought_signature in contents[{i}].parts")
        calls = turn_calls if role == "model" else []


def _texts(content: Any) -> list[str]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p["text"] for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _prompt_tokens(data: dict[str, Any]) -> int:
    words = sum(len(t.split()) for c in data.get("contents") or () for t in _texts(c))
    words += sum(len(t.split()) for t in _texts(data.get("systemInstruction")))
    return max(words, 1)


def _answers(data: dict[str, Any]) -> list[Any] | None:
    """The function responses of the last user turn, or None."""
    contents = data.get("contents") or []
    last = contents[-1] if contents else {}
    found = [p["functionResponse"] for p in last.get("parts") or () if "functionResponse" in p]
    return found or None


def reply_text(data: dict[str, Any]) -> str:
    """ "Echo: " + the last user text, or "Tool said: " + what the functions answered."""
    answers = _answers(data)
    if answers is not None:
        said = [str((a.get("response") or {}).get("output", a.get("response"))) for a in answers]
        return "Tool said: " + "; ".join(said)
    for content in reversed(data.get("contents") or []):
        if content.get("role") == "user" and (texts := _texts(content)):
            return "Echo: " + " ".join(texts)
    return fmt.DEFAULT_REPLY


def _declarations(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for tool in data.get("tools") or () for d in tool.get("functionDeclarations") or ()]


def _lower_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v))
            for k, v in schema.items()
        }
    return schema


def _call(decl: dict[str, Any] | None, n: int, knobs_args: Any) -> dict[str, Any]:
    if decl is None:
        name, args = claude.DEFAULT_TOOL["name"], dict(claude.DEFAULT_TOOL["input"])
    else:
        schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {}
        name, args = decl.get("name") or "tool", claude.tool_input({"input_schema": _lower_types(schema)})
    if isinstance(knobs_args, dict):
        args = knobs_args
    if n:
        args = {k: (f"{v} {n + 1}" if isinstance(v, str) else v) for k, v in args.items()}
    return {"functionCall": {"name": name, "args": args}}


def build_parts(
    provider: FakeProvider, data: dict[str, Any], knobs: Knobs, scenario: str, tool_args: Any
) -> tuple[list[dict[str, Any]], str]:
    """The model parts the fake answers with in a scenario, and the reply text they carry."""
    text = knobs.reply if knobs.reply is not None else reply_text(data)
    decls = _declarations(data)
    if scenario in ("tool", "parallel-tools") and _answers(data) is None:
        first = _call(decls[0] if decls else None, 0, tool_args)
        first["thoughtSignature"] = _signature(provider, f"call:{next(state(provider).ids)}")
        if scenario == "tool":
            return [first], ""
        other = decls[1] if len(decls) > 1 else (decls[0] if decls else None)
        second = _call(other, 0 if len(decls) > 1 else 1, tool_args)
        return [first, second], ""
    if scenario == "thinking":
        thought = {"text": THINKING_TEXT, "thought": True}
        return [thought, {"text": text, "thoughtSignature": _signature(provider, text)}], text
    return [{"text": text}], text


def usage_metadata(
    data: dict[str, Any], knobs: Knobs, scenario: str, parts: list[dict[str, Any]], pieces: int
) -> dict[str, Any]:
    """usageMetadata: words as tokens unless the knobs say otherwise; cached tokens count in the prompt."""
    cached = (
        knobs.cached_tokens
        if knobs.cached_tokens is not None
        else (CACHED_TOKENS if scenario == "cached" else 0)
    )
    prompt = knobs.prompt_tokens if knobs.prompt_tokens is not None else _prompt_tokens(data) + cached
    output = knobs.completion_tokens if knobs.completion_tokens is not None else max(pieces, 1)
    thinking = sum(len(p["text"].split()) for p in parts if p.get("thought"))
    thoughts = knobs.reasoning_tokens if knobs.reasoning_tokens is not None else thinking
    meta: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output + thoughts,
        "trafficType": "ON_DEMAND",
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    if cached:
        meta["cachedContentTokenCount"] = cached
    return meta


def _envelope(candidates: list[dict[str, Any]], model: str, response_id: str, created: str) -> dict[str, Any]:
    return {"candidates": candidates, "modelVersion": model, "createTime": created, "responseId": response_id}


def _frame(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\r\n\r\n"  # Vertex frames its SSE with CRLF


def _stream_frames(
    parts: list[dict[str, Any]],
    text: str,
    knobs: Knobs,
    meta: dict[str, Any],
    head: tuple[str, str, str],
    error: bool,
) -> list[bytes]:
    model, response_id, created = head
    chunks: list[list[dict[str, Any]]] = [[p] for p in parts if p.get("thought")]
    calls = [p for p in parts if "functionCall" in p]
    if calls:
        chunks.append(calls)
    else:
        last = next((p for p in parts if not p.get("thought")), {"text": ""})
        pieces = fmt.split_reply(text, knobs.chunks) or [""]
        chunks += [[{"text": piece}] for piece in pieces]
        if last.get("thoughtSignature"):
            chunks[-1][0]["thoughtSignature"] = last["thoughtSignature"]
    frames = []
    for i, chunk_parts in enumerate(chunks):
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": chunk_parts}}
        event = _envelope([candidate], model, response_id, created)
        if i == len(chunks) - 1:
            candidate["finishReason"] = "STOP"
            event["usageMetadata"] = meta
        frames.append(_frame(event))
        if error:
            frames.append(
                _frame(orjson.loads(error_body(503, "The model is overloaded. Please try again later.")))
            )
            break
    return frames


def _model_and_method(path: str) -> tuple[str, str]:
    tail = path.rsplit("/models/", 1)[-1]
    model, _, method = tail.partition(":")
    return model, method


async def _token(provider: FakeProvider, body: bytes) -> web.Response:
    form = parse_qs(body.decode("ascii", "replace"))
    vertex = state(provider)
    vertex.token_requests += 1
    if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"] or not form.get("assertion"):
        return web.json_response({"error": "unsupported_grant_type"}, status=400)
    try:
        payload = form["assertion"][0].split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return web.json_response({"error": "invalid_grant", "error_description": "bad assertion"}, status=400)
    if "cloud-platform" not in str(claims.get("scope")) or not claims.get("iss"):
        return web.json_response({"error": "invalid_scope"}, status=400)
    token = f"ya29.fake-{next(vertex.ids)}"
    vertex.tokens.add(token)
    return web.json_response(
        {"access_token": token, "expires_in": vertex.token_lifetime, "token_type": "Bearer"}
    )


def _authorized(provider: FakeProvider, request: web.BaseRequest) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    vertex, token = state(provider), header[7:]
    return token in vertex.tokens or any(token in tokens for tokens in vertex.trusted)


async def handle(
    provider: FakeProvider, request: web.BaseRequest, body: bytes, knobs: Knobs
) -> web.StreamResponse:
    """POST /token and the Gemini methods of publishers/google/models."""
    if request.path == "/token":
        return await _token(provider, body)
    if not _authorized(provider, request):
        return _error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "Invalid JSON payload received.")
    if not isinstance(data, dict):
        return _error(400, "Invalid JSON payload received: expected an object.")
    model, method = _model_and_method(request.path)
    try:
        if method == "predict":
            return _predict(data)
        if method == "countTokens":
            tokens = _prompt_tokens(data)
            return web.json_response({"totalTokens": tokens, "totalBillableCharacters": tokens * 5})
        if method not in ("generateContent", "streamGenerateContent"):
            return _error(404, f"Method {method} not found.")
        check_request(provider, data, model)
        scenario = claude.scenario_of({k.lower(): v for k, v in request.headers.items()})
        tool_args = (
            orjson.loads(request.headers["x-fake-tool-args"])
            if "x-fake-tool-args" in request.headers
            else None
        )
    except (BadRequest, claude.BadRequest, orjson.JSONDecodeError) as exc:
        return _error(400, str(exc))
    parts, text = build_parts(provider, data, knobs, scenario, tool_args)
    pieces = len(fmt.split_reply(text, knobs.chunks)) if text else 5
    meta = usage_metadata(data, knobs, scenario, parts, pieces)
    response_id = f"fake-{next(state(provider).ids)}"
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    if method == "streamGenerateContent":
        frames = _stream_frames(parts, text, knobs, meta, (model, response_id, created), scenario == "error")
        if request.query.get("alt") != "sse":  # without alt=sse Vertex streams one JSON array
            events = [orjson.loads(f[6:]) for f in frames]
            return await claude.unary_response(provider, request, orjson.dumps(events), knobs)
        return await claude.stream_response(provider, request, frames, knobs, _SSE_HEADERS["Content-Type"])
    if scenario == "error":
        return _error(503, "The model is overloaded. Please try again later.")
    count = (data.get("generationConfig") or {}).get("candidateCount") or 1
    candidates = [
        {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": i}
        for i in range(count)
    ]
    response = {**_envelope(candidates, model, response_id, created), "usageMetadata": meta}
    return await claude.unary_response(provider, request, orjson.dumps(response), knobs)


def _predict(data: dict[str, Any]) -> web.Response:
    instances = data.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest("instances must be a non-empty list")
    dimensions = (data.get("parameters") or {}).get("outputDimensionality") or fmt.EMBEDDING_DIMENSIONS
    predictions = []
    for instance in instances:
        content = instance.get("content") if isinstance(instance, dict) else None
        if not isinstance(content, str):
            raise BadRequest("instances[].content must be a string")
        stats = {"token_count": max(len(content.split()), 1), "truncated": False}
        values = fmt.embedding_vector(content, dimensions)
        predictions.append({"embeddings": {"values": values, "statistics": stats}})
    chars = sum(len(i["content"]) for i in instances)
    return web.json_response({"predictions": predictions, "metadata": {"billableCharacterCount": chars}})


async def handle_claude(
    provider: FakeProvider, request: web.BaseRequest, body: bytes, knobs: Knobs
) -> web.StreamResponse:
    """POST publishers/anthropic/models/{m}:rawPredict | :streamRawPredict (count-tokens included)."""
    if not _authorized(provider, request):
        return _error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "Invalid JSON payload received.")
    model, method = _model_and_method(request.path)
    bad = web.Response  # Claude's own checks answer in Anthropic's envelope
    if not isinstance(data, dict) or not isinstance(data.get("anthropic_version"), str):
        body = claude.error_body(400, "anthropic_version: Field required")
        return bad(status=400, body=body, content_type=_JSON)
    if model == "count-tokens":
        return web.json_response({"input_tokens": claude.count_tokens(data)})
    try:
        if "model" in data:
            raise claude.BadRequest("model: Extra inputs are not permitted")
        scenario = claude.scenario_of({k.lower(): v for k, v in request.headers.items()})
        claude.check_request(data, ("anthropic_version",), require_model=False)
    except claude.BadRequest as exc:
        return bad(status=400, body=claude.error_body(400, str(exc)), content_type=_JSON)
    message = claude.reply_message(data, knobs, scenario, model=model)
    if method == "streamRawPredict":
        events = claude.stream_events(message, knobs, error=scenario == "error")
        return await claude.stream_response(provider, request, [claude.sse(e) for e in events], knobs)
    if scenario == "error":
        return bad(status=529, body=claude.error_body(529, "Overloaded"), content_type=_JSON)
    return await claude.unary_response(provider, request, orjson.dumps(message), knobs)


def _matches_gemini(method: str, path: str) -> bool:
    return method == "POST" and (path == "/token" or "/publishers/google/models/" in path)


def _matches_claude(method: str, path: str) -> bool:
    return method == "POST" and "/publishers/anthropic/models/" in path


DIALECT = Dialect(name="vertex-gemini", matches=_matches_gemini, handle=handle, error=status_error)
CLAUDE_DIALECT = Dialect(
    name="vertex-anthropic", matches=_matches_claude, handle=handle_claude, error=claude.status_error
)


@functools.cache
def _private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


def service_account_info(token_uri: str, project: str = "fake-project") -> dict[str, Any]:
    """A service-account JSON (fresh RSA key, made once per process) whose token_uri is the fake's /token."""
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "fake-key-1",
        "private_key": _private_key_pem(),
        "client_email": f"gateway@{project}.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    }
