"""A small HTTP/1.1 load generator for when wrk is not installed: asyncio, raw sockets, keep-alive.

Usage: python bench/loadgen.py URL -c 50 -d 10 --body-file req.json -H 'Authorization: Bearer x'

N connections each send a POST, wait for the whole response, record the latency and send the next,
for a fixed duration. It prints one JSON line with the same fields as bench/post.lua's done() hook.
It is Python, so it has a ceiling of its own: on a 2-core VM it matched wrk against nginx (about 80k
requests/s with nginx on the same core), yet when it runs near 100% of a core the numbers describe the
generator, not the target. bench/run.py prints its CPU % next to every row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover - plain asyncio works, only slower
    uvloop = None


class Stats:
    """What all connections observed."""

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.bytes = 0
        self.connect = self.read = self.write = self.status = self.timeout = 0
        self.deadline = 0.0


class Connection(asyncio.Protocol):
    """One keep-alive connection sending one request at a time until the deadline."""

    def __init__(self, request: bytes, stats: Stats, done: asyncio.Future) -> None:
        self.request = request
        self.stats = stats
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.started = 0
        self.in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the first request."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.in_flight = True
        self.started = time.perf_counter_ns()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        """Feed the response parser."""
        self.stats.bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.stats.read += 1
            self.in_flight = False
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        """One response done: record it, then send the next request or stop."""
        now = time.perf_counter_ns()
        self.in_flight = False
        if time.monotonic() >= self.stats.deadline:
            self._finish()
            return
        self.stats.latencies_ns.append(now - self.started)
        if not 200 <= self.parser.get_status_code() < 300:
            self.stats.status += 1
        if not self.parser.should_keep_alive():
            assert self.transport is not None
            self.transport.close()
            return
        self._send()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(True)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Count a lost request, and tell the driver this connection ended."""
        if self.in_flight:
            self.stats.read += 1
        if not self.done.done():
            self.done.set_result(False)


async def _connection_loop(host: str, port: int, request: bytes, stats: Stats) -> None:
    """Keep one connection busy until the deadline, reconnecting after errors."""
    loop = asyncio.get_running_loop()
    while time.monotonic() < stats.deadline:
        done: asyncio.Future = loop.create_future()
        try:
            await loop.create_connection(lambda done=done: Connection(request, stats, done), host, port)
        except OSError:
            stats.connect += 1
            await asyncio.sleep(0.05)
            continue
        if await done:
            return


def percentile(sorted_values: list[int], fraction: float) -> int:
    """The nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def run(
    url: str, connections: int, duration: float, body: bytes, headers: list[str], timeout: float
) -> dict:
    """Drive the load and return the summary dict."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    head += headers
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    stats = Stats()
    start = time.monotonic()
    stats.deadline = start + duration
    tasks = [asyncio.ensure_future(_connection_loop(host, port, request, stats)) for _ in range(connections)]
    _, pending = await asyncio.wait(tasks, timeout=duration + timeout)
    for task in pending:  # still waiting for a response after the deadline plus the timeout
        stats.timeout += 1
        task.cancel()
    elapsed = min(time.monotonic() - start, duration)
    lat = sorted(stats.latencies_ns)
    return {
        "tool": "loadgen.py",
        "requests": len(lat),
        "duration_us": int(elapsed * 1e6),
        "bytes": stats.bytes,
        "connect": stats.connect,
        "read": stats.read,
        "write": stats.write,
        "status": stats.status,
        "timeout": stats.timeout,
        "p50_us": percentile(lat, 0.50) // 1000,
        "p90_us": percentile(lat, 0.90) // 1000,
        "p99_us": percentile(lat, 0.99) // 1000,
        "max_us": (lat[-1] // 1000) if lat else 0,
        "mean_us": (sum(lat) / len(lat) / 1000) if lat else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the JSON summary line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--body-file", required=True)
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a late response")
    args = parser.parse_args(argv)
    with open(args.body_file, "rb") as fh:
        body = fh.read()
    coro = run(args.url, args.connections, args.duration, body, args.header, args.timeout)
    summary = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)
    print("BENCH_JSON " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
