"""Slow streams: an upstream that paces SSE events, and a client that measures how late each one arrives.

    python bench/slow_streams.py serve --port 9000 [--events 50 --delay-ms 20]
    python bench/slow_streams.py client http://127.0.0.1:1975/v1/chat/completions --streams 1000 \
        --body-file body.json

The upstream (asyncio + uvloop, no framework) answers any POST with a chunked `text/event-stream` of
--events OpenAI `chat.completion.chunk` events, --delay-ms apart, then a usage chunk and `data: [DONE]`.
Each event's content is `t=<CLOCK_MONOTONIC at write>`; the client (same machine, same clock) takes the
arrival time of the read that completed each event and reports, per event, the delay beyond the
upstream's timing (arrival - write): what everything between the two sockets added. It prints one line
`BENCH_JSON {...}`: streams started/completed, events, extra delay p50/p99/max (ms), and the lateness
against the schedule (arrival - (first write + i * delay)).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time

EVENT_RE = re.compile(rb"t=(\d+\.\d+)")


def raise_fd_limit(want: int) -> None:
    """Raise RLIMIT_NOFILE's soft limit to `want` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(content: str) -> bytes:
    body = {
        "id": "chatcmpl-slow",
        "object": "chat.completion.chunk",
        "created": 1764236400,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}],
        "usage": None,
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


_USAGE = (
    b'data: {"id":"chatcmpl-slow","object":"chat.completion.chunk","created":1764236400,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":50,'
    b'"total_tokens":70}}\n\ndata: [DONE]\n\n'
)


class SlowUpstream(asyncio.Protocol):
    """One connection: read a request (head + Content-Length body), answer with paced events."""

    def __init__(self, events: int, delay: float) -> None:
        self.events, self.delay = events, delay
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.handles: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in self.handles:
            handle.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in self.buf[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return
        self.buf = self.buf[end + 4 + length :]
        self.respond()

    def respond(self) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            b"Cache-Control: no-cache\r\n\r\n"
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(self.events):
            self.handles.append(loop.call_at(start + i * self.delay, self.send, i))

    def send(self, i: int) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(_chunk(_event(f"t={time.monotonic():.6f}")))
        if i == self.events - 1:
            transport.write(_chunk(_USAGE) + b"0\r\n\r\n")
            self.handles.clear()


async def serve(port: int, events: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SlowUpstream(events, delay), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


class _StreamClient(asyncio.Protocol):
    """One stream's client side: per read only its bytes and arrival time, so that the client's own work
    (1,000 streams of 50 events a second, on the load CPU with the paced upstream) adds little delay."""

    def __init__(self, done: asyncio.Future[Exception | None]) -> None:
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.pieces: list[tuple[bytes, float]] = []
        self.tail = b""  # the stream's last bytes so far: the last chunk may come split over two reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pieces.append((data, time.monotonic()))
        self.tail = (self.tail + data)[-5:]
        if self.tail == b"0\r\n\r\n" and self.transport is not None:  # the last chunk: the stream is over
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(exc)  # an error: the connection broke before the stream was over


async def one_stream(host: str, port: int, request: bytes, out: dict, go: asyncio.Event, wait: float) -> None:
    """One request on its own connection; per read, the arrival time and the bytes so far.

    Every connection is opened first; then the requests go out spread over `wait` seconds (one event
    interval), so the 1,000 streams are open together but not phase-locked to the same 20 ms tick."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Exception | None] = loop.create_future()
    try:
        transport, stream = await loop.create_connection(lambda: _StreamClient(done), host, port)
    except OSError:
        out["connect_errors"] += 1
        out["connected"] += 1
        return
    out["connected"] += 1
    if out["connected"] == out["streams"]:
        go.set()
    await go.wait()
    await asyncio.sleep(wait)
    transport.write(request)
    if await done is not None:
        out["read_errors"] += 1
    data, marks, size = [], [], 0
    for piece, arrived in stream.pieces:
        data.append(piece)
        size += len(piece)
        marks.append((size, arrived))
    out["results"].append((b"".join(data), marks))


def analyse(results: list[tuple[bytes, list[tuple[int, float]]]], events: int, delay: float) -> dict:
    """Per event: arrival - write (extra) and arrival - (first write + i * delay) (late)."""
    extra: list[float] = []
    late: list[float] = []
    steady: list[float] = []  # extra delay of events after the first 100 ms (when every stream has started)
    complete = 0
    for data, marks in results:
        found = list(EVENT_RE.finditer(data))
        if len(found) == events and b"data: [DONE]" in data and b" 200 " in data[:20]:
            complete += 1
        first = float(found[0].group(1)) if found else 0.0
        k = 0
        for i, match in enumerate(found):
            while marks[k][0] < match.end():
                k += 1
            arrival = marks[k][1]
            sent = float(match.group(1))
            extra.append((arrival - sent) * 1000)
            if i * delay >= 0.1:
                steady.append(extra[-1])
            late.append((arrival - (first + i * delay)) * 1000)
    extra.sort()
    late.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {
        "events": len(extra),
        "complete": complete,
        "extra_p50_ms": pct(extra, 0.5),
        "extra_p99_ms": pct(extra, 0.99),
        "extra_max_ms": extra[-1] if extra else float("nan"),
        "steady_p99_ms": pct(sorted(steady), 0.99),
        "steady_max_ms": max(steady) if steady else float("nan"),
        "late_p99_ms": pct(late, 0.99),
        "late_max_ms": late[-1] if late else float("nan"),
    }


async def client(url: str, streams: int, body: bytes, key: str, events: int, delay: float) -> dict:
    hostport, _, path = url.removeprefix("http://").partition("/")
    host, _, port = hostport.partition(":")
    request = (
        f"POST /{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    out: dict = {"results": [], "connect_errors": 0, "read_errors": 0, "connected": 0, "streams": streams}
    go = asyncio.Event()
    started = time.monotonic()
    await asyncio.gather(
        *(one_stream(host, int(port), request, out, go, delay * j / streams) for j in range(streams))
    )
    elapsed = time.monotonic() - started
    summary = analyse(out["results"], events, delay)
    summary.update(streams=streams, connect_errors=out["connect_errors"], read_errors=out["read_errors"],
                   elapsed_s=elapsed)  # fmt: skip
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("url")
    c.add_argument("--streams", type=int, default=1000)
    c.add_argument("--body-file", required=True)
    c.add_argument("--key", default="sk-bench")
    for q in (s, c):
        q.add_argument("--events", type=int, default=50)
        q.add_argument("--delay-ms", type=float, default=20)
    args = p.parse_args()
    raise_fd_limit(65536)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.cmd == "serve":
        asyncio.run(serve(args.port, args.events, args.delay_ms / 1000))
        return 0
    with open(args.body_file, "rb") as fh:
        body = fh.read()
    summary = asyncio.run(client(args.url, args.streams, body, args.key, args.events, args.delay_ms / 1000))
    print("BENCH_JSON " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
