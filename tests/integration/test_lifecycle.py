"""Streams, connections and processes: drain on SIGTERM, disconnects, back-pressure, reuse, workers, demo."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest
from aiohttp import web

from harness import GatewayProcess, backend_yaml, wait_for_port
from sluicegate.testing import FakeProviderThread

ROUTES = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: life}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: demo}}]}}]
      backendRefs: [{{name: fake}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: slow}}]}}]
      timeouts: {{request: 500ms}}
      backendRefs: [{{name: fake}}]
{fake}
"""


@pytest.fixture(scope="module")
def gateway(fake: FakeProviderThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        ROUTES.format(fake=backend_yaml("fake", fake.port)), tmp_path_factory.mktemp("l")
    )
    yield process
    assert process.stop() == 0


def stream_request(model: str, text: str, headers: dict[str, str]) -> bytes:
    body = orjson.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": text}]})
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        + head
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


def wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_thousand_sequential_requests_reuse_connections(
    gateway: GatewayProcess, fake: FakeProviderThread
) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    fake.reset()
    for i in range(1000):
        reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": f"r{i}"}])
        assert reply.choices[0].message.content == f"Echo: r{i}"
    assert len(fake.requests) == 1000
    assert fake.provider.connections_opened <= 3


def test_client_disconnect_mid_stream_frees_upstream(
    gateway: GatewayProcess, fake: FakeProviderThread
) -> None:
    fake.reset()
    open_before = fake.provider.connections_open
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(stream_request("demo", " ".join(["w"] * 40), {"x-fake-chunk-delay-ms": "100"}))
        assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
        assert wait_until(lambda: fake.provider.connections_open > open_before or bool(fake.requests))
    # The client is gone: the gateway must drop the upstream stream rather than read it to the end.
    assert wait_until(lambda: fake.provider.streams_aborted == 1, timeout=3.0)
    assert fake.provider.streams_completed == 0


def test_upstream_drop_mid_stream_breaks_client_stream(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    received = []
    with pytest.raises((openai.APIError, Exception)) as caught:
        for chunk in client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "a b c d e f"}],
            stream=True,
            extra_headers={"x-fake-drop-after": "2"},
        ):
            received.append(chunk)
    assert not isinstance(caught.value, AssertionError)
    assert 1 <= len(received) <= 4
    reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "ok"}])
    assert reply.choices[0].message.content == "Echo: ok"


def test_request_timeout_is_504(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="slow",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-delay-ms": "3000"},
        )
    assert caught.value.status_code == 504
    assert "within 0.5s" in caught.value.message


def test_sigterm_drains_in_flight_stream(fake: FakeProviderThread, tmp_path: Path) -> None:
    process = GatewayProcess(ROUTES.format(fake=backend_yaml("fake", fake.port)), tmp_path)
    with socket.create_connection(("127.0.0.1", process.port), timeout=10) as s:
        s.sendall(
            stream_request(
                "demo", "one two three four five six", {"x-fake-chunk-delay-ms": "150", "connection": "close"}
            )
        )
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 ")
        process.proc.send_signal(15)
        # New connections are refused while the stream drains.
        assert wait_until(lambda: _refused(process.port), timeout=5)
        answer = first
        while chunk := s.recv(65536):
            answer += chunk
    assert b"data: [DONE]" in answer and answer.endswith(b"0\r\n\r\n")
    assert process.proc.wait(10) == 0


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return True
    return False


class FloodUpstream:
    """An OpenAI-ish backend that streams `total` bytes of SSE as fast as the socket takes them."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.done = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._main, args=(ready,), daemon=True).start()
        ready.wait()

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            event = b"data: " + b"x" * 65000 + b"\n\n"
            while self.sent < self.total:
                await response.write(event)
                self.sent += len(event)
            await response.write(b"data: [DONE]\n\n")
            self.done.set()
            return response

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]

        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()


def test_slow_reader_gets_back_pressure(tmp_path: Path) -> None:
    total = 128 * 1024 * 1024
    flood = FloodUpstream(total)
    process = GatewayProcess(ROUTES.format(fake=backend_yaml("fake", flood.port)), tmp_path)
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.settimeout(30)
            s.connect(("127.0.0.1", process.port))
            s.sendall(stream_request("demo", "flood", {"connection": "close"}))
            assert s.recv(1024).startswith(b"HTTP/1.1 200 ")
            time.sleep(1.5)  # we read nothing; the gateway must stop reading the backend
            sent_while_paused = flood.sent
            assert sent_while_paused < 48 * 1024 * 1024, sent_while_paused
            received = 0
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        assert flood.done.is_set() and received >= total
    finally:
        assert process.stop() == 0
        flood.loop.call_soon_threadsafe(flood.loop.stop)


def test_workers_share_the_port(fake: FakeProviderThread, tmp_path: Path) -> None:
    process = GatewayProcess(
        ROUTES.format(fake=backend_yaml("fake", fake.port)), tmp_path, ["--workers", "2"]
    )
    try:
        children = Path(f"/proc/{process.proc.pid}/task/{process.proc.pid}/children").read_text().split()
        assert len(children) == 2
        client = openai.OpenAI(base_url=process.url + "/v1", api_key="k", max_retries=0)
        for i in range(20):
            assert (
                client.chat.completions.create(model="demo", messages=[{"role": "user", "content": f"w{i}"}])
                .choices[0]
                .message.content
                == f"Echo: w{i}"
            )
    finally:
        assert process.stop() == 0
    assert all(not Path(f"/proc/{child}").exists() for child in children)


def test_offline_demo_with_no_config_and_no_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_", "ANTHROPIC_"))}
    process = GatewayProcess(None, tmp_path, env=env)
    try:
        client = openai.OpenAI(base_url=process.url + "/v1", api_key="anything", max_retries=0)
        reply = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hello demo"}]
        )
        assert reply.choices[0].message.content == "Echo: hello demo"
        assert "demo" in [m.id for m in client.models.list()]
    finally:
        assert process.stop() == 0
    assert "OFFLINE DEMO" in process.output()


def test_autoconfig_from_openai_env(fake: FakeProviderThread, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_", "ANTHROPIC_"))}
    env.update(OPENAI_API_KEY="sk-from-env", OPENAI_BASE_URL=fake.base_url + "/v1")
    process = GatewayProcess(None, tmp_path, env=env)
    try:
        client = openai.OpenAI(base_url=process.url + "/v1", api_key="anything", max_retries=0)
        reply = client.chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "env"}]
        )
        assert reply.choices[0].message.content == "Echo: env"
        assert fake.requests[-1].headers["authorization"] == "Bearer sk-from-env"
    finally:
        assert process.stop() == 0
    assert "sk-from-env" not in process.output()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    return subprocess.run(
        [sys.executable, "-m", "sluicegate", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_cli_version_and_check(fake: FakeProviderThread, tmp_path: Path) -> None:
    version = run_cli("version")
    assert version.returncode == 0 and version.stdout.startswith("sluicegate ")
    good = tmp_path / "good.yaml"
    good.write_text(ROUTES.format(fake=backend_yaml("fake", fake.port, api_key="sk-never-printed")))
    checked = run_cli("check", str(good))
    assert checked.returncode == 0, checked.stderr
    assert "default/fake" in checked.stdout and "sk-never-printed" not in checked.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        ROUTES.format(fake="").replace("backendRefs: [{name: fake}]", "backendRefs: [{name: nope}]", 1)
    )
    failed = run_cli("check", str(bad))
    assert failed.returncode == 1
    assert "bad.yaml" in failed.stderr and "AIGatewayRoute default/life" in failed.stderr
    assert "spec.rules[0].backendRefs[0]" in failed.stderr


def test_run_refuses_broken_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: x}\n"
        "spec: {rules: [], nonsense: 1}\n"
    )
    result = run_cli("run", "-c", str(bad), "--port", "0")
    assert result.returncode == 1
    assert "spec.nonsense" in result.stderr and "Traceback" not in result.stderr


def test_fake_provider_command(tmp_path: Path) -> None:
    from harness import free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluicegate", "fake-provider", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, proc=proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        assert (
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "direct"}])
            .choices[0]
            .message.content
            == "Echo: direct"
        )
    finally:
        proc.terminate()
        proc.wait(10)


def test_sighup_reloads_config_and_rotates_keys(fake: FakeProviderThread, tmp_path: Path) -> None:
    config = ROUTES.format(fake=backend_yaml("fake", fake.port, api_key="sk-first-key"))
    process = GatewayProcess(config, tmp_path)
    path = Path(process.proc.args[-1])
    client = openai.OpenAI(base_url=process.url + "/v1", api_key="k", max_retries=0)
    try:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "one"}])
        assert fake.requests[-1].headers["authorization"] == "Bearer sk-first-key"

        rotated = config.replace("sk-first-key", "sk-second-key").replace("value: slow}", "value: added}")
        path.write_text(rotated)
        process.proc.send_signal(signal.SIGHUP)

        def added_serves() -> bool:
            try:
                client.chat.completions.create(model="added", messages=[{"role": "user", "content": "x"}])
            except openai.NotFoundError:
                return False
            return True

        assert wait_until(added_serves, timeout=10)
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "two"}])
        assert fake.requests[-1].headers["authorization"] == "Bearer sk-second-key"

        path.write_text(rotated.replace("backendRefs: [{name: fake}]", "backendRefs: [{name: gone}]", 1))
        process.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in process.output(), timeout=10)
        reply = client.chat.completions.create(model="added", messages=[{"role": "user", "content": "kept"}])
        assert reply.choices[0].message.content == "Echo: kept"  # the running config stays
    finally:
        assert process.stop() == 0
    assert "sk-second-key" not in process.output() and "sk-first-key" not in process.output()
