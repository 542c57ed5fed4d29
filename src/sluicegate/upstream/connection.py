"""One keep-alive HTTP/1.1 connection to a backend: asyncio protocol + httptools response parser."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import httptools

from sluicegate.core.inflight import in_flight

_HIGH_WATER = 256 * 1024  # buffered response bytes before we stop reading from the backend
_LOW_WATER = 64 * 1024
_SWEEP_SECONDS = 0.02  # how late a deadline may fire; one timer for all waits instead of one per wait


class UpstreamError(Exception):
    """The backend could not be reached or broke the connection."""


class UpstreamConnection(asyncio.Protocol):
    """Sends one request at a time; hands the response back head first (names lower-case), then the body."""

    def __init__(self, loop: asyncio.AbstractEventLoop, authority: bytes) -> None:
        self.loop = loop
        self.in_flight = in_flight(loop)
        self.authority = authority  # the Host header value
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.requests_sent = 0
        self.error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._request = b""  # the request written at the end of the loop turn
        self._reset()

    def _reset(self) -> None:
        self.deadline = 0.0  # time.monotonic() after which a wait raises TimeoutError; 0 = none
        # Takes body pieces as they arrive (True: taken) instead of queueing them for read_chunk: a relay
        # then costs no task wake-up per piece. Declined pieces (False) queue as usual.
        self.sink: Callable[[bytes], bool] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = True
        self.received_any = False
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._framed = False  # Content-Length or chunked; else the body runs until close

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.head_done and not self.complete and not self._framed:
            self.complete = True  # a body delimited by the close
            self.keep_alive = False
        elif not self.complete:
            self.error = exc or UpstreamError("connection closed by the backend")
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = UpstreamError(f"malformed HTTP response from the backend: {exc}")
            self.close()
            self._wake()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()  # once here: every reader of the headers compares lower-case names
        self.headers.append((name, value))
        if name == b"content-length" or name == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None and not self._body and self.sink(body):
            return
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- the caller's side ------------------------------------------------------------------

    def send(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        """Write one request (at the end of the loop turn while batching: InFlight); adds Host and length."""
        if self.transport is None:
            raise UpstreamError("connection closed by the backend")
        self._reset()
        self.requests_sent += 1
        head = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), b"host: ", self.authority, b"\r\n"]
        for name, value in headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        head.append(body)
        if self.in_flight.batching:
            self._request = b"".join(head)
            self.loop.call_soon(self._flush)
        else:
            self.transport.write(b"".join(head))

    def _flush(self) -> None:
        request, self._request = self._request, b""
        if self.transport is not None and request:
            self.transport.write(request)

    async def read_head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Wait for the status line and headers."""
        while not self.head_done:
            if self.error is not None:
                raise UpstreamError(str(self.error) or "connection closed by the backend")
            await self._wait()
        return self.status, self.headers

    async def read_chunk(self) -> bytes | None:
        """The next piece of the body as it arrived; None at the end."""
        while True:
            if self._body:
                chunk = self._body.popleft()
                self._buffered -= len(chunk)
                if self._buffered < _LOW_WATER and self.transport is not None and not self.complete:
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self.error is not None:
                raise UpstreamError(str(self.error) or "connection closed by the backend")
            await self._wait()

    async def read_body(self) -> bytes:
        """The whole remaining body."""
        if self.complete:  # all of it has arrived (the usual case): no wait, nothing to resume
            body = b"".join(self._body)
            self._body.clear()
            self._buffered = 0
            return body
        parts = []
        while (chunk := await self.read_chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    @property
    def reusable(self) -> bool:
        """Whether the connection can carry another request."""
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        """Drop the connection (abort: nothing more is owed to the backend)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    async def _wait(self) -> None:
        self._waiter = self.loop.create_future()
        if self.deadline:
            _DEADLINES.watch(self)
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.deadline and time.monotonic() >= self.deadline:
            raise TimeoutError

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Deadlines:
    """Wakes waits whose connection's deadline passed; one periodic timer for all connections of a loop."""

    def __init__(self) -> None:
        self.watched: set[UpstreamConnection] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def watch(self, connection: UpstreamConnection) -> None:
        if self.loop is not connection.loop:  # a new event loop (tests run several): start afresh
            self.watched.clear()
            self.timer, self.loop = None, connection.loop
        self.watched.add(connection)
        if self.timer is None:
            self.timer = connection.loop.call_later(_SWEEP_SECONDS, self.sweep, connection.loop)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        for connection in list(self.watched):
            waiter = connection._waiter
            if waiter is None or not connection.deadline:
                self.watched.discard(connection)
            elif now >= connection.deadline:
                self.watched.discard(connection)
                if not waiter.done():
                    waiter.set_result(None)
        self.timer = loop.call_later(_SWEEP_SECONDS, self.sweep, loop) if self.watched else None


_DEADLINES = _Deadlines()
