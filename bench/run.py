"""Benchmark Sluicegate against a direct call to the same upstream (and, with --litellm, against LiteLLM).

    python bench/run.py [--duration 10] [--connections 50] [--scenarios json,stream,json1] [--litellm]

Upstream: nginx serving fixed answers (else the built-in fake provider). Load: wrk with bench/post.lua
(else bench/loadgen.py). Upstream and load generator share the first CPU, the gateway gets the second
(`taskset`), so the gateway's numbers are one core's worth. See bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import fixtures
import issue9
from measure import calibrate, measure
from procs import Procs, port_open
from report import COLUMNS, machine, markdown_table, print_summary, row_cells, summarize, versions
from stack import (
    BENCH,
    LITELLM_BIN,
    LITELLM_REQUIREMENT,
    SPECIAL_SCENARIOS,
    Bench,
    Scenario,
    Target,
    build_compiled,
    direct_target,
    prepare_files,
    scenarios_for,
    smoke_check,
    start_litellm,
    start_redis,
    start_sluicegate,
    start_upstream,
)

ALL_SCENARIOS = ("json", "json1", "stream", "bedrock", "redis", "guardrails", "slow", "rss", "cold")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run (default 2)")
    p.add_argument("--connections", type=int, default=50, help="connections for json and stream (default 50)")
    p.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"comma-separated, any of: {', '.join(ALL_SCENARIOS)} (default: all)",
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="repeat everything, restarting the proxies (default 3)"
    )
    p.add_argument(
        "--soak-minutes", type=float, default=10, help="rss: minutes of json load for the soak (default 10)"
    )
    p.add_argument("--litellm", action="store_true", help=f"also measure LiteLLM from {LITELLM_BIN}")
    p.add_argument("--no-direct", action="store_true", help="skip the direct runs")
    p.add_argument("--no-gateway", action="store_true", help="skip the Sluicegate runs")
    p.add_argument(
        "--direct-own-core",
        action="store_true",
        help="also run direct with the upstream moved to the gateway's CPU (what crossing CPUs costs)",
    )
    p.add_argument("--workers", type=int, default=1, help="Sluicegate worker processes (default 1)")
    p.add_argument(
        "--gateway-args",
        default="",
        metavar="ARGS",
        help="extra arguments for `sluicegate run`, one string, e.g. --gateway-args='--access-log off'",
    )
    p.add_argument("--upstream", choices=["auto", "nginx", "fake"], default="auto")
    p.add_argument("--loadgen", choices=["auto", "wrk", "bundled"], default="auto")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--no-install",
        action="store_true",
        help="install nothing: no apt-get for missing nginx/wrk (their fallbacks run), no LiteLLM venv",
    )
    p.add_argument(
        "--max-foreign",
        type=float,
        default=10.0,
        help="repeat a run once if other processes used more than this %% of a CPU (default 10)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=20.0,
        help="before each run, wait up to this many seconds for other processes to calm down (default 20)",
    )
    p.add_argument("--py-spy", metavar="DIR", help="record py-spy raw profiles of Sluicegate runs into DIR")
    p.add_argument(
        "--results", metavar="PATH", help="JSON lines file (default bench/results/<timestamp>.jsonl)"
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep the temporary dir (configs, logs)")
    p.add_argument(
        "--source",
        action="store_true",
        help="run Sluicegate from src/ as pure Python, not as `pip install .` builds it (mypyc-compiled)",
    )
    return p.parse_args(argv)


def choose_layout(args: argparse.Namespace) -> tuple[bool, str | None, str | None]:
    """Pin when taskset exists and at least 2 CPUs are usable: load on the first, gateway on the second."""
    cpus = sorted(os.sched_getaffinity(0))
    if args.no_pin or shutil.which("taskset") is None or len(cpus) < 2:
        return False, None, None
    return True, str(cpus[0]), str(cpus[1])


def install_tools(args: argparse.Namespace) -> None:
    """apt-get install nginx and wrk when missing and wanted, as root or with password-less sudo; when that
    cannot be done the fallbacks run (and the output says so)."""
    wanted = [
        tool for tool, kind in (("nginx", args.upstream), ("wrk", args.loadgen)) if kind in ("auto", tool)
    ]
    missing = [tool for tool in wanted if shutil.which(tool) is None]
    if not missing or args.no_install:
        return
    if shutil.which("apt-get") is None:
        print(f"{' and '.join(missing)} not installed and no apt-get here: using the fallbacks", flush=True)
        return
    if os.geteuid() == 0:
        sudo = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        sudo = ["sudo", "-n"]
    else:
        print(
            f"{' and '.join(missing)} not installed, and apt-get needs root: using the fallbacks", flush=True
        )
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    print(f"installing {' and '.join(missing)}: {shlex.join(install)}", flush=True)
    if subprocess.run(install, env=env).returncode != 0:  # a fresh machine's package lists may be empty
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env)
        subprocess.run(install, env=env)
    still = [tool for tool in missing if shutil.which(tool) is None]
    if still:
        print(f"apt-get did not install {' and '.join(still)}: using the fallbacks", flush=True)


def install_litellm(args: argparse.Namespace) -> None:
    """For --litellm: create LiteLLM's own venv (bench/.venv-litellm, the pinned version) if missing."""
    if not args.litellm or LITELLM_BIN.exists():
        return
    venv = LITELLM_BIN.parent.parent
    create = [sys.executable, "-m", "venv", str(venv)]
    install = [str(venv / "bin" / "pip"), "install", "-q", LITELLM_REQUIREMENT]
    commands = f"{shlex.join(create)} && {shlex.join(install)}"
    if args.no_install:
        raise SystemExit(f"--litellm: {LITELLM_BIN} not found; create it with\n  {commands}")
    print(f"installing LiteLLM into its own venv: {commands}", flush=True)
    if subprocess.run(create).returncode != 0 or subprocess.run(install).returncode != 0:
        raise SystemExit(f"--litellm: could not install {LITELLM_REQUIREMENT} into {venv} (see above)")


def pick(kind: str, tool: str, fallback: str) -> str:
    """The tool when asked for or installed, else the fallback."""
    if kind == "auto":
        return tool if shutil.which(tool) else fallback
    if kind == tool and shutil.which(tool) is None:
        raise SystemExit(f"{tool} is not installed")
    return kind


def main(argv: list[str] | None = None) -> int:
    """Run the whole benchmark and print the tables."""
    args = parse_args(argv)
    scenarios = scenarios_for(args)
    issue9.raise_fd_limit(65536)  # 1,000 slow streams: client, gateway and upstream each hold 1,000+ sockets
    if args.py_spy and shutil.which("py-spy") is None:
        raise SystemExit("--py-spy: py-spy is not installed (pip install py-spy)")
    install_litellm(args)  # after the checks that refuse at once: an install takes a minute
    install_tools(args)
    pin, cpu_load, cpu_gateway = choose_layout(args)
    workdir = Path(tempfile.mkdtemp(prefix="sluicegate-bench-"))
    workdir.chmod(0o755)  # nginx workers run as nobody and must read the SSE file
    upstream, loadgen = pick(args.upstream, "nginx", "fake"), pick(args.loadgen, "wrk", "bundled")
    bench = Bench(args, workdir, Procs(workdir), upstream, loadgen, pin, cpu_load, cpu_gateway)
    if not args.source and not args.no_gateway:
        bench.gateway_code = build_compiled()
    bench.special = [s.strip() for s in args.scenarios.split(",") if s.strip() in SPECIAL_SCENARIOS]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bench.results_file = Path(args.results) if args.results else BENCH / "results" / f"{stamp}.jsonl"

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    ok = keep = False
    try:
        if pin:
            os.sched_setaffinity(0, {int(cpu_load or 0)})  # keep this harness off the gateway's CPU
        run_all(bench, scenarios, stamp)
        ok = True
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
    except BrokenPipeError:
        pass  # our output was cut off (e.g. `| head`); stop quietly
    except RuntimeError as exc:
        keep = True
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
    finally:
        started = [p.pid for p in bench.procs.started]
        bench.procs.stop_all()
        still_open = [port for port in bench.ports if port_open(port)]
        if not (keep or args.keep_workdir):
            shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):  # stderr may be a closed pipe by now
            if started:
                print(f"stopped {len(started)} process(es) by PID: {started}", file=sys.stderr)
            if still_open:
                print(f"WARNING: something still listens on port(s) {still_open}", file=sys.stderr)
            if keep or args.keep_workdir:
                print(f"work dir kept: {workdir}", file=sys.stderr)
    return 0 if ok else 1


def run_all(bench: Bench, scenarios: list[Scenario], stamp: str) -> None:
    """Start the upstream, then per round: direct, Sluicegate, LiteLLM, each over all scenarios."""
    args = bench.args
    prepare_files(bench)
    start_upstream(bench)
    if any(s.name == "redis" for s in scenarios):
        start_redis(bench)
    meta = {
        "kind": "meta",
        "timestamp": stamp,
        "command": shlex.join(["python", "bench/run.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(bench),
        "upstream": bench.upstream_kind,
        "loadgen": bench.loadgen_kind,
        "pinned": bench.pin,
        "cpu_load": bench.cpu_load,
        "cpu_gateway": bench.cpu_gateway,
        "workers": args.workers,
        "gateway_args": args.gateway_args,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "soak_minutes": args.soak_minutes,
        "scenarios": args.scenarios,
        "warmup_s": args.warmup,
        "request_bytes": len(fixtures.request_body(False)),
        "completion_bytes": len(fixtures.completion_body()),
        "sse_bytes": len(fixtures.sse_body()),
    }
    bench.results_file.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(bench, meta)
    layout = (
        f"upstream + load generator on cpu{bench.cpu_load}, proxy on cpu{bench.cpu_gateway}"
        if bench.pin
        else "not pinned"
    )
    print(
        f"upstream: {bench.upstream_kind}; load generator: {bench.loadgen_kind}; {layout}; "
        f"{args.duration}s runs after {args.warmup}s warm-up",
        flush=True,
    )
    print(f"versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items() if v)}", flush=True)
    if bench.loadgen_kind == "bundled":
        print("note: bench/loadgen.py is Python; where its CPU % nears 100 it, not the target, is the limit.")
    if bench.upstream_kind == "fake":
        print("note: the fake provider is Python (aiohttp); it can be the limit of the gateway rows.")
    for scenario in scenarios:
        plural = "" if scenario.connections == 1 else "s"
        print(f"  {scenario.name}: {scenario.meaning} ({scenario.connections} connection{plural})")
    print(flush=True)
    print("| " + " | ".join(COLUMNS) + " |", flush=True)
    cpus = sorted(os.sched_getaffinity(0) | ({int(bench.cpu_gateway)} if bench.cpu_gateway else set()))
    for round_no in range(1, args.rounds + 1):
        calibration = calibrate(cpus)
        print(f"(round {round_no}: calibration loop {calibration} ms)", flush=True)
        if not args.no_direct:
            direct = direct_target(bench)
            run_target(bench, direct, scenarios, round_no, calibration)
            if "slow" in bench.special:
                special(bench, issue9.slow_streams(bench, direct, round_no))
        if args.direct_own_core and bench.pin:
            run_direct_own_core(bench, scenarios, round_no, calibration)
        if not args.no_gateway:
            run_started(bench, start_sluicegate, scenarios, round_no, calibration)
        if args.litellm:
            run_started(bench, start_litellm, scenarios, round_no, calibration)
    if "rss" in bench.special and not args.no_gateway:
        run_soak(bench)
    if "cold" in bench.special and not args.no_gateway:
        print(
            "cold start: 5 fresh starts of sluicegate, to the first 200 on /v1/chat/completions", flush=True
        )
        special(bench, issue9.cold_start(bench))
    print("\nAll runs:\n")
    print(markdown_table(COLUMNS, [row_cells(r) for r in bench.rows]))
    comparable = (
        bench.pin and args.workers == 1 and bench.upstream_kind == "nginx" and bench.loadgen_kind == "wrk"
    ) and not args.py_spy
    summary = summarize(bench.rows, scenarios, comparable, bench.special_rows)
    write_jsonl(bench, summary)
    print_summary(summary, bench)
    print(f"\nresults: {bench.results_file}")


def run_started(
    bench: Bench,
    start: Callable[[Bench], Target],
    scenarios: list[Scenario],
    round_no: int,
    calibration: dict,
) -> None:
    """Start a proxy, note its idle RSS, run every scenario against it (and the slow streams), stop it."""
    target = start(bench)
    try:
        special(bench, {"kind": "special", "scenario": "rss_idle", "round": round_no, "target": target.name,
                        "rss_mb": issue9.idle_rss(target)})  # fmt: skip
        run_target(bench, target, scenarios, round_no, calibration)
        if "slow" in bench.special and target.name == "sluicegate":
            special(bench, issue9.slow_streams(bench, target, round_no))
    finally:
        bench.procs.stop(target.proc, grace=10)


def run_direct_own_core(bench: Bench, scenarios: list[Scenario], round_no: int, calibration: dict) -> None:
    """The direct runs again with the upstream moved to the gateway's CPU: the cost of crossing CPUs."""
    assert bench.upstream is not None and bench.cpu_load is not None and bench.cpu_gateway is not None
    tree = bench.upstream.tree()
    for pid in tree:
        os.sched_setaffinity(pid, {int(bench.cpu_gateway)})
    try:
        target = direct_target(bench)
        target.name = "direct-own-core"
        run_target(bench, target, scenarios, round_no, calibration)
    finally:
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(pid, {int(bench.cpu_load)})


def run_target(
    bench: Bench, target: Target, scenarios: list[Scenario], round_no: int, calibration: dict
) -> None:
    """Check the answers, then measure each scenario."""
    smoke_check(bench, target, scenarios)
    for scenario in scenarios:
        if scenario.gateway_only and target.name != "sluicegate":
            continue
        row = measure(bench, target, scenario, round_no, calibration)
        bench.rows.append(row)
        write_jsonl(bench, row)
        print("| " + " | ".join(row_cells(row)) + " |", flush=True)
        if row["non2xx"] or row["socket_errors"]:
            print(
                f"  WARNING: {row['non2xx']} non-2xx responses and {row['socket_errors']} socket errors "
                f"({target.name}, {scenario.name}): these figures are not valid",
                flush=True,
            )
        if not target.proc.alive():
            raise RuntimeError(f"{target.name} died during {scenario.name}:\n{target.proc.tail()}")


def run_soak(bench: Bench) -> None:
    """rss: a fresh Sluicegate under json load for --soak-minutes, RSS sampled; growth after warm-up."""
    minutes = bench.args.soak_minutes
    print(f"rss soak: {minutes:g} min of json load on a fresh sluicegate", flush=True)
    target = start_sluicegate(bench)
    try:
        scenario = scenarios_for(argparse.Namespace(connections=bench.args.connections, scenarios="json"))[0]
        special(bench, {"kind": "special", "scenario": "rss_idle", "round": 0, "target": "sluicegate",
                        "rss_mb": issue9.idle_rss(target)})  # fmt: skip
        special(bench, issue9.soak(bench, target, minutes, scenario))
    finally:
        bench.procs.stop(target.proc, grace=10)


def special(bench: Bench, record: dict) -> None:
    """Keep, store and print one record of a non-wrk scenario (slow streams, RSS, soak, cold start)."""
    bench.special_rows.append(record)
    write_jsonl(bench, record)
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in record.items()
             if k not in ("kind", "samples")}  # fmt: skip
    print(f"  {json.dumps(shown)}", flush=True)


def write_jsonl(bench: Bench, record: dict) -> None:
    """Append one record to the results file."""
    assert bench.results_file is not None
    with open(bench.results_file, "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    sys.exit(main())
