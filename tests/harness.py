"""Helpers shared by the tests: free ports, a gateway subprocess, raw HTTP exchanges."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int,
    timeout: float = 15.0,
    proc: subprocess.Popen | None = None,
    output: Callable[[], str] | None = None,
) -> None:
    """Block until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = output() if output is not None else proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"gateway exited with {proc.returncode} before listening:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on port {port} after {timeout}s")


def backend_yaml(
    name: str,
    port: int,
    schema: str = "OpenAI",
    extra_schema: str = "",
    api_key: str | None = None,
    key_type: str = "APIKey",
) -> str:
    """An AIServiceBackend + Backend (+ key Secret and policy) pointing at 127.0.0.1:port."""
    text = f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
  schema: {{name: {schema}{extra_schema}}}
  backendRef: {{name: {name}-backend, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}-backend}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
"""
    if api_key is not None:
        field = {"APIKey": "apiKey", "AzureAPIKey": "azureAPIKey", "AnthropicAPIKey": "anthropicAPIKey"}[
            key_type
        ]
        text += f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-key}}
type: Opaque
stringData: {{apiKey: "{api_key}"}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}-policy}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
  type: {key_type}
  {field}:
    secretRef: {{name: {name}-key}}
"""
    return text


class GatewayProcess:
    """`sluicegate run` as a subprocess on free ports; stopped with SIGTERM."""

    def __init__(
        self, config: str | None, tmp_path: Path, args: list[str] = (), env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        command = [
            sys.executable,
            "-m",
            "sluicegate",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
            *args,
        ]
        if config is not None:
            path = tmp_path / f"gateway-{self.port}.yaml"
            path.write_text(config)
            command += ["-c", str(path)]
        full_env = dict(os.environ if env is None else env)
        src = str(Path(__file__).resolve().parents[1] / "src")
        full_env["PYTHONPATH"] = src + os.pathsep + full_env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)  # a full pipe blocks the gateway
        self._reader.start()
        wait_for_port(self.port, proc=self.proc, output=self.output)
        wait_for_port(self.admin_port, proc=self.proc, output=self.output)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    def output(self) -> str:
        """Everything the process printed so far (all of it once it has stopped)."""
        if self.proc.poll() is not None:
            self._reader.join(timeout=5)
        return "".join(self._lines)


def exchange(port: int, data: bytes, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read what comes back until close or timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not read_until_close:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)
