"""CPU cost of the gateway's request path in Python alone: no sockets, no syscalls, no other process.

    taskset -c 1 python bench/path_cost.py [--scenario json|stream|bedrock|budget] [--requests 100000]

The real Gateway, HttpServer and UpstreamConnection objects with the bench's production config
(bench/fixtures.py gateway_config_issue9: metrics on, the access log to a file, a token cost on the json
route; `budget` is the json request on the route with a Global token budget, counted in memory here:
bench/run.py's `redis` scenario without Redis), on uvloop; only the transports are stand-ins. A client
transport sends the next request when an answer ends (keep-alive, `--connections` of them at once, like
wrk); the backend transport answers each request with the bench upstream's canned bytes in the next loop
turn, as a socket read would. What bench/run.py measures on top of this is the kernel (send/recv/epoll)
and uvloop's socket handling. Pin it to one CPU (taskset) as the gateway is pinned in bench/run.py:
unpinned, the access log's writer thread and the event loop trade the GIL across CPUs and cost more.

Prints process CPU µs per request (median of --rounds). Use it to compare code changes quickly and steadily;
bench/run.py remains the measurement of record.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import fixtures

from sluicegate.config.compile import load_config
from sluicegate.endpoints.gateway import Gateway
from sluicegate.observability import state as observability
from sluicegate.observability.state import Settings
from sluicegate.ratelimit.stores import open_stores
from sluicegate.server.http import HttpConnection, HttpServer
from sluicegate.upstream import pool as pool_module
from sluicegate.upstream.connection import UpstreamConnection
from sluicegate.upstream.pool import DnsCache, Pools

PORTS = {"json": 41001, "stream": 41002, "bedrock": 41003}


def http_response(body: bytes, content_type: bytes, static: bool, extra: bytes = b"") -> bytes:
    """What the bench's nginx sends for a canned body (its headers, in its order; `extra` its add_header)."""
    head = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 17:57:04 GMT\r\n"
    head += b"Content-Type: %b\r\nContent-Length: %d\r\n" % (content_type, len(body))
    if static:  # a file served by nginx
        head += b"Last-Modified: Fri, 27 Nov 2026 17:42:21 GMT\r\nConnection: keep-alive\r\n"
        head += b'ETag: "6b09c0fd-30c3"\r\n' + extra + b"Accept-Ranges: bytes\r\n\r\n"
    else:
        head += b"Connection: keep-alive\r\n" + extra + b"\r\n"
    return head + body


class StandInTransport(asyncio.Transport):
    """What the server and the upstream connection call on a transport besides write: nothing to do."""

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class BackendTransport(StandInTransport):
    """Answers every request written to it with one canned response, in the next loop turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: UpstreamConnection, answer: bytes) -> None:
        super().__init__()
        self.loop, self.protocol, self.answer = loop, protocol, answer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.loop.call_soon(self.protocol.data_received, self.answer)


class ClientTransport(StandInTransport):
    """A keep-alive client: each answer that ends makes it send the next request, until the quota is used."""

    def __init__(self, run: Run, request: bytes, end: bytes) -> None:
        super().__init__()
        self.run, self.request, self.end = run, request, end
        self.protocol: HttpConnection | None = None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data[-len(self.end) :]) != self.end:
            return  # a piece of a streamed answer; its end comes in a later write
        self.run.answered += 1
        if self.run.sent < self.run.total:
            self.run.sent += 1
            self.run.loop.call_soon(self.protocol.data_received, self.request)  # type: ignore[union-attr]
        elif self.run.answered == self.run.total:
            self.run.done.set_result(None)


class Run:
    """One measured batch of requests over `connections` clients."""

    def __init__(self, loop: asyncio.AbstractEventLoop, total: int) -> None:
        self.loop, self.total = loop, total
        self.sent = self.answered = 0
        self.done: asyncio.Future[None] = loop.create_future()


def answers() -> dict[int, bytes]:
    """The canned upstream response of each scenario's backend port."""
    return {
        PORTS["json"]: http_response(fixtures.completion_body(), b"application/json", static=False),
        PORTS["stream"]: http_response(fixtures.sse_body(), b"text/event-stream", static=True),
        PORTS["bedrock"]: http_response(
            fixtures.converse_stream_body(),
            b"application/vnd.amazon.eventstream",
            static=True,
            extra=b"x-amzn-RequestId: 3f6c1a9e8d2b4c7f9a0e1d2c3b4a5f6e\r\n",
        ),
    }


def request_bytes(scenario: str) -> tuple[bytes, bytes]:
    """The HTTP request wrk sends, and how the answer ends."""
    if scenario == "bedrock":
        body = fixtures.model_request(fixtures.MODEL_BEDROCK, True)
    elif scenario == "budget":
        body = fixtures.model_request(fixtures.MODEL_BUDGET, False)
    else:
        body = fixtures.request_body(stream=scenario == "stream")
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: %d\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n\r\n" % len(body)
    )
    # json: the JSON body; stream: the last chunk; bedrock: a sized event stream (nginx serves a file),
    # which the gateway reads whole and answers as one SSE body
    end = {"json": b"}", "budget": b"}", "stream": b"0\r\n\r\n", "bedrock": b"data: [DONE]\n\n"}[scenario]
    return head + body, end


async def measure(args: argparse.Namespace, workdir: Path) -> list[float]:
    """µs of process CPU per request, per round."""
    loop = asyncio.get_running_loop()
    config_path = workdir / "sluicegate.yaml"
    ports = PORTS["json"], PORTS["stream"], PORTS["bedrock"]
    config_path.write_text(fixtures.gateway_config_issue9(*ports, None))
    config = load_config([str(config_path)])
    canned = answers()

    async def dial(self: pool_module.Pool, connect_timeout: float = 10.0) -> UpstreamConnection:
        connection = UpstreamConnection(self.loop, self.authority)
        connection.connection_made(BackendTransport(self.loop, connection, canned[self.endpoint.port]))
        return connection

    pool_module.Pool.dial = dial  # type: ignore[method-assign]
    pools = Pools(DnsCache())
    gateway = Gateway(config, pools, open_stores(None))
    server = HttpServer(gateway.handle, gateway.render_error)
    request, end = request_bytes(args.scenario)
    gc.freeze()  # as server/app.py's run() does
    gc.set_threshold(20_000, 10, 10)
    results = []
    for round_ in range(args.rounds + 1):  # the first round warms up
        run = Run(loop, args.requests)
        clients = []
        for _ in range(args.connections):
            transport = ClientTransport(run, request, end)
            connection = HttpConnection(server)
            transport.protocol = connection
            connection.connection_made(transport)
            clients.append(connection)
        started = time.process_time()
        for connection in clients:
            run.sent += 1
            connection.data_received(request)
        await run.done
        spent = time.process_time() - started
        for connection in clients:
            connection.connection_lost(None)
        if round_:
            results.append(spent / args.requests * 1e6)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=[*sorted(PORTS), "budget"], default="json")
    parser.add_argument("--requests", type=int, default=100_000, help="requests per round")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--access-log", default="file", choices=["file", "off"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        log = str(workdir / "access.log") if args.access_log == "file" else "off"
        observability.configure(Settings(access_log=log))
        results = uvloop.run(measure(args, workdir))
        observability.shutdown()
    spread = f"{min(results):.1f}-{max(results):.1f}"
    print(f"{args.scenario}: {statistics.median(results):.1f} µs of CPU a request (rounds {spread})")


if __name__ == "__main__":
    main()
