"""AWS Bedrock runtime for the fake provider: Converse, ConverseStream, InvokeModel (Claude, Titan embed).

POST /model/{id}/converse, /converse-stream, /invoke, /invoke-with-response-stream and /count-tokens,
as boto3's `bedrock-runtime` client speaks them: JSON, the binary event stream, Bedrock's error shape
(`{"message"}` + `x-amzn-errortype`). A request that carries a SigV4 signature is verified against the
test credentials (AKIDFAKE / FAKE_SECRET_KEY), or any key registered with `trusted_keys` (e.g. the
temporary keys fake_identity's STS issues, whose session token must come in `x-amz-security-token`), with
botocore; a mismatch is a 403, and every answer says `x-fake-sigv4: valid | absent`. Scenarios
(`x-fake-scenario`) and answers are fake_anthropic's, so every Claude-family dialect of the fake
behaves alike.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sluicegate.testing import fake_anthropic as claude
from sluicegate.testing import openai_format as fmt
from sluicegate.testing.dialects import Dialect
from sluicegate.testing.eventstream_encoder import CONTENT_TYPE as EVENT_STREAM
from sluicegate.testing.eventstream_encoder import event as encode_event
from sluicegate.testing.eventstream_encoder import exception as encode_exception
from sluicegate.testing.knobs import Knobs

if TYPE_CHECKING:
    from sluicegate.testing.fake_provider import FakeProvider

FAKE_ACCESS_KEY = "AKIDFAKE"
FAKE_SECRET_KEY = "fake/Secret+Key0123456789abcdefghijklmnop"
OPERATIONS = ("converse", "converse-stream", "invoke", "invoke-with-response-stream", "count-tokens")
COUNT_CONVERSE_FIELDS = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})
TITAN_DIMENSIONS = {"amazon.titan-embed-text-v1": 1536}
TITAN_DEFAULT_DIMENSIONS = 1024
CONVERSE_FIELDS = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
    }
)
INFERENCE_FIELDS = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_CORAL = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"


class ValidationError(Exception):
    """A request Bedrock rejects with a 400 ValidationException."""


def error_response(status: int, message: str, error_type: str | None = None) -> web.Response:
    """Bedrock's error shape: `{"message"}` with the exception name in x-amzn-errortype."""
    name = (
        error_type
        or _ERROR_TYPES.get(status)
        or ("InternalServerException" if status >= 500 else "ValidationException")
    )
    headers = {"x-amzn-errortype": name + _CORAL, "x-amzn-requestid": str(uuid.uuid4())}
    return web.Response(
        status=status,
        body=orjson.dumps({"message": message}),
        content_type="application/json",
        headers=headers,
    )


def status_error(knobs: Knobs) -> web.Response:
    """The answer to x-fake-status: Bedrock's error shape, or x-fake-error-body as it is."""
    status = knobs.status or 500
    if knobs.error_body is None:
        return error_response(status, f"fake error: status {status}")
    response = error_response(status, "")
    response.body = knobs.error_body.encode()
    try:
        orjson.loads(knobs.error_body)
    except orjson.JSONDecodeError:
        response.content_type = "text/plain"
    return response


KeyRegistry = Mapping[str, tuple[str, str | None]]  # access key id -> (secret key, session token)


def trusted_keys(provider: FakeProvider) -> list[KeyRegistry]:
    """The key registries this provider accepts; starts with AKIDFAKE. Append a live mapping (such as
    `FakeIdentity.state.aws_credentials`, filled by its STS) to accept keys issued later."""
    found = getattr(provider, "aws_keys", None)
    if found is None:
        found = provider.aws_keys = [{FAKE_ACCESS_KEY: (FAKE_SECRET_KEY, None)}]  # type: ignore[attr-defined]
    return found


def _lookup(access_key: str, registries: Iterable[KeyRegistry]) -> tuple[str, str | None] | None:
    for registry in registries:
        if access_key in registry:
            return registry[access_key]
    return None


def signature_check(
    method: str,
    raw_path: str,
    headers: dict[str, str],
    body: bytes,
    registries: Iterable[KeyRegistry] = ({FAKE_ACCESS_KEY: (FAKE_SECRET_KEY, None)},),
) -> str | None:
    """None when the SigV4 signature is right (or absent), else what is wrong with it."""
    authorization = headers.get("authorization")
    if authorization is None:
        return None
    try:
        algorithm, _, rest = authorization.partition(" ")
        fields = dict(part.strip().split("=", 1) for part in rest.split(","))
        access_key, day, region, service, _ = fields["Credential"].split("/")
        signed, given = fields["SignedHeaders"].split(";"), fields["Signature"]
    except (KeyError, ValueError):
        return "The Authorization header is malformed."
    known = _lookup(access_key, registries)
    if algorithm != "AWS4-HMAC-SHA256" or known is None:
        return "The security token included in the request is invalid."
    secret_key, session_token = known
    if session_token is not None and (
        headers.get("x-amz-security-token") != session_token or "x-amz-security-token" not in signed
    ):
        return "The security token included in the request is invalid."
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(day) or "host" not in signed:
        return "The Authorization header is malformed."
    request = AWSRequest(
        method,
        f"http://{headers.get('host', '')}{raw_path}",
        data=body,
        headers={h: headers.get(h, "") for h in signed},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret_key, session_token), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if expected != given:
        return (
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return None


def _operation(path: str) -> tuple[str, str]:
    """(model id, operation) of a raw `/model/{id}/{operation}` path."""
    head, _, operation = path.rpartition("/")
    return unquote(head[len("/model/") :]), operation


def _claude_blocks(blocks: list[Any], previous_tools: set[str]) -> list[dict[str, Any]]:
    """Converse blocks in Anthropic's shape, for the shared reply rules; checks what Bedrock checks."""
    out = []
    for block in blocks:
        if not isinstance(block, dict) or len([k for k in block if k != "cachePoint"]) > 1:
            raise ValidationError("ContentBlock is a union: set exactly one member")
        if "text" in block:
            out.append({"type": "text", "text": block["text"]})
        elif "toolResult" in block:
            result = block["toolResult"]
            if result.get("toolUseId") not in previous_tools:
                raise ValidationError(
                    "The toolResult blocks must match the toolUse blocks of the previous turn."
                )
            texts = [{"type": "text", "text": c["text"]} for c in result.get("content") or () if "text" in c]
            out.append({"type": "tool_result", "tool_use_id": result["toolUseId"], "content": texts})
        elif "toolUse" in block:
            use = block["toolUse"]
            out.append(
                {
                    "type": "tool_use",
                    "id": use.get("toolUseId"),
                    "name": use.get("name"),
                    "input": use.get("input"),
                }
            )
        elif "reasoningContent" in block:
            text = block["reasoningContent"].get("reasoningText") or {}
            if "text" in text and text.get("signature") != claude.signature(text["text"]):
                raise ValidationError("The reasoning signature is invalid for the reasoning text.")
        elif "image" in block or "document" in block:
            media = block.get("image") or block.get("document")
            try:
                base64.b64decode((media.get("source") or {}).get("bytes") or "", validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError("The image or document bytes are not valid base64.") from None
    return out


def converse_view(data: dict[str, Any]) -> dict[str, Any]:
    """A Converse request validated, and seen as an Anthropic request by the shared reply rules."""
    unknown = set(data) - CONVERSE_FIELDS
    if unknown:
        raise ValidationError(
            f"Malformed input request: extraneous key [{sorted(unknown)[0]}] is not permitted"
        )
    if set(data.get("inferenceConfig") or {}) - INFERENCE_FIELDS:
        raise ValidationError("Malformed input request: unknown inferenceConfig field")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationError("A conversation must start with a user message.")
    view, previous_tools, has_tools = [], set(), False
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise ValidationError("A conversation must alternate between user and assistant roles.")
        blocks = message.get("content")
        if not isinstance(blocks, list) or not blocks:
            raise ValidationError(f"The content field in the Message object at messages.{i} is empty.")
        view.append({"role": role, "content": _claude_blocks(blocks, previous_tools)})
        previous_tools = {b["toolUse"].get("toolUseId") for b in blocks if "toolUse" in b}
        has_tools = has_tools or any("toolUse" in b or "toolResult" in b for b in blocks)
    tool_config = data.get("toolConfig") or {}
    if has_tools and not tool_config.get("tools"):
        raise ValidationError(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    tools = [
        {
            "name": t["toolSpec"].get("name"),
            "description": t["toolSpec"].get("description"),
            "input_schema": (t["toolSpec"].get("inputSchema") or {}).get("json"),
        }
        for t in tool_config.get("tools") or ()
        if isinstance(t, dict) and "toolSpec" in t
    ]
    system = [{"type": "text", "text": b["text"]} for b in data.get("system") or () if "text" in b]
    return {"messages": view, "tools": tools, "system": system}


def _usage(message: dict[str, Any]) -> dict[str, Any]:
    usage = message["usage"]
    read, write = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
    total = usage["input_tokens"] + usage["output_tokens"] + read + write
    out = {"inputTokens": usage["input_tokens"], "outputTokens": usage["output_tokens"], "totalTokens": total}
    if read or write:
        out["cacheReadInputTokens"], out["cacheWriteInputTokens"] = read, write
    return out


def _converse_block(block: dict[str, Any]) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        return {"text": block["text"]}
    if kind == "tool_use":
        return {
            "toolUse": {"toolUseId": _tool_id(block["id"]), "name": block["name"], "input": block["input"]}
        }
    return {
        "reasoningContent": {"reasoningText": {"text": block["thinking"], "signature": block["signature"]}}
    }


def _tool_id(anthropic_id: str) -> str:
    return anthropic_id.replace("toolu_", "tooluse_")


def converse_response(message: dict[str, Any]) -> dict[str, Any]:
    """The Converse answer for an Anthropic message of the shared reply rules."""
    return {
        "output": {
            "message": {"role": "assistant", "content": [_converse_block(b) for b in message["content"]]}
        },
        "stopReason": message["stop_reason"],
        "usage": _usage(message),
        "metrics": {"latencyMs": 42},
    }


def _frame(event_type: str, payload: dict[str, Any]) -> bytes:
    payload["p"] = _PADDING[: 1 + len(event_type)]  # Bedrock pads events to hide their size
    return encode_event(event_type, orjson.dumps(payload))


def converse_stream_frames(message: dict[str, Any], knobs: Knobs, error: bool = False) -> list[bytes]:
    """The ConverseStream frames that build `message`; with `error`, an exception after the first delta."""
    frames = [_frame("messageStart", {"role": "assistant"})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            deltas = [{"text": piece} for piece in fmt.split_reply(block["text"], knobs.chunks)]
        elif kind == "tool_use":
            start = {"toolUse": {"toolUseId": _tool_id(block["id"]), "name": block["name"]}}
            frames.append(_frame("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            text = orjson.dumps(block["input"]).decode()
            size = max(len(text) // 3, 1)
            deltas = [{"toolUse": {"input": text[i : i + size]}} for i in range(0, len(text), size)]
        else:
            deltas = [{"reasoningContent": {"text": piece}} for piece in fmt.split_reply(block["thinking"])]
            deltas.append({"reasoningContent": {"signature": block["signature"]}})
        for delta in deltas:
            frames.append(_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
            if error:
                body = orjson.dumps({"message": "The model stream failed (fake modelStreamErrorException)."})
                return [*frames, encode_exception("modelStreamErrorException", body)]
        frames.append(_frame("contentBlockStop", {"contentBlockIndex": index}))
    frames.append(_frame("messageStop", {"stopReason": message["stop_reason"]}))
    frames.append(_frame("metadata", {"usage": _usage(message), "metrics": {"latencyMs": 42}}))
    return frames


def invoke_stream_frames(message: dict[str, Any], knobs: Knobs, error: bool = False) -> list[bytes]:
    """InvokeModelWithResponseStream frames: each Anthropic event base64-wrapped in a `chunk` event."""
    frames = []
    for event in claude.stream_events(message, knobs, error=error):
        if event["type"] == "ping":
            continue
        if event["type"] == "message_stop":
            usage = message["usage"]
            event["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": usage["input_tokens"],
                "outputTokenCount": usage["output_tokens"],
                "invocationLatency": 42,
                "firstByteLatency": 7,
            }
        payload = {"bytes": base64.b64encode(orjson.dumps(event)).decode()}
        frames.append(_frame("chunk", payload))
    return frames


def titan_embedding(model: str, data: dict[str, Any], knobs: Knobs) -> dict[str, Any]:
    """Titan's `{"embedding", "inputTextTokenCount"}` for `{"inputText", "dimensions"?}`."""
    text = data.get("inputText")
    if not isinstance(text, str) or set(data) - {"inputText", "dimensions", "normalize", "embeddingTypes"}:
        raise ValidationError("Malformed input request: expected inputText (and optionally dimensions)")
    dimensions = data.get("dimensions", TITAN_DIMENSIONS.get(model, TITAN_DEFAULT_DIMENSIONS))
    if dimensions not in (256, 512, 1024, 1536):
        raise ValidationError("Malformed input request: dimensions must be 256, 512 or 1024")
    tokens = knobs.prompt_tokens if knobs.prompt_tokens is not None else fmt.word_tokens([text])
    return {"embedding": fmt.embedding_vector(text, dimensions), "inputTextTokenCount": tokens}


def count_tokens(model: str, data: dict[str, Any]) -> int:
    """CountTokens: `{"input": {"converse": {...}}}` or `{"input": {"invokeModel": {"body": b64}}}`."""
    counted = data.get("input")
    if set(data) - {"input"} or not isinstance(counted, dict) or len(counted) != 1:
        raise ValidationError("Malformed input request: input must hold exactly one of converse, invokeModel")
    if isinstance(counted.get("converse"), dict):
        converse = counted["converse"]
        extra = set(converse) - COUNT_CONVERSE_FIELDS
        if extra:
            key = sorted(extra)[0]
            raise ValidationError(f"Malformed input request: extraneous key [{key}] is not permitted")
        return claude.count_tokens(converse_view(converse))
    invoke = counted.get("invokeModel")
    if not isinstance(invoke, dict) or not isinstance(invoke.get("body"), str):
        raise ValidationError("Malformed input request: input must hold exactly one of converse, invokeModel")
    if not _is_claude(model):
        raise ValidationError("The provided model identifier is invalid.")
    try:
        body = orjson.loads(base64.b64decode(invoke["body"], validate=True))
    except (binascii.Error, ValueError):
        raise ValidationError("Malformed input request: invokeModel.body is not base64 JSON") from None
    if not isinstance(body, dict) or not str(body.get("anthropic_version", "")).startswith("bedrock-"):
        raise ValidationError("Malformed input request: anthropic_version is required (bedrock-2023-05-31)")
    claude.check_request(body, ("anthropic_version", "anthropic_beta"), require_model=False)
    return claude.count_tokens(body)


def _is_claude(model: str) -> bool:
    return "anthropic" in model or "claude" in model


async def _stream(
    provider: FakeProvider,
    request: web.BaseRequest,
    frames: list[bytes],
    knobs: Knobs,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Write frames one by one (chunked), honouring x-fake-chunk-delay-ms and x-fake-drop-after."""
    resp = web.StreamResponse(headers={"Content-Type": EVENT_STREAM, **headers})
    delay = (knobs.chunk_delay_ms or 0) / 1000
    try:
        await resp.prepare(request)
        for i, frame in enumerate(frames):
            if i == knobs.drop_after:
                if request.transport is not None:
                    request.transport.close()
                provider.streams_dropped += 1
                return resp
            if delay and i:
                await asyncio.sleep(delay)
            await resp.write(frame)
        await resp.write_eof()
    except ConnectionError:
        provider.streams_aborted += 1
        return resp
    provider.streams_completed += 1
    return resp


async def handle(
    provider: FakeProvider, request: web.BaseRequest, body: bytes, knobs: Knobs
) -> web.StreamResponse:
    """One Bedrock runtime call."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    raw_path = request.raw_path
    problem = signature_check(request.method, raw_path, headers, body, trusted_keys(provider))
    if problem is not None:
        error_type = "UnrecognizedClientException" if "token" in problem else "InvalidSignatureException"
        return error_response(403, problem, error_type)
    answer_headers = {
        "x-amzn-requestid": str(uuid.uuid4()),
        "x-fake-sigv4": "valid" if "authorization" in headers else "absent",
    }
    model, operation = _operation(raw_path.partition("?")[0])
    try:
        data = orjson.loads(body)
        if not isinstance(data, dict):
            raise ValidationError("Malformed input request: the body must be a JSON object")
        scenario = claude.scenario_of(headers)
    except (orjson.JSONDecodeError, claude.BadRequest) as exc:
        return error_response(400, f"Malformed input request: {exc}")
    except ValidationError as exc:
        return error_response(400, str(exc))
    try:
        if operation == "count-tokens":
            reply = orjson.dumps({"inputTokens": count_tokens(model, data)})
        elif operation in ("converse", "converse-stream"):
            if model.startswith("amazon.titan-embed"):
                raise ValidationError("This model doesn't support the Converse API.")
            view = converse_view(data)
            message = claude.reply_message(view, knobs, scenario, model)
            if operation == "converse-stream":
                frames = converse_stream_frames(message, knobs, error=scenario == "error")
                return await _stream(provider, request, frames, knobs, answer_headers)
            if scenario == "error":
                return error_response(429, "Too many requests, please wait before trying again.")
            reply = orjson.dumps(converse_response(message))
        elif model.startswith("amazon.titan-embed") and operation == "invoke":
            reply = orjson.dumps(titan_embedding(model, data, knobs))
        elif _is_claude(model):
            if not str(data.get("anthropic_version", "")).startswith("bedrock-"):
                raise ValidationError(
                    "Malformed input request: anthropic_version is required (bedrock-2023-05-31)"
                )
            if "model" in data or "stream" in data or "metadata" in data:
                key = next(k for k in ("model", "stream", "metadata") if k in data)
                raise ValidationError(f"Malformed input request: extraneous key [{key}] is not permitted")
            claude.check_request(data, ("anthropic_version", "anthropic_beta"), require_model=False)
            message = claude.reply_message(data, knobs, scenario, model)
            if operation == "invoke-with-response-stream":
                frames = invoke_stream_frames(message, knobs, error=scenario == "error")
                return await _stream(provider, request, frames, knobs, answer_headers)
            if scenario == "error":
                return error_response(429, "Too many requests, please wait before trying again.")
            reply = orjson.dumps(message)
        else:
            raise ValidationError("The provided model identifier is invalid.")
    except (ValidationError, claude.BadRequest) as exc:
        return error_response(400, str(exc))
    return (
        await claude.unary_response(provider, request, reply, knobs)
        if knobs.drop_after is not None
        else web.Response(body=reply, content_type="application/json", headers=answer_headers)
    )


def _matches(method: str, path: str) -> bool:
    return method == "POST" and path.startswith("/model/") and path.rpartition("/")[2] in OPERATIONS


DIALECT = Dialect(name="bedrock", matches=_matches, handle=handle, error=status_error)
