"""The tables, the ratios, the verdict on the issue's targets, and the versions for the record."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from stack import LITELLM_BIN, REPO, Bench, Scenario, gateway_env

TARGET_RPS = 15_000  # the targets, for one worker on one core
TARGET_RATIO = 0.15
TARGET_ADDED_P50_MS = 0.3
COLUMNS = ["round", "scenario", "target", "conns", "req/s", "p50 ms", "p99 ms", "non-2xx / sock err",
           "target CPU µs/req", "target CPU %", "loadgen CPU %", "other CPU %"]  # fmt: skip


def row_cells(row: dict) -> list[str]:
    """One table line."""
    cpu = row["cpu_us_per_req"]
    return [
        str(row["round"]),
        row["scenario"],
        row["target"],
        str(row["connections"]),
        f"{row['rps']:,.0f}",
        f"{row['p50_ms']:.3f}",
        f"{row['p99_ms']:.3f}",
        f"{row['non2xx']} / {row['socket_errors']}",
        "-" if cpu is None else f"{cpu:,.0f}",
        f"{row['target_cpu_pct']:.0f}",
        f"{row['loadgen_cpu_pct']:.0f}",
        f"{row['foreign_cpu_pct']:.0f}",
    ]


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table with aligned columns."""
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)
    ]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    return "\n".join(out)


def summarize(rows: list[dict], scenarios: list[Scenario], comparable: bool) -> dict:
    """Means over rounds, the ratios, and whether the issue's targets are met."""
    summary: dict[str, Any] = {"kind": "summary", "scenarios": {}}
    for scenario in scenarios:
        by_target: dict[str, dict] = {}
        for name in ("direct", "direct-own-core", "sluicegate", "litellm"):
            mine = [r for r in rows if r["scenario"] == scenario.name and r["target"] == name]
            if mine:
                by_target[name] = {
                    "rounds": len(mine),
                    "rps_mean": statistics.fmean(r["rps"] for r in mine),
                    "p50_ms_mean": statistics.fmean(r["p50_ms"] for r in mine),
                    "p99_ms_mean": statistics.fmean(r["p99_ms"] for r in mine),
                    "non2xx": sum(r["non2xx"] for r in mine),
                    "socket_errors": sum(r["socket_errors"] for r in mine),
                }
        entry: dict[str, Any] = {"targets": by_target}
        direct, gateway, litellm = (by_target.get(n) for n in ("direct", "sluicegate", "litellm"))
        if direct and gateway:
            entry["sluicegate_over_direct"] = gateway["rps_mean"] / direct["rps_mean"]
            entry["added_p50_ms"] = gateway["p50_ms_mean"] - direct["p50_ms_mean"]
        if direct and litellm:
            entry["litellm_over_direct"] = litellm["rps_mean"] / direct["rps_mean"]
        if gateway and litellm:
            entry["sluicegate_over_litellm"] = gateway["rps_mean"] / litellm["rps_mean"]
        summary["scenarios"][scenario.name] = entry
    summary["targets"] = check_targets(summary["scenarios"], rows, comparable)
    return summary


def check_targets(scenarios: dict, rows: list[dict], comparable: bool) -> dict:
    """The issue's two targets (for one pinned worker, nginx upstream, wrk); absent when not measured."""
    result: dict[str, Any] = {"comparable": comparable}
    json_entry = scenarios.get("json", {})
    gateway = json_entry.get("targets", {}).get("sluicegate")
    clean = all(r["non2xx"] == 0 and r["socket_errors"] == 0 for r in rows if r["target"] == "sluicegate")
    if gateway:
        ratio = json_entry.get("sluicegate_over_direct")
        result["throughput"] = {
            "rps": gateway["rps_mean"],
            "ratio": ratio,
            "met": clean and (gateway["rps_mean"] >= TARGET_RPS or (ratio or 0.0) >= TARGET_RATIO),
        }
    json1 = scenarios.get("json1", {})
    if "added_p50_ms" in json1:
        added = json1["added_p50_ms"]
        result["latency"] = {"added_p50_ms": added, "met": clean and added <= TARGET_ADDED_P50_MS}
    return result


def print_summary(summary: dict, bench: Bench) -> None:
    """Ratios and the verdict on the issue's targets."""
    lines = []
    for name, entry in summary["scenarios"].items():
        t = entry["targets"]
        cells = [name]
        for target in ("direct", "sluicegate", "litellm"):
            cells.append(f"{t[target]['rps_mean']:,.0f}" if target in t else "-")
        cells.append(f"{entry['sluicegate_over_direct']:.3f}" if "sluicegate_over_direct" in entry else "-")
        cells.append(f"{entry['added_p50_ms']:+.3f}" if "added_p50_ms" in entry else "-")
        cells.append(f"{entry['litellm_over_direct']:.4f}" if "litellm_over_direct" in entry else "-")
        cells.append(
            f"{entry['sluicegate_over_litellm']:,.1f}" if "sluicegate_over_litellm" in entry else "-"
        )
        lines.append(cells)
    header = ["scenario", "direct req/s", "sluicegate req/s", "litellm req/s", "sluicegate ÷ direct",
              "added p50 ms", "litellm ÷ direct", "sluicegate ÷ litellm"]  # fmt: skip
    print("\nMeans over rounds and ratios:\n")
    print(markdown_table(header, lines))
    targets = summary["targets"]
    print()
    if "throughput" in targets:
        t = targets["throughput"]
        verdict = ("MET" if t["met"] else "NOT MET") if targets["comparable"] else "no verdict"
        print(
            f"Target 1 (json, {bench.args.connections} conns): >= {TARGET_RPS:,} req/s or >= {TARGET_RATIO} "
            f"of direct -> {t['rps']:,.0f} req/s, "
            f"{'n/a' if t['ratio'] is None else format(t['ratio'], '.3f')} of direct: {verdict}"
        )
    if "latency" in targets:
        t = targets["latency"]
        verdict = ("MET" if t["met"] else "NOT MET") if targets["comparable"] else "no verdict"
        print(
            f"Target 2 (json1, 1 conn): added p50 <= {TARGET_ADDED_P50_MS} ms -> "
            f"{t['added_p50_ms']:+.3f} ms: {verdict}"
        )
    if not targets["comparable"]:
        print("(NOT the target layout, so no verdict: the targets assume one Sluicegate worker pinned")
        print(" to its own core, nginx as the upstream, wrk as the load generator, and no profiler)")


def versions(bench: Bench) -> dict[str, str]:
    """Versions of everything involved, for the record."""

    def out(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        text = (done.stdout + done.stderr).strip()
        return text.splitlines()[0] if text else ""

    command = [sys.executable, "-m", "sluicegate", "version"]
    gateway = subprocess.run(command, capture_output=True, text=True, env=gateway_env(), timeout=60)
    result = {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sluicegate": gateway.stdout.strip().removeprefix("sluicegate "),
        "git": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }
    if bench.upstream_kind == "nginx":
        result["nginx"] = out([shutil.which("nginx") or "nginx", "-v"]).removeprefix("nginx version: nginx/")
    if bench.loadgen_kind == "wrk":
        result["wrk"] = " ".join(out([shutil.which("wrk") or "wrk", "-v"]).split()[1:2])
    if bench.args.litellm and LITELLM_BIN.exists():
        python = str(LITELLM_BIN.parent / "python")
        result["litellm"] = out([python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
    return result


def machine() -> dict[str, Any]:
    """CPU count and model."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model}


def render(path: Path) -> str:
    """A stored results file as markdown: command, layout, every run, and the summary if it finished."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    meta = next((r for r in records if r["kind"] == "meta"), {})
    rows = [r for r in records if r["kind"] == "run"]
    summary = next((r for r in records if r["kind"] == "summary"), None)
    out = [f"`{meta.get('command', '?').strip()}` — {path.name}", ""]
    versions_text = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
    out.append(f"upstream {meta.get('upstream')}, load generator {meta.get('loadgen')}, "
               f"pinned {meta.get('pinned')}; {versions_text}")  # fmt: skip
    calibrations = sorted({json.dumps(r["calibration_ms"]) for r in rows})
    if calibrations:
        out.append(f"calibration loop (ms): {'; '.join(calibrations)}")
    out += ["", markdown_table(COLUMNS, [row_cells(r) for r in rows])]
    if summary is None:
        out += ["", "(no summary: the run did not finish)"]
    else:
        lines = []
        for name, entry in summary["scenarios"].items():
            t = entry["targets"]
            lines.append([
                name,
                *(f"{t[n]['rps_mean']:,.0f}" if n in t else "-" for n in ("direct", "sluicegate", "litellm")),
                f"{entry['sluicegate_over_direct']:.3f}" if "sluicegate_over_direct" in entry else "-",
                f"{entry['added_p50_ms']:+.3f}" if "added_p50_ms" in entry else "-",
                f"{entry['sluicegate_over_litellm']:,.1f}" if "sluicegate_over_litellm" in entry else "-",
            ])  # fmt: skip
        header = ["scenario", "direct req/s", "sluicegate req/s", "litellm req/s", "sluicegate ÷ direct",
                  "added p50 ms", "sluicegate ÷ litellm"]  # fmt: skip
        out += ["", markdown_table(header, lines)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print stored results files (bench/results/*.jsonl) as markdown."""
    for index, name in enumerate(argv if argv is not None else sys.argv[1:]):
        print(("\n" if index else "") + render(Path(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
