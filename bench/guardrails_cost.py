"""CPU cost of guardrails, in process: the built-in detectors over a 4 KB prompt, and a stream window.

    python bench/guardrails_cost.py [--iterations 5000]

1. Request: a 4 KB chat body (clean, then with an email and a card number in it) through the request
   rules: every built-in detector as one Redact rule, plus the body walk and re-serialization when
   something changed. The issue's target: at most 100 µs on one core.
2. A route without guardrails: what the filter chain and forward.py pay when no policy applies.
3. Streams: a 4 KB answer in 400 OpenAI chunk events through the hold-back window (Redact, all built-ins).
Timings are process CPU time (time.process_time) over many iterations; read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sluicegate.guardrails.detectors import expand
from sluicegate.guardrails.engine import GuardRule, builtin_scan, enforce, guard_request
from sluicegate.guardrails.response import StreamGuard

SENTENCE = "Please summarise the quarterly report for the team; the meeting is at 10:30 in room 4. "
CLEAN = (SENTENCE * 60)[:4096]
DIRTY = CLEAN[:2000] + " mail jane.doe@example.com, card 4111 1111 1111 1111 " + CLEAN[2000:4040]
RULE = GuardRule("bench/all", "Redact", True, True, (builtin_scan(expand(["All"])),))


def cpu_us(fn: Callable[[], object], iterations: int) -> float:
    """Process CPU µs per call."""
    for _ in range(min(iterations, 200)):
        fn()
    started = time.process_time()
    for _ in range(iterations):
        fn()
    return (time.process_time() - started) / iterations * 1e6


def request_case(text: str) -> Callable[[], object]:
    raw = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})

    def run() -> object:
        body = orjson.loads(raw)
        if guard_request((RULE,), body):
            return orjson.dumps(body)
        return body

    return run


def stream_case() -> Callable[[], object]:
    pieces = [DIRTY[i : i + 10] for i in range(0, len(DIRTY), 10)]
    events = [
        b"data: "
        + orjson.dumps(
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}}]}
        )
        + b"\n\n"
        for p in pieces
    ] + [b"data: [DONE]\n\n"]

    def run() -> object:
        guard = StreamGuard((RULE,), "openai")
        return [guard(e, False) for e in events] + [guard(b"", True)]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    n = parser.parse_args().iterations
    parse_only = cpu_us(lambda: orjson.loads(orjson.dumps({"messages": [{"content": CLEAN}]})), n)
    rows = [
        (
            "built-in detectors, 4 KB clean text (scan only)",
            cpu_us(lambda: enforce((RULE,), CLEAN, "request"), n),
        ),
        (
            "built-in detectors, 4 KB text with 2 matches (scan + redact)",
            cpu_us(lambda: enforce((RULE,), DIRTY, "request"), n),
        ),
        ("request rule on a 4 KB clean body (walk, scan)", cpu_us(request_case(CLEAN), n) - parse_only),
        (
            "request rule on a 4 KB body with 2 matches (walk, scan, redact, re-serialize)",
            cpu_us(request_case(DIRTY), n) - parse_only,
        ),
        ("stream: 4 KB answer in 410 chunk events, per event", cpu_us(stream_case(), max(n // 50, 20)) / 410),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:8.1f} µs")


if __name__ == "__main__":
    main()
