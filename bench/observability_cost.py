"""CPU cost per request of what observability adds to the request path, in process.

    python bench/observability_cost.py [--iterations 200000]

Measures, per finished request: Metrics.record (GenAI histograms, the gateway's own counters, overhead,
costs), the access-log line built and queued (the writer thread is running and writes to /dev/null),
both together through the Observe filter for a non-streaming and a streaming chat request, and a header
label on top. Timings are time.process_time() (CPU of this process, so other load on the box counts
less) over many iterations; the best of --repeat runs is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
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
CHUNK = 500  # calls between two turns of the event loop
HEADERS = {
    "host": "gw",
    "content-type": "application/json",
    "user-agent": "OpenAI/Python 1.0",
    "x-request-id": "f6c1b0a2",
    "x-tenant-id": "acme",
}


def context(stream: bool = False) -> RequestContext:
    """A finished chat request as the gateway leaves it: routed, one attempt, usage and costs filled in."""
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
    ctx.attempt_log = ["default/openai:200"]
    ctx.started_at = time.monotonic() - 0.5
    if stream:
        ctx.stream = True
        ctx.first_byte_at = ctx.started_at + 0.12
    return ctx


async def per_call_us(fn: Callable[[], object], iterations: int, repeat: int) -> float:
    """Best of `repeat` runs of CPU time per call, in microseconds (the writer thread's CPU included).

    Calls run in chunks with the event loop let in between, so access-log lines go to the writer thread
    in batches on its flush timer, as in the gateway; sleeping does not count.
    """
    for _ in range(1000):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(iterations // CHUNK):
            for _ in range(CHUNK):
                fn()
            await asyncio.sleep(0)  # the flush timer may fire
            time.sleep(0.0001)  # the GIL is free a moment, so the writer thread keeps up (as in the gateway)
        best = min(best, (time.process_time() - start) / (iterations // CHUNK * CHUNK) * 1e6)
    return best


async def measure(n: int, r: int) -> None:
    """Print the cost of each piece."""
    ctx, streamed = context(), context(stream=True)
    now = ctx.started_at + 0.5
    metrics = Metrics(CollectorRegistry())
    labelled = Metrics(CollectorRegistry(), parse_header_labels("x-tenant-id:tenant"))
    log = AccessLog("/dev/null")
    observe = Observe(Metrics(CollectorRegistry()), log)

    def logged() -> None:
        log.write(entry(ctx, "openai", now))

    results = {
        "metrics.record": await per_call_us(lambda: metrics.record(ctx, now), n, r),
        "metrics.record, stream": await per_call_us(lambda: metrics.record(streamed, now), n, r),
        "metrics.record + 1 header label": await per_call_us(lambda: labelled.record(ctx, now), n, r),
        "access log: entry()": await per_call_us(lambda: entry(ctx, "openai", now), n, r),
        "access log: entry() + write()": await per_call_us(logged, n, r),
        "Observe.on_complete": await per_call_us(lambda: observe.on_complete(ctx), n, r),
        "Observe.on_complete, stream": await per_call_us(lambda: observe.on_complete(streamed), n, r),
        "tracing off (ctx.trace is None)": await per_call_us(lambda: ctx.trace is not None, n, r),
    }
    log.close()
    for name, us in results.items():
        print(f"{name:36s} {us:7.2f} µs/request")
    if log.dropped:
        print(f"({log.dropped} access-log lines dropped: the numbers above are too low)")


def main() -> None:
    """Parse the arguments and measure on an event loop, as the gateway runs."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(measure(args.iterations, args.repeat))


if __name__ == "__main__":
    main()
