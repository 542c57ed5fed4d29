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


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(
    rows: list[dict], scenarios: list[Scenario], comparable: bool, special: list[dict] | None = None
) -> dict:
    """Medians and spreads over rounds (means kept for the old tables), the ratios, the issue's targets."""
    summary: dict[str, Any] = {"kind": "summary", "scenarios": {}, "special": {}}
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
                    "rps": _spread([r["rps"] for r in mine]),
                    "p50_ms": _spread([r["p50_ms"] for r in mine]),
                    "p99_ms": _spread([r["p99_ms"] for r in mine]),
                    "rss_mb_max": max(r["rss_mb_max"] for r in mine),
                    "cpu_us_per_req": statistics.median(r["cpu_us_per_req"] or 0.0 for r in mine),
                    "non2xx": sum(r["non2xx"] for r in mine),
                    "socket_errors": sum(r["socket_errors"] for r in mine),
                }
        entry: dict[str, Any] = {"targets": by_target, "stream": scenario.stream}
        direct, gateway, litellm = (by_target.get(n) for n in ("direct", "sluicegate", "litellm"))
        if direct and gateway:
            entry["sluicegate_over_direct"] = gateway["rps"]["median"] / direct["rps"]["median"]
            entry["added_p50_ms"] = gateway["p50_ms"]["median"] - direct["p50_ms"]["median"]
            entry["added_p99_ms"] = gateway["p99_ms"]["median"] - direct["p99_ms"]["median"]
        if direct and litellm:
            entry["litellm_over_direct"] = litellm["rps"]["median"] / direct["rps"]["median"]
        if gateway and litellm:
            entry["sluicegate_over_litellm"] = gateway["rps"]["median"] / litellm["rps"]["median"]
        summary["scenarios"][scenario.name] = entry
    for record in special or []:
        summary["special"].setdefault(record["scenario"], []).append(
            {k: v for k, v in record.items() if k != "samples"}
        )
    summary["targets"] = check_targets(summary["scenarios"], rows, comparable, summary["special"])
    return summary


# Issue 9's targets.
JSON_VS_DIRECT, JSON_VS_LITELLM = 0.20, 200
STREAM_VS_DIRECT, STREAM_VS_LITELLM = 0.25, 500
JSON1_ADDED_P50_MS, JSON1_ADDED_P99_MS = 0.2, 0.6
BEDROCK_VS_PASSTHROUGH = 0.5
SLOW_MAX_LATE_MS = 50
RSS_IDLE_MB, RSS_STREAMS_MB, SOAK_GROWTH_PCT = 60, 200, 5
COLD_START_S = 1.5


def _verdict(name: str, wanted: str, got: str, met: bool | None) -> dict:
    return {"name": name, "wanted": wanted, "got": got, "met": met}


def check_targets(scenarios: dict, rows: list[dict], comparable: bool, special: dict | None = None) -> dict:
    """Issue 9's targets, each MET / MISSED (or absent when its scenario was not measured)."""
    special = special or {}
    out: list[dict] = []

    def clean(scenario: str) -> bool:
        return all(r["non2xx"] == 0 and r["socket_errors"] == 0 for r in rows
                   if r["target"] == "sluicegate" and r["scenario"] == scenario)  # fmt: skip

    for name, vs_direct, vs_litellm in (("json", JSON_VS_DIRECT, JSON_VS_LITELLM),
                                        ("stream", STREAM_VS_DIRECT, STREAM_VS_LITELLM)):  # fmt: skip
        entry = scenarios.get(name, {})
        if "sluicegate_over_direct" in entry:
            ratio = entry["sluicegate_over_direct"]
            out.append(_verdict(f"{name}: Sluicegate ÷ direct", f">= {vs_direct}", f"{ratio:.3f}",
                                clean(name) and ratio >= vs_direct))  # fmt: skip
        if "sluicegate_over_litellm" in entry:
            ratio = entry["sluicegate_over_litellm"]
            out.append(_verdict(f"{name}: Sluicegate ÷ LiteLLM", f">= {vs_litellm}x", f"{ratio:,.1f}x",
                                clean(name) and ratio >= vs_litellm))  # fmt: skip
    json1 = scenarios.get("json1", {})
    if "added_p50_ms" in json1:
        for key, limit in (("added_p50_ms", JSON1_ADDED_P50_MS), ("added_p99_ms", JSON1_ADDED_P99_MS)):
            label = key.split("_")[1]
            out.append(_verdict(f"json1: added {label} over direct", f"<= +{limit} ms",
                                f"{json1[key]:+.3f} ms", clean("json1") and json1[key] <= limit))  # fmt: skip
    bedrock = scenarios.get("bedrock", {}).get("targets", {}).get("sluicegate")
    passthrough = scenarios.get("json", {}).get("targets", {}).get("sluicegate")
    if bedrock and passthrough:
        ratio = bedrock["rps"]["median"] / passthrough["rps"]["median"]
        out.append(_verdict("bedrock: req/s ÷ Sluicegate json passthrough", f">= {BEDROCK_VS_PASSTHROUGH}",
                            f"{ratio:.3f}",
                            clean("bedrock") and ratio >= BEDROCK_VS_PASSTHROUGH))  # fmt: skip
    streamed = scenarios.get("stream", {}).get("targets", {}).get("sluicegate")
    if bedrock and streamed:  # the same-shaped passthrough (51 events streamed), for reference
        ratio = bedrock["rps"]["median"] / streamed["rps"]["median"]
        name = "bedrock: req/s ÷ Sluicegate stream passthrough (reference)"
        out.append(_verdict(name, "-", f"{ratio:.3f}", None))
    slow = [r for r in special.get("slow", []) if r["target"] == "sluicegate"]
    if slow:
        worst = max(r["extra_max_ms"] for r in slow)
        complete = all(r["complete"] == r["streams"] for r in slow)
        got = f"max {worst:.1f} ms late; {'all' if complete else 'NOT all'} streams complete"
        out.append(_verdict("slow: 1,000 streams, no event late", f"<= {SLOW_MAX_LATE_MS} ms, all complete",
                            got, complete and worst <= SLOW_MAX_LATE_MS))  # fmt: skip
    idle = [r["rss_mb"] for r in special.get("rss_idle", []) if r["target"] == "sluicegate"]
    if idle:
        out.append(
            _verdict(
                "RSS idle", f"<= {RSS_IDLE_MB} MB", f"{max(idle):.1f} MB (max)", max(idle) <= RSS_IDLE_MB
            )
        )
    if slow:
        peak = max(r["rss_mb_max"] for r in slow)
        out.append(_verdict("RSS with 1,000 open streams", f"<= {RSS_STREAMS_MB} MB", f"{peak:.1f} MB",
                            peak <= RSS_STREAMS_MB))  # fmt: skip
    for soak in special.get("soak", []):
        growth = soak["growth_pct"]
        out.append(_verdict(f"RSS soak growth ({soak['minutes']:g} min)", f"<= {SOAK_GROWTH_PCT} %",
                            f"{growth:+.1f} %",
                            growth is not None and growth <= SOAK_GROWTH_PCT))  # fmt: skip
    for cold in special.get("cold", []):
        out.append(_verdict("cold start to first 200 (median of 5)", f"<= {COLD_START_S} s",
                            f"{cold['median_s']:.3f} s", cold["median_s"] <= COLD_START_S))  # fmt: skip
    return {"comparable": comparable, "issue9": out}


def _fmt_spread(s: dict, fmt: str) -> str:
    if s["min"] == s["max"]:
        return format(s["median"], fmt)
    return f"{format(s['median'], fmt)} ({format(s['min'], fmt)}-{format(s['max'], fmt)})"


def issue9_tables(summary: dict) -> str:
    """The markdown tables: per scenario and target, the non-wrk scenarios, and the targets."""
    lines = []
    for name, entry in summary["scenarios"].items():
        direct = entry["targets"].get("direct")
        litellm = entry["targets"].get("litellm")
        for target, t in entry["targets"].items():
            vs_direct = f"{t['rps']['median'] / direct['rps']['median']:.3f}" if direct else "-"
            vs_litellm = (
                f"{t['rps']['median'] / litellm['rps']['median']:,.1f}x"
                if litellm and target != "litellm"
                else "-"
            )
            lines.append([name, target, str(t["rounds"]), _fmt_spread(t["rps"], ",.0f"),
                          _fmt_spread(t["p50_ms"], ".3f"), _fmt_spread(t["p99_ms"], ".3f"),
                          f"{t['rss_mb_max']:.1f}", vs_direct, vs_litellm,
                          f"{t['non2xx']} / {t['socket_errors']}"])  # fmt: skip
    header = ["scenario", "target", "rounds", "req/s median (min-max)", "p50 ms", "p99 ms", "RSS max MB",
              "÷ direct", "÷ LiteLLM", "non-2xx / sock err"]  # fmt: skip
    out = [markdown_table(header, lines)]
    special = summary.get("special", {})
    extra = []
    for r in special.get("slow", []):
        extra.append([f"slow (round {r['round']})", r["target"],
                      f"{r['complete']}/{r['streams']} complete, {r['events']:,} events; extra delay p50 "
                      f"{r['extra_p50_ms']:.1f} / p99 {r['extra_p99_ms']:.1f} / "
                      f"max {r['extra_max_ms']:.1f} ms; "
                      f"RSS max {r['rss_mb_max']:.1f} MB"])  # fmt: skip
    for r in special.get("rss_idle", []):
        when = "soak's fresh start" if r["round"] == 0 else f"round {r['round']}"
        extra.append([f"RSS idle ({when})", r["target"], f"{r['rss_mb']:.1f} MB"])
    for r in special.get("soak", []):
        extra.append([f"soak {r['minutes']:g} min (json)", r["target"],
                      f"RSS {r['rss_start_mb']:.1f} MB at start, {r['rss_base_mb']:.1f} after warm-up, "
                      f"{r['rss_end_mb']:.1f} at end ({r['growth_pct']:+.1f} %); {r['rps']:,.0f} req/s, "
                      f"{r['errors']} errors"])  # fmt: skip
    for r in special.get("cold", []):
        runs = ", ".join(f"{x:.3f}" for x in r["runs_s"])
        extra.append(["cold start", r["target"], f"median {r['median_s']:.3f} s (runs: {runs})"])
    if extra:
        out += ["", markdown_table(["scenario", "target", "result"], extra)]
    verdicts = summary.get("targets", {}).get("issue9", [])
    if verdicts:
        vlines = [[v["name"], v["wanted"], v["got"], {True: "MET", False: "MISSED", None: "-"}[v["met"]]]
                  for v in verdicts]  # fmt: skip
        out += ["", markdown_table(["issue 9 target", "wanted", "measured", "verdict"], vlines)]
    return "\n".join(out)


def print_summary(summary: dict, bench: Bench) -> None:
    """Medians, spreads, ratios and the verdict on the issue's targets."""
    print("\nMedians over rounds (min-max) and ratios:\n")
    print(issue9_tables(summary))
    if not summary["targets"]["comparable"]:
        print("\n(NOT the target layout: the targets assume one Sluicegate worker pinned to its own core,")
        print(" nginx as the upstream, wrk as the load generator, and no profiler)")


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
    gateway = subprocess.run(command, capture_output=True, text=True, env=gateway_env(bench), timeout=60)
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
    elif "issue9" in summary.get("targets", {}):
        out += ["", issue9_tables(summary)]
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
