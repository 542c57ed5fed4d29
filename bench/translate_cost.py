"""CPU cost of translation, in process: what a translated AWS request costs next to a passthrough one.

    python bench/translate_cost.py [--iterations 20000] [--events 200000] [--baseline-us 41]

1. Unary: per request, the client body parsed, the translator built, the upstream request made (and for
   Bedrock SigV4-signed), the response headers and the whole response body translated. Passthrough
   (OpenAI -> OpenAI) against OpenAI -> Bedrock Converse and OpenAI -> Claude on InvokeModel; botocore's
   SigV4Auth alone for reference. The issue's target is on the whole request, so the difference is also
   added to the gateway's measured CPU per passthrough request (bench/run.py, scenario json:
   `cpu_us_per_req`, or --baseline-us) to give the projected ratio.
2. Streams: events per CPU second through ConverseStream -> OpenAI SSE (and the other stream pairs),
   fed as 16 KiB reads of the binary event stream.
3. One whole request of bench/run.py's `bedrock` scenario (its client body and its 52-frame
   ConverseStream answer from bench/fixtures.py): parse, translate, sign, decode and translate the stream,
   next to the OpenAI SSE passthrough of the `stream` scenario's 51 events.
Timings are process CPU time (time.process_time) over many iterations; read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import fixtures

from sluicegate.auth.aws_sigv4 import AWSSigV4Credential
from sluicegate.config.runtime import Backend, BackendRef, Credential, Endpoint, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.testing.eventstream_encoder import event as encode_event
from sluicegate.translate.anthropic_awsbedrock import AnthropicToAWSBedrock
from sluicegate.translate.openai_awsanthropic import OpenAIToAWSAnthropic
from sluicegate.translate.openai_awsbedrock import OpenAIToAWSBedrock
from sluicegate.translate.openai_openai import OpenAIToOpenAI

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
AUTHORITY = "bedrock-runtime.us-east-1.amazonaws.com"
CREDENTIALS = "[default]\naws_access_key_id = AKIDBENCH\naws_secret_access_key = bench/secret+key\n"
ENDPOINTS = (Endpoint("127.0.0.1", 1, False),)
CLIENT_BODY = orjson.dumps(
    {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "What is the capital of France? Explain in one sentence."},
        ],
        "max_tokens": 256,
        "temperature": 0.7,
    }
)
OPENAI_RESPONSE = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris is the capital of France."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38},
    }
)
CONVERSE_RESPONSE = orjson.dumps(
    {
        "output": {
            "message": {"role": "assistant", "content": [{"text": "Paris is the capital of France."}]}
        },
        "stopReason": "end_turn",
        "usage": {"inputTokens": 30, "outputTokens": 8, "totalTokens": 38},
        "metrics": {"latencyMs": 300},
    }
)
CLAUDE_RESPONSE = orjson.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-sonnet-20240620",
        "content": [{"type": "text", "text": "Paris is the capital of France."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 8},
    }
)
JSON_HEADERS = [(b"content-type", b"application/json"), (b"x-amzn-requestid", b"6f1c3f5e-bench")]
STREAM_HEADERS = [
    (b"content-type", b"application/vnd.amazon.eventstream"),
    (b"x-amzn-requestid", b"6f1c3f5e"),
]


def _ref(schema: str, version: str | None = None) -> BackendRef:
    return BackendRef(
        Backend("default/b", Schema(schema, version, "v1" if schema == "OpenAI" else None), ENDPOINTS)
    )


def _context(raw: bytes) -> RequestContext:
    ctx = RequestContext(Request("POST", "/v1/chat/completions", "", {}, raw, []), "chat")
    ctx.body = body = orjson.loads(raw)  # the gateway parses the client body once, whatever the backend
    ctx.model, ctx.stream = body["model"], body.get("stream") is True
    return ctx


def cpu_us(run: Callable[[], Any], iterations: int) -> float:
    """CPU µs per call (best of 3 runs)."""
    for _ in range(min(iterations // 10, 2000)):
        run()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(iterations):
            run()
        best = min(best, (time.process_time() - start) / iterations * 1e6)
    return best


def unary_scenarios() -> dict[str, Callable[[], Any]]:
    """name -> one whole request's translation work."""
    signer = AWSSigV4Credential(Credential("AWSCredentials", CREDENTIALS, "us-east-1"))
    openai_ref, bedrock_ref, claude_ref = _ref("OpenAI"), _ref("AWSBedrock"), _ref("AWSAnthropic")

    def passthrough() -> None:
        ctx = _context(CLIENT_BODY)
        translator = OpenAIToOpenAI(ctx, openai_ref)
        translator.request(ctx)
        translator.response_headers(200, JSON_HEADERS)
        translator.response_body(OPENAI_RESPONSE, True)

    def bedrock() -> None:
        ctx = _context(CLIENT_BODY)
        translator = OpenAIToAWSBedrock(ctx, bedrock_ref)
        upstream = translator.request(ctx)
        signer.signer.sign(upstream, AUTHORITY)
        translator.response_headers(200, JSON_HEADERS)
        translator.response_body(CONVERSE_RESPONSE, True)

    def invoke_claude() -> None:
        ctx = _context(CLIENT_BODY)
        translator = OpenAIToAWSAnthropic(ctx, claude_ref)
        upstream = translator.request(ctx)
        signer.signer.sign(upstream, AUTHORITY)
        translator.response_headers(200, JSON_HEADERS)
        translator.response_body(CLAUDE_RESPONSE, True)

    return {
        "passthrough (OpenAI -> OpenAI)": passthrough,
        "OpenAI -> Bedrock Converse, signed": bedrock,
        "OpenAI -> Claude on InvokeModel, signed": invoke_claude,
    }


def botocore_sign() -> Callable[[], Any]:
    """botocore's SigV4Auth over the same request, for reference."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    credentials = Credentials("AKIDBENCH", "bench/secret+key")
    url = f"https://{AUTHORITY}/model/{MODEL.replace(':', '%3A')}/converse"

    def sign() -> None:
        request = AWSRequest("POST", url, data=CLIENT_BODY, headers={"content-type": "application/json"})
        SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)

    return sign


def converse_stream(deltas: int) -> bytes:
    """A ConverseStream answer: messageStart, `deltas` text deltas, stop, metadata."""
    frames = [encode_event("messageStart", b'{"role":"assistant","p":"abcdef"}')]
    for i in range(deltas):
        payload = {"contentBlockIndex": 0, "delta": {"text": f"token{i} "}, "p": "abcdefghijkl"}
        frames.append(encode_event("contentBlockDelta", orjson.dumps(payload)))
    frames.append(encode_event("contentBlockStop", b'{"contentBlockIndex":0,"p":"ab"}'))
    frames.append(encode_event("messageStop", b'{"stopReason":"end_turn","p":"abc"}'))
    usage = {"usage": {"inputTokens": 30, "outputTokens": deltas, "totalTokens": 30 + deltas}, "metrics": {}}
    frames.append(encode_event("metadata", orjson.dumps(usage)))
    return b"".join(frames)


def invoke_stream(deltas: int) -> bytes:
    """An InvokeModelWithResponseStream answer: Anthropic events base64-wrapped in `chunk` frames."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "c",
            "content": [],
            "usage": {"input_tokens": 30, "output_tokens": 1},
        },
    }
    events: list[dict[str, Any]] = [
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"token{i} "}}
        for i in range(deltas)
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": deltas}},
        {"type": "message_stop"},
    ]
    return b"".join(
        encode_event("chunk", orjson.dumps({"bytes": base64.b64encode(orjson.dumps(e)).decode()}))
        for e in events
    )


def stream_events_per_second(
    factory: Callable[..., Any], wire: bytes, frames: int, total_events: int, anthropic: bool
) -> float:
    """Frames translated per CPU second, the wire fed as 16 KiB reads."""
    body = {
        "model": MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "go"}],
    }
    raw = orjson.dumps(body)
    ref = _ref("AWSAnthropic" if factory is OpenAIToAWSAnthropic else "AWSBedrock")
    rounds = max(total_events // frames, 1)
    reads = [wire[i : i + 16384] for i in range(0, len(wire), 16384)]
    start = time.process_time()
    for _ in range(rounds):
        ctx = RequestContext(Request("POST", "/", "", {}, raw, []), "messages" if anthropic else "chat")
        ctx.body, ctx.model, ctx.stream = body, MODEL, True
        translator = factory(ctx, ref)
        translator.response_headers(200, STREAM_HEADERS)
        for piece in reads:
            translator.response_body(piece, False)
        translator.response_body(b"", True)
    return rounds * frames / (time.process_time() - start)


def whole_stream_requests() -> dict[str, Callable[[], Any]]:
    """name -> one streamed request of the bench scenarios, the answer arriving in one read."""
    signer = AWSSigV4Credential(Credential("AWSCredentials", CREDENTIALS, "us-east-1"))
    bedrock_ref = BackendRef(
        Backend("default/b", Schema("AWSBedrock", None, None), ENDPOINTS),
        model_name_override=fixtures.BEDROCK_MODEL_ID,
    )
    bedrock_body = fixtures.model_request(fixtures.MODEL_BEDROCK, True)
    converse_wire = fixtures.converse_stream_body()
    openai_ref, sse_body = _ref("OpenAI"), fixtures.sse_body()
    sse_request = fixtures.model_request(fixtures.MODEL_SSE, True)
    sse_headers = [(b"content-type", b"text/event-stream")]

    def bedrock() -> None:
        ctx = _context(bedrock_body)
        translator = OpenAIToAWSBedrock(ctx, bedrock_ref)
        signer.signer.sign(translator.request(ctx), AUTHORITY)
        translator.response_headers(200, STREAM_HEADERS)
        translator.response_body(converse_wire, False)
        translator.response_body(b"", True)

    def passthrough() -> None:
        ctx = _context(sse_request)
        translator = OpenAIToOpenAI(ctx, openai_ref)
        translator.request(ctx)
        translator.response_headers(200, sse_headers)
        translator.response_body(sse_body, False)
        translator.response_body(b"", True)

    return {
        f"OpenAI -> Bedrock ConverseStream, {converse_wire.count(b':event-type')} frames": bedrock,
        f"passthrough SSE, {fixtures.SSE_EVENTS} events (reference)": passthrough,
    }


def baseline_from_results() -> float | None:
    """The gateway's CPU µs per passthrough request from the newest bench/run.py result, if any."""
    results = sorted((Path(__file__).parent / "results").glob("*.jsonl"))
    for path in reversed(results):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if (
                row.get("kind") == "run"
                and row.get("scenario") == "json"
                and row.get("target") == "sluicegate"
            ):
                return row.get("cpu_us_per_req")
    return None


def main(argv: list[str] | None = None) -> None:
    """Print the unary costs, the projected ratio and the stream throughput."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--events", type=int, default=200000, help="stream frames to translate per pair")
    parser.add_argument(
        "--baseline-us", type=float, default=None, help="gateway CPU µs per passthrough request"
    )
    args = parser.parse_args(argv)

    print("Unary translation, CPU µs per request (parse + translate + sign + response):")
    costs = {name: cpu_us(run, args.iterations) for name, run in unary_scenarios().items()}
    for name, cost in costs.items():
        print(f"  {name:<42} {cost:7.1f}")
    print(
        f"  {'botocore SigV4Auth alone (reference)':<42} {cpu_us(botocore_sign(), args.iterations // 4):7.1f}"
    )
    passthrough, bedrock = list(costs.values())[:2]
    baseline = args.baseline_us or baseline_from_results()
    if baseline:
        ratio = (baseline + bedrock - passthrough) / baseline
        print(
            f"  gateway CPU per passthrough request: {baseline:.1f} µs -> OpenAI -> Bedrock signed: "
            f"{baseline + bedrock - passthrough:.1f} µs = {ratio:.2f}x (target <= 2x)"
        )
    print("Stream translation, events per CPU second (16 KiB reads):")
    deltas = 200
    cases = [
        ("ConverseStream -> OpenAI SSE", OpenAIToAWSBedrock, converse_stream(deltas), deltas + 4, False),
        ("ConverseStream -> Anthropic SSE", AnthropicToAWSBedrock, converse_stream(deltas), deltas + 4, True),
        ("InvokeModel stream -> OpenAI SSE", OpenAIToAWSAnthropic, invoke_stream(deltas), deltas + 5, False),
    ]
    for name, factory, wire, frames, anthropic in cases:
        rate = stream_events_per_second(factory, wire, frames, args.events, anthropic)
        print(f"  {name:<42} {rate:10,.0f} events/s (target >= 50,000)")
    print("Whole streamed request of the bench scenarios, CPU µs (parse + translate + sign + stream):")
    for name, run in whole_stream_requests().items():
        print(f"  {name:<42} {cpu_us(run, max(args.iterations // 10, 100)):7.1f}")


if __name__ == "__main__":
    main()
