"""What the benchmark runs: scenarios, the upstream, Sluicegate and LiteLLM, and the answer checks."""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import fixtures
from procs import Proc, Procs, free_port, wait_ready

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LITELLM_BIN = BENCH / ".venv-litellm" / "bin" / "litellm"


@dataclass(frozen=True)
class Scenario:
    """One kind of load: which body, how many connections."""

    name: str
    stream: bool
    connections: int
    meaning: str


@dataclass
class Target:
    """Something the load generator is pointed at: the upstream itself, Sluicegate or LiteLLM."""

    name: str
    json_url: str
    sse_url: str
    proc: Proc  # the process whose CPU and memory are measured

    def url(self, scenario: Scenario) -> str:
        """The URL for this scenario's requests."""
        return self.sse_url if scenario.stream else self.json_url


@dataclass
class Bench:
    """The tools found, the layout chosen and the processes started."""

    args: argparse.Namespace
    workdir: Path
    procs: Procs
    upstream_kind: str
    loadgen_kind: str
    pin: bool
    cpu_load: str | None  # upstream + load generator
    cpu_gateway: str | None  # the proxy under test
    key: str = field(default_factory=lambda: secrets.token_hex(32))
    upstream: Proc | None = None
    json_port: int = 0
    sse_port: int = 0
    rows: list[dict] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)  # every port we listened on, checked closed at the end
    results_file: Path | None = None


def scenarios_for(args: argparse.Namespace) -> list[Scenario]:
    """The requested scenarios, in the order given."""
    known = {
        "json": Scenario("json", False, args.connections, "non-streaming, many connections: throughput"),
        "stream": Scenario(
            "stream", True, args.connections, "SSE relay (nginx: one 51-event stream per request): throughput"
        ),
        "json1": Scenario("json1", False, 1, "non-streaming, one connection: the latency floor"),
    }
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [known[n] for n in names]


def prepare_files(bench: Bench) -> None:
    """Request bodies, the SSE file and the configs, all in the temporary work dir."""
    work = bench.workdir
    (work / "www").mkdir()
    (work / "tmp").mkdir()
    (work / "www" / "stream.sse").write_bytes(fixtures.sse_body())
    (work / "request.json").write_bytes(fixtures.request_body(stream=False))
    (work / "request_stream.json").write_bytes(fixtures.request_body(stream=True))


def start_upstream(bench: Bench) -> None:
    """nginx with the fixed answers, or the fake provider; pinned to the load CPU."""
    work = bench.workdir
    if bench.upstream_kind == "nginx":
        bench.json_port, bench.sse_port = free_port(), free_port()
        bench.ports += [bench.json_port, bench.sse_port]
        conf = work / "nginx.conf"
        conf.write_text(fixtures.nginx_conf(work, bench.json_port, bench.sse_port))
        argv = [shutil.which("nginx") or "nginx", "-p", str(work), "-c", str(conf)]
        bench.upstream = bench.procs.start("nginx", argv, bench.cpu_load, stop_signal=signal.SIGQUIT)
        wait_ready(bench.upstream, bench.json_port, 10)
        wait_ready(bench.upstream, bench.sse_port, 10)
    else:
        bench.json_port = bench.sse_port = free_port()
        bench.ports.append(bench.json_port)
        argv = [sys.executable, "-m", "sluicegate", "fake-provider", "--host", "127.0.0.1",
                "--port", str(bench.json_port)]  # fmt: skip
        bench.upstream = bench.procs.start("fake-provider", argv, bench.cpu_load, env=gateway_env())
        wait_ready(bench.upstream, bench.json_port, 30)


def gateway_env() -> dict[str, str]:
    """The environment for `python -m sluicegate`: our src/ first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    return env


def direct_target(bench: Bench) -> Target:
    """The upstream itself."""
    assert bench.upstream is not None
    return Target("direct", _url(bench.json_port), _url(bench.sse_port), bench.upstream)


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/chat/completions"


def start_sluicegate(bench: Bench) -> Target:
    """`sluicegate run` on the gateway CPU, routing both models to the upstream."""
    config = bench.workdir / "sluicegate.yaml"
    config.write_text(fixtures.gateway_config(bench.json_port, bench.sse_port))
    port, admin = free_port(), free_port()
    bench.ports += [port, admin]
    argv = [sys.executable, "-m", "sluicegate", "run", "-c", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--admin-port", str(admin), "--workers", str(bench.args.workers),
            "--log-level", "warning", *shlex.split(bench.args.gateway_args)]  # fmt: skip
    proc = bench.procs.start("sluicegate", argv, bench.cpu_gateway, env=gateway_env())
    wait_ready(proc, port, 60)
    wait_ready(proc, admin, 10, path="/ready")
    return Target("sluicegate", _url(port), _url(port), proc)


def start_litellm(bench: Bench) -> Target:
    """LiteLLM proxy, offline (perf-probe.md §6), on the gateway CPU, pointed at the same upstream."""
    config = bench.workdir / "litellm.yaml"
    config.write_text(fixtures.litellm_config(bench.json_port, bench.sse_port))
    port = free_port()
    bench.ports.append(port)
    env = dict(os.environ)
    env.update(
        LITELLM_TELEMETRY="False",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        DISABLE_ADMIN_UI="True",
        NO_DOCS="True",
        NO_REDOC="True",
        LITELLM_MASTER_KEY=bench.key,
    )
    for name in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL", "OPENAI_API_KEY"):
        env.pop(name, None)
    argv = [str(LITELLM_BIN), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    proc = bench.procs.start("litellm", argv, bench.cpu_gateway, env=env, cwd=bench.workdir)
    wait_ready(proc, port, 180, path="/health/liveliness")
    return Target("litellm", _url(port), _url(port), proc)


def smoke_check(bench: Bench, target: Target, scenarios: list[Scenario]) -> None:
    """Each scenario's request must come back 200 and complete: a benchmark of errors is worthless."""
    for scenario in scenarios:
        body_file = bench.workdir / ("request_stream.json" if scenario.stream else "request.json")
        url = target.url(scenario).removeprefix("http://")
        hostport, _, path = url.partition("/")
        host, _, port = hostport.partition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bench.key}"}
            conn.request("POST", "/" + path, body=body_file.read_bytes(), headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        problem = None
        if response.status != 200:
            problem = f"status {response.status}"
        elif scenario.stream and not (data.rstrip().endswith(b"data: [DONE]") and b'"usage":{' in data):
            problem = "the stream does not end with a usage chunk and data: [DONE]"
        elif not scenario.stream and b'"choices"' not in data:
            problem = "no choices in the answer"
        if problem:
            raise RuntimeError(f"{target.name} {scenario.name}: {problem}: {data[:300]!r}")
