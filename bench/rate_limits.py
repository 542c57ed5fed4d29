"""What a configured rate limit costs: one load through Sluicegate with no limit, a limit in memory, in Redis.

    python bench/rate_limits.py [--duration 10] [--connections 50] [--rounds 2]

Upstream: nginx with bench/fixtures.py's fixed answers. Load: wrk with bench/post.lua. The gateway gets
the second CPU; nginx, wrk and redis-server share the first (taskset). The limit is the usual token budget:
a Global rule over all traffic (never exhausted) whose cost is the response's total tokens, so every request
is checked before and charged after. Prints requests/s and latency per variant and the ratio to no limit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import fixtures  # noqa: E402  (bench/ is not a package)

LIMIT = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: budget}
spec:
  targetRefs: [{name: bench-json, kind: AIGatewayRoute, group: aigateway.envoyproxy.io}]
  rateLimit:
    type: Global
    global:
      rules:
        - limit: {requests: 4294967295, unit: Hour}
          cost:
            request: {from: Number, number: 0}
            response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: total}}
"""
COSTS = """  llmRequestCosts: [{metadataKey: total, type: TotalToken}]
  rules:"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu is not None and shutil.which("taskset") else argv


def config(json_port: int, sse_port: int, limited: bool) -> str:
    text = fixtures.gateway_config(json_port, sse_port)
    if not limited:
        return text
    head, tail = text.split("---\n", 1)
    return head.replace("  rules:", COSTS, 1) + "---\n" + tail + LIMIT


def wrk(url: str, connections: int, duration: int, body: Path, cpu: str | None) -> dict:
    argv = pinned(cpu, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
                        "-s", str(BENCH / "post.lua"), url])  # fmt: skip
    env = dict(os.environ, BENCH_BODY_FILE=str(body), BENCH_KEY="sk-bench")
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=duration + 60).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    return json.loads(line.removeprefix("BENCH_JSON "))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    for tool in ("nginx", "wrk", "redis-server"):
        if not shutil.which(tool):
            print(f"{tool} is needed (apt-get install nginx wrk redis-server)", file=sys.stderr)
            return 1
    two = (os.cpu_count() or 1) >= 2
    load_cpu, gateway_cpu = ("0", "1") if two else (None, None)
    work = Path(tempfile.mkdtemp(prefix="sluicegate-rl-bench-"))
    (work / "www").mkdir()
    (work / "tmp").mkdir()
    (work / "www" / "stream.sse").write_bytes(fixtures.sse_body())
    body = work / "request.json"
    body.write_bytes(fixtures.request_body(stream=False))
    procs: list[subprocess.Popen] = []
    try:
        json_port, sse_port, redis_port = free_port(), free_port(), free_port()
        (work / "nginx.conf").write_text(fixtures.nginx_conf(work, json_port, sse_port))
        nginx = ["nginx", "-p", str(work), "-c", str(work / "nginx.conf")]
        procs.append(subprocess.Popen(pinned(load_cpu, nginx)))
        procs.append(subprocess.Popen(
            pinned(load_cpu, ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(work)]),
            stdout=subprocess.DEVNULL))  # fmt: skip
        wait_port(json_port)
        wait_port(redis_port)
        variants = {
            "no limit": (False, []),
            "limit, memory": (True, []),
            "limit, Redis": (True, ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]),
        }
        results: dict[str, list[dict]] = {name: [] for name in variants}
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        for _ in range(args.rounds):
            for name, (limited, extra) in variants.items():
                path = work / "gw.yaml"
                path.write_text(config(json_port, sse_port, limited))
                port, admin = free_port(), free_port()
                argv = [sys.executable, "-m", "sluicegate", "run", "-c", str(path), "--host", "127.0.0.1",
                        "--port", str(port), "--admin-port", str(admin)]  # fmt: skip
                argv += ["--log-level", "warning", *extra]
                gateway = subprocess.Popen(pinned(gateway_cpu, argv), env=env)
                try:
                    wait_port(port)
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    wrk(url, args.connections, args.warmup, body, load_cpu)
                    before = cpu_seconds(gateway.pid)
                    result = wrk(url, args.connections, args.duration, body, load_cpu)
                    result["cpu_us"] = (cpu_seconds(gateway.pid) - before) / max(result["requests"], 1) * 1e6
                    results[name].append(result)
                finally:
                    gateway.send_signal(signal.SIGTERM)
                    gateway.wait(30)
        base = None
        print(f"{'variant':<16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11} {'errors':>7} "
              f"{'vs no limit':>12}")  # fmt: skip
        for name, runs in results.items():
            rps = sorted(r["requests"] / (r["duration_us"] / 1e6) for r in runs)[len(runs) // 2]
            p50 = sorted(r["p50_us"] for r in runs)[len(runs) // 2] / 1000
            p99 = sorted(r["p99_us"] for r in runs)[len(runs) // 2] / 1000
            cpu = sorted(r["cpu_us"] for r in runs)[len(runs) // 2]
            errors = sum(r["status"] + r["connect"] + r["read"] + r["timeout"] for r in runs)
            base = base or rps
            row = f"{name:<16} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>11.1f} {errors:>7}"
            print(f"{row} {rps / base:>11.2f}x")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGQUIT if proc is procs[0] else signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
