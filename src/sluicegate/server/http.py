"""The client-facing HTTP/1.1 server: asyncio protocol + httptools parser, one per connection."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

from sluicegate.core.context import Request
from sluicegate.core.inflight import in_flight

log = logging.getLogger("sluicegate.server")

Handler = Callable[[Request, "HttpConnection"], Awaitable[None]]
# Answers the server gives before any handler runs (413, 400, 408, ...), built by the caller's API format.
ErrorRenderer = Callable[[Request | None, int, str], tuple[list[tuple[bytes, bytes]], bytes]]

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_PIPELINE_DEPTH = 16  # queued requests per connection before we stop reading from it
_HIGH_WATER = 256 * 1024
_FLUSH_AT = 64 * 1024  # held-back response bytes that drain() writes out at once
# Requests started per loop turn; more wait for the next turn, so that a burst of new requests cannot
# hold up the streams already running for longer than one turn's worth of starts (about 3 ms).
_STARTS_PER_TURN = 64


@dataclass(slots=True)
class ServerLimits:
    """Per-connection limits; sizes in bytes, times in seconds."""

    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 32 * 1024 * 1024
    request_read_timeout: float = 30.0  # from the first byte of a request to its last
    idle_timeout: float = 60.0  # keep-alive connection with nothing to do


def status_line(status: int) -> bytes:
    """`HTTP/1.1 200 OK\\r\\n`."""
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


def _head(status: int, headers: list[tuple[bytes, bytes]], framing: bytes) -> bytearray:
    out = bytearray(status_line(status))
    for name, value in headers:  # appended piece by piece: no temporary bytes per header
        out += name
        out += b": "
        out += value
        out += b"\r\n"
    out += framing
    return out


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler for each in order, writes answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.limits = server.limits
        self.in_flight = server.in_flight
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.queue: deque[tuple[Request, bool, bool]] = deque()  # (request, keep_alive, http/1.0)
        self.task: asyncio.Task[None] | None = None
        self.admitting = False  # the next request waits for a start slot (HttpServer.admit)
        self.deadline = 0.0  # loop time after which the sweeper closes us; 0 = none
        self.closing = False  # finish the current response, then close
        self.reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._started = False  # response status line sent
        self._chunked = False
        self._http10 = False  # HTTP/1.0 client: no chunked encoding, a streamed body ends with the close
        self._keep_alive = True
        # Response bytes are held back until the current loop turn ends and go out in one write: a stream
        # that arrives whole (head, events, last chunk) costs one send() syscall, not three+; whole answers
        # too while several requests run (InFlight), so that the client side is woken once per turn.
        self._out: list[bytes | bytearray] = []
        self._out_size = 0
        self._flush_soon = False
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_map: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._in_message = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        self.server.connections.add(self)
        self.deadline = self.loop.time() + self.limits.idle_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client left: stop the upstream work and free its connection
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("client disconnected"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "Protocol upgrades are not supported.")
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._fail(400, f"Malformed HTTP request: {exc}.")

    def eof_received(self) -> bool:
        # Half-close: answer what we have queued, then close.
        if self.task is None and not self.queue:
            return False
        self.closing = True
        return True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self.deadline = self.loop.time() + self.limits.request_read_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self.limits.max_header_bytes:
            self._fail(431, "Request header fields too large.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.limits.max_header_bytes:
            self._fail(431, "Request header fields too large.")

    def on_headers_complete(self) -> None:
        headers: dict[str, str] = {}  # lower-case names; repeated headers joined as one
        for name, value in self._headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._header_map = headers
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            self._fail(413, self._too_large_message())
            return
        expect = headers.get("expect")
        if expect is not None and expect.lower() == "100-continue" and self.transport and self.task is None:
            self._flush()
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_body_bytes:
            self._fail(413, self._too_large_message())
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.closing and self.transport is None:
            return
        raw = httptools.parse_url(self._url)
        # None when there is none, though httptools' stub says bytes: read untyped (compiled code checks)
        query: bytes | None = getattr(raw, "query")  # noqa: B009
        request = Request(
            method=self.parser.get_method().decode("ascii"),
            path=raw.path.decode("latin-1"),
            query=query.decode("latin-1") if query else "",
            headers=self._header_map,
            body=b"".join(self._body) if len(self._body) != 1 else self._body[0],
            raw_headers=self._headers,
            client=self.peer,
        )
        keep_alive = self.parser.should_keep_alive()
        http10 = self.parser.get_http_version() == "1.0"
        self._reset_message()
        self.deadline = 0.0
        self.queue.append((request, keep_alive, http10))
        if self.task is None:
            self._next()
        elif len(self.queue) >= _PIPELINE_DEPTH and self.transport and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    # -- running handlers -------------------------------------------------------------------

    def _next(self) -> None:
        if not self.queue or self.transport is None or self.admitting:
            return
        if not self.server.admit(self):
            self.admitting = True  # the server calls start_next in a later loop turn
            return
        self.start_next()

    def start_next(self) -> None:
        """Run the handler for the first queued request."""
        self.admitting = False
        if not self.queue or self.transport is None or self.task is not None:
            return
        request, keep_alive, self._http10 = self.queue.popleft()
        self._keep_alive = keep_alive and not self.closing
        self._started = False
        self.task = self.loop.create_task(self._run(request))
        if self.reading_paused and len(self.queue) < _PIPELINE_DEPTH // 2 and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()

    async def _run(self, request: Request) -> None:
        self.in_flight.count += 1  # here, not in start_next: a task cancelled before it ran never gets here
        try:
            await self.server.handler(request, self)
            if not self._started:
                raise RuntimeError("handler returned without answering")
        except asyncio.CancelledError:
            return  # the client went away
        except Exception as exc:
            if not isinstance(exc, ConnectionError):
                log.exception("unhandled error answering %s %s", request.method, request.path)
            if self.transport is not None:
                if self._started:
                    self._flush()
                    self.transport.abort()  # a half-sent response cannot be repaired: cut it
                    self.transport = None
                    return
                headers, body = self.server.render_error(request, 500, "Internal gateway error.")
                self.send(500, headers, body)
        finally:
            self.task = None
            self.in_flight.count -= 1
        if self.transport is None:
            return
        if not self._keep_alive or (self.closing and not self.queue):
            self._flush()
            self.transport.close()
            self.transport = None
            return
        if self.queue:
            self._next()
        else:
            self.deadline = self.loop.time() + self.limits.idle_timeout

    # -- ClientWriter -----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the status line has gone out."""
        return self._started

    def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Send a whole response with Content-Length, in one write (at the end of the turn when batching)."""
        self._started = True
        if self.transport is None:
            return
        framing = b"content-length: %d\r\n" % len(body)
        if not self._keep_alive or self.closing:
            framing += b"connection: close\r\n"
        head = _head(status, headers, framing + b"\r\n")
        head += body
        if self.in_flight.batching:
            self._held(head)  # the bytearray itself: nothing else holds it
        elif self._out:
            self._held(head)
            self._flush()
        else:
            self.transport.write(head)

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Start a streamed response: chunked, or until close for an HTTP/1.0 client."""
        self._started = True
        if self.transport is None:
            raise ConnectionResetError("client disconnected")
        if self._http10:
            self._keep_alive = False
            self._held(bytes(_head(status, headers, b"connection: close\r\n\r\n")))
            return
        self._chunked = True
        framing = b"transfer-encoding: chunked\r\n"
        if not self._keep_alive or self.closing:
            framing += b"connection: close\r\n"
        self._held(bytes(_head(status, headers, framing + b"\r\n")))

    def write(self, data: bytes) -> None:
        """Write one piece of a started response (empty data writes nothing)."""
        if self.transport is None:
            raise ConnectionResetError("client disconnected")
        if data:
            if not self._chunked:
                self._held(data)
            elif len(data) < 4096:  # one small piece framed in one go; a large one is not copied twice
                self._held(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                self._held(b"%x\r\n" % len(data))
                self._held(data)
                self._held(b"\r\n")

    def _held(self, data: bytes | bytearray) -> None:
        """Queue response bytes for the write at the end of this loop turn."""
        self._out.append(data)
        self._out_size += len(data)
        if not self._flush_soon:
            self._flush_soon = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write the held-back response bytes in one piece."""
        self._flush_soon = False
        out = self._out
        if not out:
            return
        self._out = []
        self._out_size = 0
        if self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    @property
    def write_paused(self) -> bool:
        """Whether the client's socket buffer is full."""
        return self._write_paused

    async def drain(self) -> None:
        """Wait while the client's socket buffer is full."""
        if self.transport is None:
            raise ConnectionResetError("client disconnected")
        if self._out_size >= _FLUSH_AT:
            self._flush()
        if self._write_paused:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def end(self) -> None:
        """Finish a started response."""
        if self.transport is not None and self._chunked:
            self._held(b"0\r\n\r\n")
        self._chunked = False

    # -- failures before a handler runs -----------------------------------------------------

    def _too_large_message(self) -> str:
        return f"Request body is larger than the limit of {self.limits.max_body_bytes} bytes."

    def _fail(self, status: int, message: str) -> None:
        """Answer a request we refuse to read further, then close the connection."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.queue.clear()
        request = None
        if self._url:
            raw = httptools.parse_url(self._url) if self._url.startswith(b"/") else None
            path = raw.path.decode("latin-1") if raw else ""
            request = Request("", path, "", {}, b"", self._headers, self.peer)
        headers, body = self.server.render_error(request, status, message)
        if self.task is None:
            self._keep_alive = False
            self.send(status, headers, body)
            self._flush()
            self.transport.close()
            self.transport = None
        else:
            self.transport.pause_reading()  # the running handler finishes, then we close

    def expire(self, now: float) -> None:
        """Called by the sweeper: close if idle too long or a request is too slow to arrive."""
        if not self.deadline or now < self.deadline or self.transport is None:
            return
        if self._in_message and self.task is None:
            self._fail(408, "Request was not received in time.")
        elif self.task is None:
            self.transport.close()
            self.transport = None

    def close_if_idle(self) -> None:
        """During shutdown: close now when nothing runs, else after the current response."""
        self.closing = True
        if self.task is None and not self.queue and self.transport is not None:
            self._flush()
            self.transport.close()
            self.transport = None


class HttpServer:
    """A listening socket and its connections, with a sweeper for timeouts and graceful shutdown."""

    def __init__(
        self,
        handler: Handler,
        render_error: ErrorRenderer,
        limits: ServerLimits | None = None,
    ) -> None:
        self.handler = handler
        self.render_error = render_error
        self.limits = limits or ServerLimits()
        self.loop = asyncio.get_running_loop()
        self.in_flight = in_flight(self.loop)
        self.connections: set[HttpConnection] = set()
        self._server: Any = None  # uvloop's Server, not asyncio's (its `sockets` is a list)
        self._sweeper: asyncio.Task[None] | None = None
        self._starts = 0  # requests started in this loop turn
        self._waiting: deque[HttpConnection] = deque()  # connections whose next request waits for a turn

    def admit(self, connection: HttpConnection) -> bool:
        """Whether a request may start now; if not, the connection starts in a later loop turn."""
        if self._starts < _STARTS_PER_TURN and not self._waiting:
            if not self._starts:
                self.loop.call_soon(self._next_turn)
            self._starts += 1
            return True
        self._waiting.append(connection)
        return False

    def _next_turn(self) -> None:
        """Start the requests that waited; runs once per loop turn while any wait."""
        self._starts = 0
        waiting = self._waiting
        while waiting and self._starts < _STARTS_PER_TURN:
            connection = waiting.popleft()
            if connection.transport is not None:
                self._starts += 1
                connection.start_next()
        if self._starts:
            self.loop.call_soon(self._next_turn)

    async def listen(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Start accepting; returns the bound port."""
        self._server = await self.loop.create_server(
            lambda: HttpConnection(self), host, port, reuse_port=reuse_port or None, backlog=2048
        )
        self._sweeper = self.loop.create_task(self._sweep())
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        step = max(0.05, min(self.limits.request_read_timeout, self.limits.idle_timeout) / 4)
        while True:
            await asyncio.sleep(step)
            now = self.loop.time()
            for connection in list(self.connections):
                connection.expire(now)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let in-flight requests and streams finish for up to `grace` seconds."""
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while self.connections and self.loop.time() < deadline:
            for connection in list(self.connections):
                connection.close_if_idle()
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
