"""The benchmark's fixtures: request bodies, the mock upstream's answers and every generated config."""

from __future__ import annotations

import json
from pathlib import Path

MODEL_JSON = "gpt-4o-mini"  # routed to the upstream's unary (JSON) listener
MODEL_SSE = "gpt-4o-mini-sse"  # routed to the upstream's streaming (SSE) listener
UPSTREAM_MODEL = "gpt-4o-mini-2024-07-18"
COMPLETION_BYTES = 580  # perf-probe.md §2: a fixed 580-byte chat.completion
SSE_EVENTS = 51  # chat.completion.chunk events, the last one with usage, then `data: [DONE]`
REQUEST_TARGET_BYTES = 400


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _request(model: str, stream: bool, question: str) -> dict:
    body: dict = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one short paragraph."},
            {"role": "user", "content": question},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "user": "sluicegate-bench",
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def request_body(stream: bool) -> bytes:
    """A ~400-byte OpenAI chat request (`stream: true` plus include_usage for the SSE scenario)."""
    model = MODEL_SSE if stream else MODEL_JSON
    question = "Explain in two sentences why a gateway should add little latency."
    base = len(_dumps(_request(model, stream, question)))
    pad = max(0, REQUEST_TARGET_BYTES - base - 1)
    question += " " + ("Please be brief and precise. " * 20)[:pad]
    return _dumps(_request(model, stream, question.rstrip())).encode()


def completion_body() -> bytes:
    """The unary answer: a chat.completion with usage, padded to exactly COMPLETION_BYTES."""

    def build(content: str) -> bytes:
        return _dumps(
            {
                "id": "chatcmpl-bench0000000000000000000001",
                "object": "chat.completion",
                "created": 1764236400,
                "model": UPSTREAM_MODEL,
                "system_fingerprint": "fp_bench01",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 41,
                    "completion_tokens": 38,
                    "total_tokens": 79,
                    "prompt_tokens_details": {"cached_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
            }
        ).encode()

    text = "A gateway sits on every request, so each microsecond it adds is paid by every caller. " * 4
    content = "x"
    for n in range(len(text) + 1):
        content = text[:n].rstrip()
        if len(build(content)) >= COMPLETION_BYTES:
            break
    body = build(content)
    if len(body) < COMPLETION_BYTES:  # rstrip() can leave us a byte or two short
        body = build(content + "." * (COMPLETION_BYTES - len(body)))
    return body


def sse_body() -> bytes:
    """The streaming answer: SSE_EVENTS chat.completion.chunk events (usage last) and `data: [DONE]`."""
    words = (
        "Every",
        " request",
        " through",
        " a",
        " gateway",
        " pays",
        " for",
        " its",
        " parsing,",
        " routing",
        " and",
        " relaying,",
        " so",
        " the",
        " hot",
        " path",
        " must",
        " stay",
        " short.",
    )
    base = {
        "id": "chatcmpl-bench0000000000000000000002",
        "object": "chat.completion.chunk",
        "created": 1764236400,
        "model": UPSTREAM_MODEL,
    }
    events = []

    def chunk(delta: dict, finish: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], "usage": None}

    events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
    for i in range(SSE_EVENTS - 3):
        events.append(chunk({"content": words[i % len(words)]}))
    events.append(chunk({}, "stop"))
    usage = {
        "prompt_tokens": 45,
        "completion_tokens": SSE_EVENTS - 3,
        "total_tokens": 45 + SSE_EVENTS - 3,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    events.append({**base, "choices": [], "usage": usage})
    assert len(events) == SSE_EVENTS
    text = "".join(f"data: {_dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return text.encode()


def nginx_conf(root: Path, json_port: int, sse_port: int) -> str:
    """nginx.conf for the mock upstream: 1 worker, no access log, one listener per answer kind."""
    body = completion_body().decode()
    if "'" in body or "$" in body or "\\" in body:
        raise ValueError("the completion body cannot be embedded in an nginx return string")
    temp = "\n".join(
        f"    {kind}_temp_path {root}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# generated by bench/fixtures.py
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
{temp}
    server {{
        # POST /v1/chat/completions (any path): the fixed 580-byte chat.completion.
        listen 127.0.0.1:{json_port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
    server {{
        # POST (any path): the static SSE body. Static files refuse POST with 405, so turn the 405
        # into an internal GET of the file with status 200 (perf-probe.md §2).
        listen 127.0.0.1:{sse_port} backlog=4096;
        location / {{
            return 405;
            error_page 405 =200 /__sse;
        }}
        location = /__sse {{
            internal;
            types {{ }}
            default_type text/event-stream;
            alias {root}/www/stream.sse;
        }}
    }}
}}
"""


def gateway_config(json_port: int, sse_port: int) -> str:
    """The Sluicegate config: one route per model, each to its upstream listener (Envoy AI Gateway YAML)."""
    docs = []
    for model, name, port in ((MODEL_JSON, "json", json_port), (MODEL_SSE, "sse", sse_port)):
        docs.append(f"""apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: bench-{name}}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
      backendRefs: [{{name: upstream-{name}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: upstream-{name}}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: upstream-{name}-backend, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: upstream-{name}-backend}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
""")
    return "---\n".join(docs)


def litellm_config(json_port: int, sse_port: int) -> str:
    """LiteLLM proxy config (perf-probe.md §6): both models at the same mock upstream via api_base."""
    entries = []
    for model, port in ((MODEL_JSON, json_port), (MODEL_SSE, sse_port)):
        entries.append(f"""  - model_name: {model}
    litellm_params:
      model: openai/{UPSTREAM_MODEL}
      api_base: http://127.0.0.1:{port}/v1
      api_key: sk-upstream-fake
""")
    return "model_list:\n" + "".join(entries) + "litellm_settings:\n  telemetry: False\n"


# --- issue 9: production-like gateway config, Bedrock, a Redis budget, guardrails, slow streams ---------

MODEL_BEDROCK = "bench-bedrock"  # routed to the AWSBedrock backend (nginx serving Converse[Stream])
BEDROCK_MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"  # the id in /model/{id}/converse-stream
MODEL_BUDGET = "gpt-4o-mini-budget"  # the route with a Global token budget (Redis with --redis-url)
MODEL_GUARD = "gpt-4o-mini-guard"  # the route with a GuardrailPolicy
MODEL_SLOW = "gpt-4o-mini-slow"  # routed to bench/slow_upstream.py (paced events)
SLOW_EVENTS = 50
SLOW_DELAY_MS = 20
GUARD_PROMPT_BYTES = 4096


def model_request(model: str, stream: bool, question: str | None = None) -> bytes:
    """A chat request for `model` (the same shape as request_body)."""
    text = question or "Explain in two sentences why a gateway should add little latency."
    return _dumps(_request(model, stream, text)).encode()


def guard_request() -> bytes:
    """A non-streaming request with a ~4 KB user prompt (plain prose: nothing for the detectors to find)."""
    sentence = "A gateway scans each prompt for secrets and personal data before it leaves the house. "
    text = (sentence * (GUARD_PROMPT_BYTES // len(sentence) + 1))[:GUARD_PROMPT_BYTES]
    return model_request(MODEL_GUARD, False, text)


def converse_stream_body() -> bytes:
    """A ConverseStream answer as AWS sends it: binary event-stream frames (messageStart ... metadata)."""
    import sys

    src = str(Path(__file__).resolve().parent.parent / "src")
    if src not in sys.path:
        sys.path.insert(0, src)  # the harness runs without the package installed
    from sluicegate.testing.eventstream_encoder import event

    frames = [event("messageStart", _dumps({"role": "assistant", "p": "abcdefghijkl"}).encode())]
    for i in range(SSE_EVENTS - 3):
        delta = {"contentBlockIndex": 0, "delta": {"text": f" word{i}"}, "p": "abcdefghijklmnopqr"}
        frames.append(event("contentBlockDelta", _dumps(delta).encode()))
    frames.append(
        event("contentBlockStop", _dumps({"contentBlockIndex": 0, "p": "abcdefghijklmnop"}).encode())
    )
    frames.append(event("messageStop", _dumps({"stopReason": "end_turn", "p": "abcdefghijk"}).encode()))
    usage = {"inputTokens": 45, "outputTokens": SSE_EVENTS - 3, "totalTokens": 45 + SSE_EVENTS - 3}
    frames.append(
        event("metadata", _dumps({"usage": usage, "metrics": {"latencyMs": 42}, "p": "abc"}).encode())
    )
    return b"".join(frames)


def converse_body() -> bytes:
    """A Converse (non-streaming) answer."""
    usage = {"inputTokens": 41, "outputTokens": 38, "totalTokens": 79}
    message = {"role": "assistant", "content": [{"text": "A gateway sits on every request. " * 8}]}
    return _dumps({"output": {"message": message}, "stopReason": "end_turn", "usage": usage,
                   "metrics": {"latencyMs": 42}}).encode()  # fmt: skip


def nginx_bedrock_server(root: Path, port: int) -> str:
    """An nginx server block speaking Bedrock: POST .../converse-stream -> the event-stream file,
    POST .../converse -> the Converse JSON file (no signature check), each with a request id as
    Bedrock sends one (the gateway answers with it as the response id)."""
    return f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ /converse-stream$ {{
            return 405;
            error_page 405 =200 /__es;
        }}
        location ~ /converse$ {{
            return 405;
            error_page 405 =200 /__converse;
        }}
        location = /__es {{
            internal;
            types {{ }}
            default_type application/vnd.amazon.eventstream;
            add_header x-amzn-RequestId $request_id;
            alias {root}/www/converse.es;
        }}
        location = /__converse {{
            internal;
            types {{ }}
            default_type application/json;
            add_header x-amzn-RequestId $request_id;
            alias {root}/www/converse.json;
        }}
    }}
"""


def nginx_conf_issue9(root: Path, json_port: int, sse_port: int, bedrock_port: int) -> str:
    """nginx_conf plus the Bedrock listener."""
    conf = nginx_conf(root, json_port, sse_port).rstrip()
    assert conf.endswith("}")
    return conf[:-1] + nginx_bedrock_server(root, bedrock_port) + "}\n"


def _route(name: str, model: str, backend: str, costs: str = "") -> str:
    return f"""apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {name}}}
spec:
{costs}  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
      backendRefs: [{{name: {backend}}}]
"""


def _backend(name: str, schema: str, port: int) -> str:
    return f"""apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
  schema: {{name: {schema}}}
  backendRef: {{name: {name}-backend, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}-backend}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
"""


def gateway_config_issue9(json_port: int, sse_port: int, bedrock_port: int, slow_port: int | None) -> str:
    """The production-like config: gateway_config's routes (the json one with an OutputToken cost), plus
    a Bedrock route (signed, credentials file with dummy keys), a route with a Global token budget, a
    route with a GuardrailPolicy, and (when given) the slow upstream's route."""
    out_cost = "  llmRequestCosts: [{metadataKey: output, type: OutputToken}]\n"
    total_cost = "  llmRequestCosts: [{metadataKey: total, type: TotalToken}]\n"
    docs = [
        _route("bench-json", MODEL_JSON, "upstream-json", out_cost),
        _backend("upstream-json", "OpenAI", json_port),
        _route("bench-sse", MODEL_SSE, "upstream-sse"),
        _backend("upstream-sse", "OpenAI", sse_port),
        _route("bench-bedrock", MODEL_BEDROCK, "bedrock").replace(
            "{name: bedrock}", f'{{name: bedrock, modelNameOverride: "{BEDROCK_MODEL_ID}"}}'
        ),
        _backend("bedrock", "AWSBedrock", bedrock_port),
        """apiVersion: v1
kind: Secret
metadata: {name: aws-creds}
type: Opaque
stringData:
  credentials: |
    [default]
    aws_access_key_id = AKIAIOSFODNN7EXAMPLE
    aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
""",
        """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: aws}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}]
  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    credentialsFile: {secretRef: {name: aws-creds}, profile: default}
""",
        _route("bench-budget", MODEL_BUDGET, "upstream-budget", total_cost),
        _backend("upstream-budget", "OpenAI", json_port),
        """apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: budget}
spec:
  targetRefs: [{name: bench-budget, kind: AIGatewayRoute, group: aigateway.envoyproxy.io}]
  rateLimit:
    type: Global
    global:
      rules:
        - limit: {requests: 4294967295, unit: Hour}
          cost:
            request: {from: Number, number: 0}
            response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: total}}
""",
        _route("bench-guard", MODEL_GUARD, "upstream-guard"),
        _backend("upstream-guard", "OpenAI", json_port),
        """apiVersion: sluicegate.dev/v1alpha1
kind: GuardrailPolicy
metadata: {name: bench-guard}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: bench-guard}]
  rules:
    - name: no-secrets
      action: Block
      appliesTo: Request
      detectors: {builtin: [Secrets]}
    - name: mask-pii
      action: Redact
      appliesTo: Request
      detectors: {builtin: [Email, CreditCard, USSSN]}
""",
    ]
    if slow_port is not None:
        docs += [
            _route("bench-slow", MODEL_SLOW, "upstream-slow"),
            _backend("upstream-slow", "OpenAI", slow_port),
        ]
    return "---\n".join(docs)
