"""Issue 9's scenarios that are not a wrk load: slow streams, RSS (idle, open streams, soak), cold start.

Each returns a record ({"kind": "special", "scenario": ...}) that run.py stores and report.py renders.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import time

import fixtures
from measure import loadgen_argv, wait_quiet
from procs import free_port, rss_mb
from slow_streams import raise_fd_limit
from stack import BENCH, Bench, Scenario, Target, gateway_argv, gateway_env

SLOW_STREAMS = 1000
__all__ = ["cold_start", "idle_rss", "raise_fd_limit", "slow_streams", "soak"]


def idle_rss(target: Target, settle: float = 1.0) -> float:
    """RSS (MiB, the whole process tree) of a freshly started, not yet used proxy."""
    time.sleep(settle)
    return rss_mb(target.proc.tree())


def slow_streams(bench: Bench, target: Target, round_no: int) -> dict:
    """1,000 concurrent streams of 50 events 20 ms apart through `target`; the gateway's max RSS meanwhile."""
    if target.name == "direct":
        url = f"http://127.0.0.1:{bench.slow_port}/v1/chat/completions"
    else:
        url = target.json_url
    argv = [sys.executable, str(BENCH / "slow_streams.py"), "client", url, "--streams", str(SLOW_STREAMS),
            "--body-file", str(bench.workdir / "request_slow.json"), "--key", bench.key,
            "--events", str(fixtures.SLOW_EVENTS), "--delay-ms", str(fixtures.SLOW_DELAY_MS)]  # fmt: skip
    watched = target.proc if target.name != "direct" else bench.slow_upstream
    assert watched is not None
    if bench.args.wait_quiet > 0:  # the same quiet-machine gate as the wrk runs
        wait_quiet(bench, [*watched.tree(), *(bench.upstream.tree() if bench.upstream else [])])
    client = bench.procs.start("slow-client", argv, bench.cpu_load)
    rss_max = rss_mb(watched.tree())
    started = time.monotonic()
    try:
        while client.popen.poll() is None:
            time.sleep(0.05)
            rss_max = max(rss_max, rss_mb(watched.tree()))
            if time.monotonic() - started > 120:
                raise RuntimeError(f"the slow-stream client did not finish:\n{client.tail()}")
    finally:
        bench.procs.stop(client)
    log = client.log.read_text(errors="replace")
    client.log.unlink()
    lines = [ln for ln in log.splitlines() if ln.startswith("BENCH_JSON ")]
    if not lines:
        raise RuntimeError(f"slow-stream client failed:\n{log[-2000:]}")
    result = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    return {"kind": "special", "scenario": "slow", "round": round_no, "target": target.name,
            "rss_mb_max": rss_max, **result}  # fmt: skip


def _post_ok(port: int, body: bytes, key: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def cold_start(bench: Bench, runs: int = 5) -> dict:
    """Seconds from starting `sluicegate run` to the first 200 on /v1/chat/completions; median of `runs`."""
    body = (bench.workdir / "request.json").read_bytes()
    times = []
    for i in range(runs):
        port, admin = free_port(), free_port()
        argv = gateway_argv(bench, port, admin)
        if bench.cpu_gateway is not None:
            argv = ["taskset", "-c", bench.cpu_gateway, *argv]
        started = time.monotonic()
        proc = bench.procs.start(f"sluicegate-cold{i}", argv, None, env=gateway_env(bench))
        try:
            while not _post_ok(port, body, bench.key):
                if not proc.alive():
                    raise RuntimeError(f"sluicegate exited during the cold start:\n{proc.tail()}")
                if time.monotonic() - started > 60:
                    raise RuntimeError(f"no 200 within 60 s of starting sluicegate:\n{proc.tail()}")
                time.sleep(0.005)
            times.append(time.monotonic() - started)
        finally:
            bench.procs.stop(proc, grace=10)
    return {"kind": "special", "scenario": "cold", "target": "sluicegate", "runs_s": times,
            "median_s": statistics.median(times)}  # fmt: skip


def soak(bench: Bench, target: Target, minutes: float, scenario: Scenario) -> dict:
    """json load for `minutes`, RSS sampled; growth from the sample at 10% of the soak to the end."""
    seconds = max(10, int(minutes * 60))
    body_file = bench.workdir / scenario.body_file
    argv = loadgen_argv(bench, target.url(scenario), scenario.connections, seconds, body_file)
    env = dict(os.environ, BENCH_BODY_FILE=str(body_file), BENCH_KEY=bench.key)
    gen = bench.procs.start("soak-loadgen", argv, bench.cpu_load, env=env)
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        while gen.popen.poll() is None:
            samples.append((time.monotonic() - started, rss_mb(target.proc.tree())))
            time.sleep(5 if seconds > 60 else 1)
            if time.monotonic() - started > seconds + 60:
                raise RuntimeError(f"the soak load generator did not finish:\n{gen.tail()}")
    finally:
        bench.procs.stop(gen)
    log = gen.log.read_text(errors="replace")
    gen.log.unlink()
    lines = [ln for ln in log.splitlines() if ln.startswith("BENCH_JSON ")]
    raw = json.loads(lines[-1].removeprefix("BENCH_JSON ")) if lines else {}
    samples.append((time.monotonic() - started, rss_mb(target.proc.tree())))
    base = next((rss for t, rss in samples if t >= seconds * 0.1), samples[0][1])
    end = samples[-1][1]
    requests = raw.get("requests", 0)
    return {
        "kind": "special",
        "scenario": "soak",
        "target": target.name,
        "minutes": seconds / 60,
        "rss_start_mb": samples[0][1],
        "rss_base_mb": base,
        "rss_end_mb": end,
        "rss_max_mb": max(r for _, r in samples),
        "growth_pct": (end - base) / base * 100 if base else None,
        "requests": requests,
        "rps": requests / (raw["duration_us"] / 1e6) if raw.get("duration_us") else 0.0,
        "errors": raw.get("status", 0) + raw.get("connect", 0) + raw.get("read", 0) + raw.get("timeout", 0),
        "samples": samples,
    }
