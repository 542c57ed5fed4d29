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
