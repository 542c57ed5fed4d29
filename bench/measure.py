"""One measured run: warm-up, the load generator, CPU and memory of the target, noise from other processes."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from procs import CLK_TCK, Proc, all_ticks, busiest, cpu_ticks, rss_mb, system_ticks
from stack import BENCH, Bench, Scenario, Target


def loadgen_argv(bench: Bench, url: str, connections: int, duration: int, body_file: Path) -> list[str]:
    """The load generator's command line (wrk reads the body file and key from the environment)."""
    if bench.loadgen_kind == "wrk":
        return [shutil.which("wrk") or "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                "--timeout", "10s", "-s", str(BENCH / "post.lua"), url]  # fmt: skip
    return [sys.executable, str(BENCH / "loadgen.py"), url, "-c", str(connections), "-d", str(duration),
            "--timeout", "10", "--body-file", str(body_file), "-H", "Content-Type: application/json",
            "-H", f"Authorization: Bearer {bench.key}"]  # fmt: skip


def run_loadgen(bench: Bench, target: Target, scenario: Scenario, duration: int, watch: list[int]) -> dict:
    """Run the load generator once; returns its JSON summary plus CPU and memory figures."""
    body_file = bench.workdir / scenario.body_file
    argv = loadgen_argv(bench, target.url(scenario), scenario.connections, duration, body_file)
    env = dict(os.environ, BENCH_BODY_FILE=str(body_file), BENCH_KEY=bench.key)
    target_pids = target.proc.tree()
    other_pids = [p for p in watch if p not in target_pids]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    sys_before, steal_before = system_ticks()
    target_before, others_before = cpu_ticks(target_pids), cpu_ticks(other_pids)
    snapshot = all_ticks()
    started = time.monotonic()
    gen = bench.procs.start("loadgen", argv, bench.cpu_load, env=env)
    rss_max = rss_mb(target_pids)
    try:
        while gen.popen.poll() is None:
            time.sleep(0.25)
            rss_max = max(rss_max, rss_mb(target_pids))
            if time.monotonic() - started > duration + 60:
                raise RuntimeError(f"the load generator did not finish:\n{gen.tail()}")
    finally:
        bench.procs.stop(gen)
    elapsed = time.monotonic() - started
    others = busiest(snapshot, all_ticks(), {os.getpid(), gen.pid, *target_pids, *other_pids}, elapsed)
    target_cpu = (cpu_ticks(target_pids) - target_before) / CLK_TCK
    others_cpu = (cpu_ticks(other_pids) - others_before) / CLK_TCK
    sys_after, steal_after = system_ticks()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    gen_cpu = _rusage_cpu(children_after) - _rusage_cpu(children_before)
    self_cpu = _rusage_cpu(self_after) - _rusage_cpu(self_before)
    log = gen.log.read_text(errors="replace")
    gen.log.unlink()
    lines = [ln for ln in log.splitlines() if ln.startswith("BENCH_JSON ")]
    if gen.popen.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed ({gen.popen.returncode}):\n{log[-2000:]}")
    summary: dict[str, Any] = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    busy = (sys_after - sys_before) / CLK_TCK
    summary.update(
        elapsed_s=elapsed,
        target_cpu_s=target_cpu,
        gen_cpu_s=gen_cpu,
        foreign_cpu_pct=max(0.0, busy - target_cpu - others_cpu - gen_cpu - self_cpu) / elapsed * 100,
        steal_pct=(steal_after - steal_before) / CLK_TCK / elapsed * 100,
        rss_mb_max=rss_max,
        busiest_others=others,
    )
    return summary


def _rusage_cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def foreign_cpu_pct(ours: list[int], seconds: float) -> float:
    """CPU (% of one CPU) used by processes other than ours and this harness over the next seconds."""
    sys_before, _ = system_ticks()
    ours_before = cpu_ticks(ours) + cpu_ticks([os.getpid()])
    time.sleep(seconds)
    sys_after, _ = system_ticks()
    ours_after = cpu_ticks(ours) + cpu_ticks([os.getpid()])
    return max(0, (sys_after - sys_before) - (ours_after - ours_before)) / CLK_TCK / seconds * 100


def wait_quiet(bench: Bench, ours: list[int]) -> float:
    """Wait (up to --wait-quiet seconds) until other processes use at most --max-foreign of a CPU."""
    deadline = time.monotonic() + bench.args.wait_quiet
    waited = False
    while True:
        foreign = foreign_cpu_pct(ours, 1.0)
        if foreign <= bench.args.max_foreign or time.monotonic() >= deadline:
            if waited:
                print(f"  (other processes now at {foreign:.0f}% of a CPU; measuring)", flush=True)
            return foreign
        if not waited:
            print(f"  (other processes use {foreign:.0f}% of a CPU; waiting up to "
                  f"{bench.args.wait_quiet:.0f}s for a quieter machine)", flush=True)  # fmt: skip
            waited = True


def measure(bench: Bench, target: Target, scenario: Scenario, round_no: int, calibration: dict) -> dict:
    """Wait for a quiet machine, warm up, then one measured run (repeated once if it was disturbed)."""
    watch = bench.upstream.tree() if bench.upstream else []
    for attempt in (1, 2):
        profile = None
        if bench.args.wait_quiet > 0:
            wait_quiet(bench, watch + target.proc.tree())
        if bench.args.warmup > 0:
            run_loadgen(bench, target, scenario, bench.args.warmup, watch)
        if bench.args.py_spy and target.name == "sluicegate":
            profile = start_py_spy(bench, target, scenario, round_no)
        try:
            extra = [profile[0].pid] if profile else []
            raw = run_loadgen(bench, target, scenario, bench.args.duration, watch + extra)
        finally:
            if profile is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    profile[0].popen.wait(30)
                bench.procs.stop(profile[0])
        row = make_row(target, scenario, round_no, attempt, raw, calibration)
        if profile is not None:
            row["profile"] = str(profile[1])
        if raw["foreign_cpu_pct"] <= bench.args.max_foreign or attempt == 2:
            return row
        busiest_others = ", ".join(raw["busiest_others"]) or "short-lived ones"
        print(
            f"  ({target.name} {scenario.name}: other processes used {raw['foreign_cpu_pct']:.0f}% of a CPU "
            f"({busiest_others}); repeating the run once)",
            flush=True,
        )
    raise AssertionError("unreachable")


def start_py_spy(bench: Bench, target: Target, scenario: Scenario, round_no: int) -> tuple[Proc, Path]:
    """py-spy record on the gateway during the measured run (raw folded stacks)."""
    out_dir = Path(bench.args.py_spy).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{scenario.name}-r{round_no}.txt"
    seconds = max(1, bench.args.duration - 2)
    argv = [shutil.which("py-spy") or "py-spy", "record", "--nonblocking", "-r", "199", "-d", str(seconds),
            "-p", str(target.proc.pid), "-f", "raw", "-o", str(out)]  # fmt: skip
    if bench.args.workers > 1:
        argv.insert(2, "--subprocesses")
    proc = bench.procs.start("py-spy", argv, bench.cpu_load)
    time.sleep(0.5)
    return proc, out


def make_row(
    target: Target, scenario: Scenario, round_no: int, attempt: int, raw: dict, calibration: dict
) -> dict:
    """The figures of one measured run, as printed and as stored."""
    seconds = raw["duration_us"] / 1e6
    requests = raw["requests"]
    return {
        "kind": "run",
        "round": round_no,
        "attempt": attempt,
        "scenario": scenario.name,
        "target": target.name,
        "stream": scenario.stream,
        "connections": scenario.connections,
        "duration_s": round(seconds, 3),
        "requests": requests,
        "rps": requests / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non2xx": raw["status"],
        "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        "cpu_us_per_req": raw["target_cpu_s"] * 1e6 / requests if requests else None,
        "target_cpu_pct": raw["target_cpu_s"] / raw["elapsed_s"] * 100,
        "loadgen_cpu_pct": raw["gen_cpu_s"] / raw["elapsed_s"] * 100,
        "foreign_cpu_pct": raw["foreign_cpu_pct"],
        "steal_pct": raw["steal_pct"],
        "rss_mb_max": raw["rss_mb_max"],
        "calibration_ms": calibration,
        "loadgen": raw,
    }


def calibrate(cpus: list[int]) -> dict[str, float]:
    """Milliseconds for a fixed pure-Python loop on each CPU: how fast the (shared) host is right now."""
    original = os.sched_getaffinity(0)
    result = {}
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            start = time.perf_counter()
            total = 0
            for i in range(5_000_000):
                total += i
            result[f"cpu{cpu}"] = round((time.perf_counter() - start) * 1000, 1)
    finally:
        os.sched_setaffinity(0, original)
    return result
