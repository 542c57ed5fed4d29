"""The fake provider, judged by the official openai SDK and by raw HTTP."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import orjson
import pytest

import sluicegate
from sluicegate.testing import MODELS, FakeProvider, FakeProviderThread, fake_provider

USER = [{"role": "user", "content": "hello there world"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderThread]:
    with FakeProviderThread() as running:
        yield running


@pytest.fixture
def client(fake: FakeProviderThread) -> Iterator[openai.OpenAI]:
    fake.reset()
    with openai.OpenAI(base_url=fake.base_url + "/v1", api_key="x", max_retries=0) as sdk:
        yield sdk


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until condition() holds; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


class Raw:
    """A response read with http.client: status, lower-cased headers, body."""

    def __init__(self, status: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, content
        self.text = content.decode()

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.content)


def send(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None, **headers: str) -> Raw:
    """One request on an open connection; a dict or list body is sent as JSON."""
    if isinstance(body, (dict, list)):
        body = orjson.dumps(body)
        headers.setdefault("content-type", "application/json")
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return Raw(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


def raw(fake: FakeProviderThread, method: str, path: str, body: Any = None, **headers: str) -> Raw:
    """One request on a fresh connection, without the SDK."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        return send(conn, method, path, body, **headers)
    finally:
        conn.close()


def sse_events(raw: bytes) -> list[bytes]:
    """The payloads of the `data: ` events of an SSE body."""
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    assert all(e.startswith(b"data: ") for e in events[:-1])
    return [e[len(b"data: ") :] for e in events[:-1]]


# --- chat completions ---------------------------------------------------------------------------------


def test_chat_unary(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    resp = client.chat.completions.create(model="demo", messages=USER)
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "demo"
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: hello there world"
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (3, 4, 7)
    assert resp.usage.prompt_tokens_details.cached_tokens == 0
    assert resp.usage.completion_tokens_details.reasoning_tokens == 0
    assert fake.requests[-1].path == "/v1/chat/completions"


def test_chat_echoes_last_user_message_text_parts(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look at"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "this"},
            ],
        },
    ]
    resp = client.chat.completions.create(model="fake-gpt", messages=messages)
    assert resp.choices[0].message.content == "Echo: look at this"
    assert resp.usage is not None and resp.usage.prompt_tokens == 2 + 2 + 2 + 3


def test_chat_without_user_message_gets_default_reply(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="demo", messages=[{"role": "system", "content": "x"}])
    assert resp.choices[0].message.content == "Hello from the Sluicegate fake provider."


def test_chat_stream_reassembles(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    chunks = list(client.chat.completions.create(model="demo", messages=USER, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    content = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert content == ["Echo: ", "hello ", "there ", "world"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None
    assert all(c.usage is None for c in chunks)
    assert all(c.object == "chat.completion.chunk" and c.model == "demo" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    wait_for(lambda: fake.streams_completed == 1)


def test_chat_stream_include_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="demo", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello there world"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (3, 4, 7)
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_chat_stream_wire_format(fake: FakeProviderThread) -> None:
    body = {"model": "demo", "messages": USER, "stream": True}
    plain = raw(fake, "POST", "/v1/chat/completions", body)
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/event-stream")
    events = sse_events(plain.content)
    assert events[-1] == b"[DONE]"
    assert all("usage" not in orjson.loads(e) for e in events[:-1])

    with_usage = raw(
        fake, "POST", "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}}
    )
    chunks = [orjson.loads(e) for e in sse_events(with_usage.content)[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7


# --- legacy completions, embeddings, models -------------------------------------------------------------


def test_completions_unary_and_stream(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    resp = client.completions.create(model="demo", prompt="say something")
    assert resp.object == "text_completion"
    assert resp.id.startswith("cmpl-")
    assert resp.choices[0].text == "Echo: say something"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (2, 3)
    assert fake.requests[-1].path == "/v1/completions"

    stream = client.completions.create(
        model="demo", prompt="say something", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: say something"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_embeddings_base64_default_and_floats(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    default = client.embeddings.create(model="fake-embedding", input=["alpha", "beta gamma"])
    assert fake.requests[-1].json()["encoding_format"] == "base64"
    floats = client.embeddings.create(
        model="fake-embedding", input=["alpha", "beta gamma"], encoding_format="float"
    )
    assert fake.requests[-1].json()["encoding_format"] == "float"
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 8
    assert floats.data[0].embedding != floats.data[1].embedding
    assert all(-1.0 <= x < 1.0 for x in floats.data[0].embedding)
    assert floats.model == "fake-embedding"
    assert (floats.usage.prompt_tokens, floats.usage.total_tokens) == (3, 3)

    single = client.embeddings.create(model="fake-embedding", input="alpha", encoding_format="float")
    assert single.data[0].embedding == floats.data[0].embedding

    tokens = client.embeddings.create(model="fake-embedding", input=[[1, 2, 3], [4]], dimensions=16)
    assert [len(d.embedding) for d in tokens.data] == [16, 16]
    assert tokens.usage.prompt_tokens == 4


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == list(MODELS)
    assert all(m.object == "model" and m.owned_by == "sluicegate-fake" for m in models.data)
    assert client.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# --- knobs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "authentication_error"),
        (403, openai.PermissionDeniedError, "permission_error"),
        (404, openai.NotFoundError, "not_found_error"),
        (429, openai.RateLimitError, "rate_limit_error"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
def test_status_knob(
    client: openai.OpenAI, status: int, error_class: type[openai.APIStatusError], error_type: str
) -> None:
    with pytest.raises(error_class) as caught:
        client.chat.completions.create(
            model="demo", messages=USER, extra_headers={"x-fake-status": str(status)}
        )
    assert caught.value.status_code == status
    assert caught.value.type == error_type
    assert f"fake error: status {status}" in caught.value.message


def test_status_knob_with_error_body(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    error = {
        "error": {"message": "slow down please", "type": "requests", "param": None, "code": "rate_limit"}
    }
    headers = {"x-fake-status": "429", "x-fake-error-body": orjson.dumps(error).decode()}
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="demo", messages=USER, stream=True, extra_headers=headers)
    assert "slow down please" in caught.value.message
    assert caught.value.code == "rate_limit"

    headers = {"x-fake-status": "502", "x-fake-error-body": "upstream exploded"}
    plain = raw(fake, "POST", "/v1/chat/completions", {"model": "demo", "messages": USER}, **headers)
    assert plain.status_code == 502
    assert plain.headers["content-type"].startswith("text/plain")
    assert plain.text == "upstream exploded"


def test_chunks_knob(client: openai.OpenAI) -> None:
    headers = {"x-fake-chunks": "5", "x-fake-reply": "abcdefghijkl"}
    stream = client.chat.completions.create(
        model="demo",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert content == ["abc", "def", "gh", "ij", "kl"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    unary = client.chat.completions.create(model="demo", messages=USER, extra_headers={"x-fake-chunks": "9"})
    assert unary.usage is not None and unary.usage.completion_tokens == 9


def test_reply_knob(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="demo", messages=USER, extra_headers={"x-fake-reply": "fixed"}
    )
    assert resp.choices[0].message.content == "fixed"
    assert resp.usage is not None and resp.usage.completion_tokens == 1


def test_token_knobs(client: openai.OpenAI) -> None:
    headers = {
        "x-fake-prompt-tokens": "100",
        "x-fake-completion-tokens": "20",
        "x-fake-cached-tokens": "40",
        "x-fake-reasoning-tokens": "7",
    }
    unary = client.chat.completions.create(model="demo", messages=USER, extra_headers=headers)
    stream = client.chat.completions.create(
        model="demo",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    streamed = list(stream)[-1].usage
    for use in (unary.usage, streamed):
        assert use is not None
        assert (use.prompt_tokens, use.completion_tokens, use.total_tokens) == (100, 20, 120)
        assert use.prompt_tokens_details.cached_tokens == 40
        assert use.completion_tokens_details.reasoning_tokens == 7
    embedded = client.embeddings.create(model="e", input="a", extra_headers={"x-fake-prompt-tokens": "11"})
    assert embedded.usage.prompt_tokens == 11


def test_delay_knob(client: openai.OpenAI) -> None:
    started = time.monotonic()
    client.chat.completions.create(model="demo", messages=USER, extra_headers={"x-fake-delay-ms": "300"})
    assert time.monotonic() - started >= 0.25


def test_chunk_delay_knob(client: openai.OpenAI) -> None:
    headers = {"x-fake-chunk-delay-ms": "100", "x-fake-chunks": "3"}
    started = time.monotonic()
    chunks = list(
        client.chat.completions.create(model="demo", messages=USER, stream=True, extra_headers=headers)
    )
    assert len(chunks) == 5
    assert time.monotonic() - started >= 0.3  # 4 delays of 100 ms: before 3 content chunks and the finish


def test_drop_after_in_stream(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    stream = client.chat.completions.create(
        model="demo", messages=USER, stream=True, extra_headers={"x-fake-drop-after": "2"}
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "Echo: ", "hello "]
    wait_for(lambda: fake.streams_dropped == 1)
    assert fake.streams_completed == 0 and fake.streams_aborted == 0


def test_drop_after_zero_and_truncated_unary(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="demo", messages=USER, extra_headers={"x-fake-drop-after": "0"})
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="demo", messages=USER, extra_headers={"x-fake-drop-after": "10"})
    wait_for(lambda: fake.streams_dropped == 2)


def test_invalid_knob_value(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="demo", messages=USER, extra_headers={"x-fake-chunks": "many"})
    assert "x-fake-chunks" in caught.value.message


# --- paths, recording, errors ---------------------------------------------------------------------------


def test_azure_deployment_path(fake: FakeProviderThread) -> None:
    fake.reset()
    with openai.AzureOpenAI(
        azure_endpoint=fake.base_url, api_key="x", api_version="2024-10-21", max_retries=0
    ) as azure:
        resp = azure.chat.completions.create(model="my-dep", messages=USER)
    assert resp.choices[0].message.content == "Echo: hello there world"
    recorded = fake.requests[-1]
    assert recorded.path == "/openai/deployments/my-dep/chat/completions"
    assert recorded.query_string == "api-version=2024-10-21"
    assert recorded.headers["api-key"] == "x"

    path = "/openai/deployments/other-dep/chat/completions?api-version=2024-10-21"
    assert raw(fake, "POST", path, {"messages": USER}).json()["model"] == "other-dep"


def test_prefixed_paths(fake: FakeProviderThread) -> None:
    with openai.OpenAI(base_url=fake.base_url + "/openai/v1", api_key="x", max_retries=0) as prefixed:
        assert prefixed.chat.completions.create(model="demo", messages=USER).object == "chat.completion"
        assert prefixed.completions.create(model="demo", prompt="p").object == "text_completion"
    assert fake.requests[-1].path == "/openai/v1/completions"


def test_request_recording(
    client: openai.OpenAI, fake: FakeProviderThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.chat.completions.create(model="demo", messages=USER, extra_headers={"X-Custom-Header": "Value"})
    recorded = fake.requests[-1]
    assert recorded.method == "POST"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.query_string == ""
    assert recorded.headers["authorization"] == "Bearer x"
    assert recorded.headers["x-custom-header"] == "Value"
    assert all(k == k.lower() for k in recorded.headers)
    assert isinstance(recorded.body, bytes)
    assert recorded.json() == {"model": "demo", "messages": USER}

    monkeypatch.setattr(fake_provider, "MAX_RECORDED", 5)
    for i in range(8):
        raw(fake, "GET", f"/v1/models?i={i}")
    assert [r.query_string for r in fake.requests] == [f"i={i}" for i in range(3, 8)]


def test_unknown_path_and_method(fake: FakeProviderThread) -> None:
    for method, path in (("POST", "/v1/nope"), ("GET", "/v1/chat/completions"), ("DELETE", "/v1/models")):
        resp = raw(fake, method, path)
        assert resp.status_code == 404
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert path in error["message"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_malformed_json(fake: FakeProviderThread, body: bytes) -> None:
    resp = raw(fake, "POST", "/v1/chat/completions", body)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_missing_fields_are_400(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    resp = raw(fake, "POST", "/v1/chat/completions", {"messages": USER})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"
    resp = raw(fake, "POST", "/v1/embeddings", {"model": "e", "input": 3})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "input"


# --- connections and streams ----------------------------------------------------------------------------


def test_connection_counters() -> None:
    with FakeProviderThread() as own:
        conn = http.client.HTTPConnection("127.0.0.1", own.port, timeout=10)
        for _ in range(3):
            assert send(conn, "GET", "/v1/models").status_code == 200
        assert own.connections_opened == 1
        assert own.connections_open == 1
        conn.close()
        wait_for(lambda: own.connections_open == 0)
        assert raw(own, "GET", "/v1/models").status_code == 200
        assert own.connections_opened == 2


def test_client_going_away_counts_aborted_stream() -> None:
    with FakeProviderThread() as own:
        body = orjson.dumps({"model": "demo", "messages": USER, "stream": True})
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"x-fake-chunk-delay-ms: 50\r\nx-fake-chunks: 20\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        with socket.create_connection(("127.0.0.1", own.port)) as sock:
            sock.sendall(request)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        wait_for(lambda: own.streams_aborted == 1)
        assert own.streams_completed == 0
        wait_for(lambda: own.connections_open == 0)


def test_port_in_use_raises() -> None:
    with FakeProviderThread() as first, pytest.raises(OSError):
        FakeProviderThread(port=first.port).start()


# --- asyncio and the command line -----------------------------------------------------------------------


def test_async_provider_on_the_callers_loop() -> None:
    async def scenario() -> tuple[list[str], int]:
        async with FakeProvider() as provider:
            sdk = openai.AsyncOpenAI(base_url=provider.base_url + "/v1", api_key="x", max_retries=0)
            async with sdk:
                replies = await asyncio.gather(
                    *(
                        sdk.chat.completions.create(
                            model="demo", messages=[{"role": "user", "content": f"n{i}"}]
                        )
                        for i in range(20)
                    )
                )
                stream = await sdk.chat.completions.create(model="demo", messages=USER, stream=True)
                parts = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
            return [r.choices[0].message.content or "" for r in replies] + [
                "".join(parts)
            ], provider.streams_completed

    replies, completed = asyncio.run(scenario())
    assert replies == [f"Echo: n{i}" for i in range(20)] + ["Echo: hello there world"]
    assert completed == 1


def test_run_serves_until_sigterm() -> None:
    code = "from sluicegate.testing.fake_provider import run; run('127.0.0.1', 0)"
    src = os.path.dirname(os.path.dirname(sluicegate.__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("fake provider listening on http://127.0.0.1:")
            base_url = line.rsplit(" ", 1)[1]
            with openai.OpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0) as sdk:
                assert [m.id for m in sdk.models.list()] == list(MODELS)
            proc.terminate()
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
