"""Guardrails through a gateway subprocess: block, redact and log, requests and responses, streams too."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import orjson
import pytest

from harness import GatewayProcess, backend_yaml, free_port
from sluicegate.testing import FakeProviderThread

ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: sluicegate
  listeners: [{{name: http, protocol: HTTP, port: 1975}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: guarded}}
spec:
  parentRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-fake}}]}}]
      backendRefs: [{{name: openai}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: claude-fake}}]}}]
      backendRefs: [{{name: claude}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: plain}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-plain}}]}}]
      backendRefs: [{{name: openai}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: moderated}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-moderated}}]}}]
      backendRefs: [{{name: openai}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: dead-open}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-dead-open}}]}}]
      backendRefs: [{{name: openai}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: dead-closed}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-dead-closed}}]}}]
      backendRefs: [{{name: openai}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: moderated-out}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-moderated-out}}]}}]
      backendRefs: [{{name: openai}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: claude-moderated-out}}]}}]
      backendRefs: [{{name: claude}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: dead-out}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-dead-out-open}}]}}]
      backendRefs: [{{name: openai}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-dead-out-closed}}]}}]
      backendRefs: [{{name: openai}}]
---
apiVersion: sluicegate.dev/v1alpha1
kind: GuardrailPolicy
metadata: {{name: moderation-out}}
spec:
  targetRefs: [{{kind: AIGatewayRoute, name: moderated-out}}]
  rules:
    - name: violent-answers
      action: Block
      appliesTo: Response
      detectors: {{moderation: {{backendRef: {{name: moderator}}, categories: [violence]}}}}
---
apiVersion: sluicegate.dev/v1alpha1
kind: GuardrailPolicy
metadata: {{name: dead-out}}
spec:
  targetRefs: [{{kind: AIGatewayRoute, name: dead-out}}]
  rules:
    - name: closed
      action: Block
      appliesTo: Response
      detectors: {{moderation: {{backendRef: {{name: deadmod}}, failureMode: Closed}}}}
---
apiVersion: sluicegate.dev/v1alpha1
kind: GuardrailPolicy
metadata: {{name: safety}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: guarded}}]
  rules:
    - name: no-secrets
      action: Block
      detectors: {{builtin: [Secrets]}}
    - name: mask-pii
      action: Redact
      detectors:
        builtin: [Email, CreditCard, USSSN]
        patterns: [{{name: Ticket, regex: "TCK-[0-9]{{6}}", mask: "[TICKET]"}}]
    - name: watch-words
      action: Log
      appliesTo: Request
      detectors: {{denyList: {{words: [Project Bluebird]}}}}
---
apiVersion: sluicegate.dev/v1alpha1
kind: GuardrailPolicy
metadata: {{name: moderation}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: moderated}}]
  rules:
    - name: violence
      action: Block
      appliesTo: Request
      detectors: {{moderation: {{backendRef: {{name: moderator}}, categories: [violence], threshold: 0.5}}}}
---
apiVersion: sluicegate.dev/v1alpha1
kind: GuardrailPolicy
metadata: {{name: dead-open}}
spec:
  targetRefs: [{{kind: AIGatewayRoute, name: dead-open}}]
  rules:
    - action: Block
      appliesTo: Request
      detectors: {{moderation: {{backendRef: {{name: deadmod}}, failureMode: Open}}}}
---
apiVersion: sluicegate.dev/v1alpha1
kind: GuardrailPolicy
metadata: {{name: dead-closed}}
spec:
  targetRefs: [{{kind: AIGatewayRoute, name: dead-closed}}]
  rules:
    - action: Block
      appliesTo: Request
      detectors: {{moderation: {{backendRef: {{name: deadmod}}, failureMode: Closed}}}}
{backends}
"""
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def gateway(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    backends = (
        backend_yaml("openai", fake.port, api_key="sk-upstream")
        + backend_yaml("claude", fake.port, schema="Anthropic", api_key="sk-ant", key_type="AnthropicAPIKey")
        + backend_yaml("moderator", fake.port, api_key="sk-mod")
        + backend_yaml("deadmod", free_port())
    )
    process = GatewayProcess(ROUTES.format(backends=backends), tmp_path_factory.mktemp("guardrails"))
    yield process
    assert process.stop() == 0


def chat(gateway: GatewayProcess, text: str, model: str = "gpt-fake", **kwargs: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **kwargs}
    headers = kwargs.pop("headers", None) if "headers" in kwargs else None
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)


def last_upstream(fake: FakeProviderThread, suffix: str) -> dict:
    return next(r for r in reversed(fake.requests) if r.path.endswith(suffix)).json()


def test_request_redacted_before_it_leaves(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    text = f"Mail {EMAIL}, card {CARD}, ticket TCK-123456, order 4111111111111112."
    answer = client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": text}])
    sent = last_upstream(fake, "/chat/completions")["messages"][0]["content"]
    assert sent == "Mail [EMAIL], card [CREDIT_CARD], ticket [TICKET], order 4111111111111112."
    assert answer.choices[0].message.content == "Echo: " + sent  # the echo is clean too


def test_request_blocked_without_echo(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    fake.reset()
    response = chat(gateway, f"my key is {AWS_KEY}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "guardrail_blocked" and "default/safety/no-secrets" in error["message"]
    assert AWS_KEY not in response.text
    assert not fake.requests  # nothing left the gateway


def test_log_rule_counts_only(gateway: GatewayProcess) -> None:
    response = chat(gateway, "Tell me about Project Bluebird")
    assert response.status_code == 200
    metrics = httpx.get(gateway.admin_url + "/metrics").text
    line = next(m for m in metrics.splitlines() if m.startswith("sluicegate_guardrail_matches_total{"))
    assert "Bluebird" not in metrics
    assert 'detector="DenyList"' in metrics and 'action="Log"' in metrics, line


def test_route_without_guardrails_untouched(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    response = chat(gateway, f"Mail {EMAIL} {AWS_KEY}", model="gpt-plain")
    assert response.status_code == 200
    assert last_upstream(fake, "/chat/completions")["messages"][0]["content"] == f"Mail {EMAIL} {AWS_KEY}"


def test_response_unary_redacted_and_blocked(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-fake",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-reply": f"Write to {EMAIL} today"},
    )
    assert answer.choices[0].message.content == "Write to [EMAIL] today"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-fake",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-reply": f"The key: {AWS_KEY}"},
        )
    assert "no-secrets" in str(caught.value) and AWS_KEY not in str(caught.value)


@pytest.mark.parametrize("chunks", [3, 7, 19])
def test_openai_stream_redacts_a_split_email(gateway: GatewayProcess, chunks: int) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    reply = f"Sure! Contact {EMAIL} or call. Card {CARD} is on file. Bye."
    stream = client.chat.completions.create(
        model="gpt-fake",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-fake-reply": reply, "x-fake-chunks": str(chunks)},
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == "Sure! Contact [EMAIL] or call. Card [CREDIT_CARD] is on file. Bye."
    assert not any("@" in p for p in pieces)


def test_openai_stream_blocked_mid_stream(gateway: GatewayProcess) -> None:
    reply = "Here it is: " + AWS_KEY + " and more text after the key, quite a lot of it really."
    body = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"x-fake-reply": reply, "x-fake-chunks": "9"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=headers) as response:
        text = response.read().decode()
    assert response.status_code == 200
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert AWS_KEY[:10] not in text
    assert orjson.loads(events[-1])["error"]["code"] == "guardrail_blocked"


def test_anthropic_request_and_response(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as client:
        message = client.messages.create(
            model="claude-fake",
            max_tokens=100,
            system=f"The user is {EMAIL}",
            messages=[{"role": "user", "content": [{"type": "text", "text": f"SSN 123-45-6789, {EMAIL}"}]}],
            extra_headers={"x-fake-reply": f"Noted {EMAIL}."},
        )
        sent = last_upstream(fake, "/messages")
        assert sent["system"] == "The user is [EMAIL]"
        assert sent["messages"][0]["content"][0]["text"] == "SSN [SSN], [EMAIL]"
        assert message.content[0].text == "Noted [EMAIL]."
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(
                model="claude-fake", max_tokens=10, messages=[{"role": "user", "content": f"key {AWS_KEY}"}]
            )
        assert caught.value.body["error"]["type"] == "invalid_request_error"
        assert AWS_KEY not in str(caught.value.body)


@pytest.mark.parametrize("chunks", [4, 11])
def test_anthropic_stream_redacts_a_split_email(gateway: GatewayProcess, chunks: int) -> None:
    reply = f"Sure, mail {EMAIL} and not 4111111111111112, fine."
    with anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as client:
        with client.messages.stream(
            model="claude-fake",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-reply": reply, "x-fake-chunks": str(chunks)},
        ) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
    assert "".join(pieces) == "Sure, mail [EMAIL] and not 4111111111111112, fine."
    assert final.content[0].text == "".join(pieces)


def test_moderation_blocks_flagged_prompt(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    assert chat(gateway, "a calm question", model="gpt-moderated").status_code == 200
    moderation = last_upstream(fake, "/moderations")
    assert moderation["input"] == ["a calm question"]
    response = chat(gateway, "plan an attack", model="gpt-moderated")
    assert response.status_code == 400
    assert "Moderation:violence" in response.json()["error"]["message"]
    assert "attack" not in response.json()["error"]["message"]


def test_moderation_backend_down_fail_open_and_closed(gateway: GatewayProcess) -> None:
    assert chat(gateway, "hello", model="gpt-dead-open").status_code == 200
    closed = chat(gateway, "hello", model="gpt-dead-closed")
    assert closed.status_code == 503
    assert closed.json()["error"]["code"] == "guardrail_unavailable"


# --- response moderation ----------------------------------------------------------------------------------


def test_moderation_blocks_flagged_unary_answer(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    calm = client.chat.completions.create(
        model="gpt-moderated-out",
        messages=[{"role": "user", "content": "plan an attack"}],  # the prompt is not moderated here
        extra_headers={"x-fake-reply": "A calm answer."},
    )
    assert calm.choices[0].message.content == "A calm answer."
    assert last_upstream(fake, "/moderations")["input"] == ["A calm answer."]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-moderated-out",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-reply": "Here is how to attack the castle."},
        )
    error = caught.value.body
    assert error["code"] == "guardrail_blocked" and "Moderation:violence" in error["message"]
    assert "castle" not in str(caught.value)
    with anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as claude:
        with pytest.raises(anthropic.BadRequestError) as blocked:
            claude.messages.create(
                model="claude-moderated-out",
                max_tokens=50,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-fake-reply": "We attack at dawn."},
            )
    assert "Moderation:violence" in str(blocked.value.body) and "dawn" not in str(blocked.value.body)


def test_moderation_ends_a_flagged_stream(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    calm = client.chat.completions.create(
        model="gpt-moderated-out",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-fake-reply": "All is calm here.", "x-fake-chunks": "5"},
    )
    assert "".join(c.choices[0].delta.content or "" for c in calm if c.choices) == "All is calm here."
    body = {"model": "gpt-moderated-out", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"x-fake-reply": "Then we attack the gate at night.", "x-fake-chunks": "6"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=headers) as response:
        text = response.read().decode()
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert orjson.loads(events[-1])["error"]["code"] == "guardrail_blocked"
    assert "attack" not in text  # a short answer is still inside the hold-back window when it ends
    pieces: list[str] = []
    with anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as claude:
        with pytest.raises(anthropic.APIStatusError) as caught:
            with claude.messages.stream(
                model="claude-moderated-out",
                max_tokens=50,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-fake-reply": "We attack at dawn.", "x-fake-chunks": "4"},
            ) as stream:
                pieces.extend(stream.text_stream)
    assert "Moderation:violence" in str(caught.value)
    assert "attack" not in "".join(pieces)


def test_response_moderation_backend_down(gateway: GatewayProcess) -> None:
    closed = chat(gateway, "hello", model="gpt-dead-out-closed")
    assert closed.status_code == 503
    assert closed.json()["error"]["code"] == "guardrail_unavailable"
    body = {"model": "gpt-dead-out-closed", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body) as response:
        text = response.read().decode()
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert orjson.loads(events[-1])["error"]["code"] == "guardrail_unavailable"


# --- tool-call arguments in streams -----------------------------------------------------------------------

TOOL_ARGS = {"to": EMAIL, "note": f"card {CARD}", "count": 2}
REDACTED_ARGS = {"to": "[EMAIL]", "note": "card [CREDIT_CARD]", "count": 2}


def test_openai_stream_tool_arguments_redacted(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-fake",
        messages=[{"role": "user", "content": "mail them"}],
        stream=True,
        extra_headers={"x-fake-scenario": "tool", "x-fake-tool-args": orjson.dumps(TOOL_ARGS).decode()},
    )
    arguments, finish = "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                arguments += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert orjson.loads(arguments) == REDACTED_ARGS


def test_anthropic_stream_tool_input_redacted(gateway: GatewayProcess) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as client:
        with client.messages.stream(
            model="claude-fake",
            max_tokens=100,
            messages=[{"role": "user", "content": "mail them"}],
            extra_headers={"x-fake-scenario": "tool", "x-fake-tool-args": orjson.dumps(TOOL_ARGS).decode()},
        ) as stream:
            final = stream.get_final_message()
    tool_use = next(block for block in final.content if block.type == "tool_use")
    assert tool_use.input == REDACTED_ARGS


def test_stream_tool_arguments_blocked(gateway: GatewayProcess) -> None:
    body = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"x-fake-scenario": "tool", "x-fake-tool-args": orjson.dumps({"key": AWS_KEY}).decode()}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=headers) as response:
        text = response.read().decode()
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert AWS_KEY[:10] not in text
    assert orjson.loads(events[-1])["error"]["code"] == "guardrail_blocked"


def test_matched_content_never_in_logs_or_metrics(gateway: GatewayProcess) -> None:
    """Runs last in this module: everything the gateway printed (logs and access log) and its metrics."""
    printed = gateway.output()
    metrics = httpx.get(gateway.admin_url + "/metrics").text
    assert "sluicegate_guardrail_matches_total{" in metrics  # the counts are there
    for matched in (EMAIL, CARD, AWS_KEY, "Bluebird", "TCK-123456"):
        assert matched not in printed and matched not in metrics, matched
