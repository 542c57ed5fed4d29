"""CPU cost per request of what observability adds to the request path, in process.

    python bench/observability_cost.py [--iterations 200000]

Measures, per finished request: Metrics.record (cached labelled children; GenAI histograms, the
gateway's own counters, overhead), the access-log record built and queued (the writer thread is running
and writes to /dev/null), both together through the Observe filter, and a header label on top. Timings
are time.perf_counter() over many iterations on one core; read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prometheus_client import CollectorRegistry

from sluicegate.config.runtime import Backend, BackendRef, Endpoint, Rule, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.usage import Usage
from sluicegate.filters.observe import Observe
from sluicegate.observability.access_log import AccessLog, entry
from sluicegate.observability.metrics import Metrics, parse_header_labels

BACKEND = Backend("default/openai", Schema("OpenAI"), (Endpoint("127.0.0.1", 1, False),))
RULE = Rule("default/route", "rule-0", (), (), (BackendRef(BACKEND),))
HEADERS = {
    "host": "gw",
    "content-type": "application/json",
    "user-agent": "OpenAI/Python 1.0",
    "x-request-id": "f6c1b0a2",
    "x-tenant-id": "acme",
}


def context() -> RequestContext:
    ctx = RequestContext(Request("POST", "/v1/chat/completions", "", HEADERS, b"{}", []), "chat")
    ctx.model, ctx.rule, ctx.backend_ref, ctx.status, ctx.attempts = (
        "gpt-4o-mini",
        RULE,
        RULE.backend_refs[0],
        200,
        1,
    )
    ctx.usage = Usage(120, 48, 168)
    ctx.response_model = "gpt-4o-mini-2024-07-18"
    ctx.costs = {"llm_input_token": 120, "llm_output_token": 48, "llm_total_token": 168}
    ctx.upstream_seconds = 0.4
    return ctx


def per_call_us(fn, iterations: int) -> float:
    for _ in range(1000):
        fn()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200_000)
    n = parser.parse_args().iterations
    ctx = context()
    now = ctx.started_at + 0.5
    metrics = Metrics(CollectorRegistry())
    labelled = Metrics(CollectorRegistry(), parse_header_labels("x-tenant-id:tenant"))
    log = AccessLog("/dev/null")
    observe = Observe(Metrics(CollectorRegistry()), log)
    results = {
        "metrics.record": per_call_us(lambda: metrics.record(ctx, now), n),
        "metrics.record + 1 header label": per_call_us(lambda: labelled.record(ctx, now), n),
        "access log: entry + queue": per_call_us(lambda: log.write(entry(ctx, "openai", now)), n),
        "Observe.on_complete (both)": per_call_us(lambda: observe.on_complete(ctx), n),
        "tracing off (ctx.trace is None)": per_call_us(lambda: ctx.trace is not None, n),
    }
    log.close()
    for name, us in results.items():
        print(f"{name:36s} {us:7.2f} µs/request")


if __name__ == "__main__":
    main()
