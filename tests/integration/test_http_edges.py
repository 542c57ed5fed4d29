"""HTTP/1.1 edges through a gateway subprocess: errors in OpenAI's envelope, limits, timeouts, pipelining."""

from __future__ import annotations

import http.client
import signal
import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from harness import GatewayProcess, backend_yaml, exchange, free_port
from sluicegate.testing import FakeProviderThread

CONFIG = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: edges}}
spec:
  hostnames: []
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: demo}}]}}]
      backendRefs: [{{name: fake}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: dead-model}}]}}]
      backendRefs: [{{name: dead}}]
    - name: tenant-rule
      matches:
        - headers:
            - {{type: Exact, name: x-ai-eg-model, value: tenant-model}}
            - {{type: RegularExpression, name: x-tenant, value: "team-[a-z]+"}}
      backendRefs:
        - name: fake
          headerMutation:
            set: [{{name: x-route-level, value: route}}, {{name: x-shared, value: from-route}}]
            remove: [x-drop-me]
          bodyMutation:
            set: [{{path: temperature, value: "0.25"}}]
            remove: [user]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: hosted}}
spec:
  hostnames: [special.example.com]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: hosted-model}}]}}]
      backendRefs: [{{name: fake}}]
{fake}
{dead}
"""


@pytest.fixture(scope="module")
def gateway(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    fake_backend = backend_yaml("fake", fake.port, api_key="sk-fake-secret").replace(
        "  schema: {name: OpenAI}",
        "  schema: {name: OpenAI}\n  headerMutation:\n    set: [{name: x-shared, value: from-backend}, "
        "{name: x-backend-level, value: backend}]",
    )
    config = CONFIG.format(
        fake=fake_backend, dead=backend_yaml("dead", free_port(), api_key="sk-dead-secret")
    )
    process = GatewayProcess(
        config,
        tmp_path_factory.mktemp("edges"),
        [
            "--max-body-bytes",
            "1000",
            "--request-read-timeout",
            "0.5",
            "--idle-timeout",
            "1",
            "--max-header-bytes",
            "4096",
        ],
    )
    yield process
    assert process.stop() == 0


def call(
    gateway: GatewayProcess,
    body: bytes | dict,
    path: str = "/v1/chat/completions",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict, bytes]:
    """One request over http.client; returns status, headers, body."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request(
        method,
        path,
        body=raw if method == "POST" else None,
        headers={"content-type": "application/json", **(headers or {})},
    )
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), data


def chat(model: str = "demo", text: str = "hi") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def error_of(body: bytes) -> dict:
    """The OpenAI error object; fails unless the envelope is exactly OpenAI's."""
    envelope = orjson.loads(body)
    assert set(envelope) == {"error"}
    assert set(envelope["error"]) == {"message", "type", "param", "code"}
    return envelope["error"]


def test_malformed_json_is_400(gateway: GatewayProcess) -> None:
    status, headers, body = call(gateway, b'{"model": "demo", "messages": [')
    assert status == 400 and headers["content-type"] == "application/json"
    assert "not valid JSON" in error_of(body)["message"]


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"null"])
def test_body_not_an_object_is_400(gateway: GatewayProcess, raw: bytes) -> None:
    status, _, body = call(gateway, raw)
    assert status == 400
    assert error_of(body)["message"] == "The request body must be a JSON object."


@pytest.mark.parametrize("payload", [{"messages": []}, {"model": 5}, {"model": ""}])
def test_missing_model_is_400(gateway: GatewayProcess, payload: dict) -> None:
    status, _, body = call(gateway, payload)
    error = error_of(body)
    assert status == 400 and error["param"] == "model" and "model" in error["message"]


def test_empty_body_is_400(gateway: GatewayProcess) -> None:
    status, _, body = call(gateway, b"")
    assert status == 400 and "empty" in error_of(body)["message"]


def test_unknown_model_is_404_with_envoy_message(gateway: GatewayProcess) -> None:
    status, _, body = call(gateway, chat("no-such-model"))
    assert status == 404
    assert error_of(body)["message"] == (
        "No matching route found. It is likely because the model specified in your request "
        "is not configured in the Gateway."
    )


def test_client_model_header_is_overwritten(gateway: GatewayProcess) -> None:
    status, _, _ = call(gateway, chat("no-such-model"), headers={"x-ai-eg-model": "demo"})
    assert status == 404


def test_oversized_body_is_413(gateway: GatewayProcess) -> None:
    status, _, body = call(gateway, chat(text="x" * 2000))
    assert status == 413
    error = error_of(body)
    assert error["code"] == "request_too_large" and "1000 bytes" in error["message"]


def test_oversized_chunked_body_is_413(gateway: GatewayProcess) -> None:
    piece = b"x" * 600
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(piece), piece) * 2
        + b"0\r\n\r\n"
    )
    answer = exchange(gateway.port, raw)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"request_too_large"' in answer


def test_chunked_request_body_is_read(gateway: GatewayProcess) -> None:
    body = orjson.dumps(chat(text="chunked in"))
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nconnection: close\r\n"
        b"transfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n"
        + b"%x\r\n%s\r\n" % (10, body[:10])
        + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:])
        + b"0\r\n\r\n"
    )
    answer = exchange(gateway.port, raw)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"Echo: chunked in" in answer


def test_expect_100_continue(gateway: GatewayProcess) -> None:
    body = orjson.dumps(chat(text="after continue"))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        interim = s.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 ") and b"Echo: after continue" in rest


def test_expect_100_continue_too_large_gets_413_first(gateway: GatewayProcess) -> None:
    answer = exchange(
        gateway.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n"
        b"expect: 100-continue\r\ncontent-length: 5000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413 ")


def pipelined(texts: list[str]) -> bytes:
    """Chat requests back to back on one connection, the last one closing it."""
    requests = b""
    for i, text in enumerate(texts):
        body = orjson.dumps(chat(text=text))
        close = b"connection: close\r\n" if i == len(texts) - 1 else b""
        requests += (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            + close
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
    return requests


def test_pipelined_requests_are_answered_in_order(gateway: GatewayProcess) -> None:
    answer = exchange(gateway.port, pipelined([f"pipelined-{i}" for i in range(5)]))
    assert answer.count(b"HTTP/1.1 200 ") == 5
    positions = [answer.index(f"Echo: pipelined-{i}".encode()) for i in range(5)]
    assert positions == sorted(positions)


def test_a_burst_of_new_requests_is_served_whole_and_in_order(gateway: GatewayProcess) -> None:
    # 300 connections x 2 pipelined requests land at once (sent while the gateway is stopped): more than
    # the server starts in one loop turn (server/http.py _STARTS_PER_TURN), so most wait for a later turn;
    # every one must still be answered.
    sockets = [socket.create_connection(("127.0.0.1", gateway.port), timeout=10) for _ in range(300)]
    time.sleep(0.2)  # accepted
    gateway.proc.send_signal(signal.SIGSTOP)
    try:
        for n, s in enumerate(sockets):
            s.sendall(pipelined([f"burst-{n}-0", f"burst-{n}-1"]))
    finally:
        gateway.proc.send_signal(signal.SIGCONT)
    for n, s in enumerate(sockets):
        with s:
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:300]
        assert answer.index(f"Echo: burst-{n}-0".encode()) < answer.index(f"Echo: burst-{n}-1".encode())


def test_slow_request_head_gets_408_and_close(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n")
        started = time.monotonic()
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 4.5  # closed by the gateway, not by our socket timeout


def test_idle_keepalive_connection_is_closed(gateway: GatewayProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    connection.request("GET", "/v1/models")
    assert connection.getresponse().read()
    sock = connection.sock
    assert sock is not None
    sock.settimeout(5)
    assert sock.recv(10) == b""  # the gateway closed the idle connection before our 5 s timeout
    connection.close()


def test_too_large_header_is_431(gateway: GatewayProcess) -> None:
    answer = exchange(
        gateway.port, b"GET /v1/models HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_garbage_is_400(gateway: GatewayProcess) -> None:
    answer = exchange(gateway.port, b"\x16\x03\x01 this is not http\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_unknown_path_and_wrong_method(gateway: GatewayProcess) -> None:
    status, _, body = call(gateway, b"", path="/v1/nothing-here", method="GET")
    assert status == 404 and error_of(body)["code"] == "unknown_url"
    status, headers, body = call(gateway, b"", path="/v1/chat/completions", method="GET")
    assert status == 405 and headers["allow"] == "POST"
    error_of(body)


def test_unreachable_backend_is_502_without_secret(gateway: GatewayProcess) -> None:
    status, _, body = call(gateway, chat("dead-model"))
    assert status == 502
    message = error_of(body)["message"]
    assert "default/dead" in message and "sk-dead-secret" not in body.decode()


def test_header_regex_match_and_mutations(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    status, _, _ = call(gateway, chat("tenant-model"), headers={"x-tenant": "other"})
    assert status == 404
    payload = {**chat("tenant-model"), "user": "someone", "temperature": 1.5}
    status, _, body = call(gateway, payload, headers={"x-tenant": "team-blue", "x-drop-me": "1"})
    assert status == 200, body
    upstream = fake.requests[-1]
    assert upstream.headers["x-route-level"] == "route"
    assert upstream.headers["x-backend-level"] == "backend"
    assert upstream.headers["x-shared"] == "from-route"  # the route-level mutation wins
    assert "x-drop-me" not in upstream.headers
    sent = orjson.loads(upstream.body)
    assert sent["temperature"] == 0.25 and "user" not in sent


def test_hostnames_scope_routes_and_models(gateway: GatewayProcess) -> None:
    assert call(gateway, chat("hosted-model"))[0] == 404
    assert call(gateway, chat("hosted-model"), headers={"host": "special.example.com"})[0] == 200
    _, _, plain = call(gateway, b"", path="/v1/models", method="GET")
    _, _, special = call(
        gateway, b"", path="/v1/models", method="GET", headers={"host": "special.example.com"}
    )
    assert "hosted-model" not in [m["id"] for m in orjson.loads(plain)["data"]]
    assert "hosted-model" in [m["id"] for m in orjson.loads(special)["data"]]


def test_client_credentials_are_not_forwarded(gateway: GatewayProcess, fake: FakeProviderThread) -> None:
    call(
        gateway,
        chat(),
        headers={
            "authorization": "Bearer client-secret",
            "x-api-key": "client-secret-2",
            "api-key": "client-secret-3",
        },
    )
    upstream = fake.requests[-1]
    assert upstream.headers["authorization"] == "Bearer sk-fake-secret"
    assert "client-secret" not in str(upstream.headers)


def test_process_survives_everything(gateway: GatewayProcess) -> None:
    assert gateway.proc.poll() is None
    status, _, body = call(gateway, chat(text="still here"))
    assert status == 200 and b"Echo: still here" in body
    health = http.client.HTTPConnection("127.0.0.1", gateway.admin_port, timeout=5)
    health.request("GET", "/health")
    assert health.getresponse().status == 200


def test_admin_endpoints(gateway: GatewayProcess) -> None:
    admin = http.client.HTTPConnection("127.0.0.1", gateway.admin_port, timeout=5)
    for path, status in [("/health", 200), ("/ready", 200), ("/nope", 404)]:
        admin.request("GET", path)
        response = admin.getresponse()
        assert response.status == status, path
        orjson.loads(response.read())
    admin.request("GET", "/metrics")
    response = admin.getresponse()
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/plain")
    assert b"# TYPE" in response.read()


def test_http10_client_gets_stream_without_chunking(gateway: GatewayProcess) -> None:
    body = orjson.dumps({**chat(text="old client"), "stream": True})
    answer = exchange(
        gateway.port,
        b"POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body,
    )
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding" not in head.lower()
    assert rest.startswith(b"data: ") and rest.endswith(b"data: [DONE]\n\n")
