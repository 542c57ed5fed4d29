"""The access log: one JSON line per LLM request, written by a background thread off the request path."""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import threading
import time
from typing import Any

import orjson

from sluicegate.core.context import RequestContext

SESSION_HEADER = "agent-session-id"
MAX_QUEUED = 100_000  # lines waiting for the writer; beyond, lines are dropped and counted
FLUSH_SECONDS = 0.05  # lines gather on the event loop this long, then go to the writer thread in one batch
BUFFER_BYTES = 1 << 20  # a batch buffer; a full one goes to the writer thread before its time
SPARE_BUFFERS = 4  # written buffers kept for reuse (more exist only while the writer falls behind)
_STOP = object()
_MILLIS = tuple(f".{ms:03d}+00:00" for ms in range(1000))
_second_text: list[Any] = [-1, ""]  # the last second formatted, and its text
_millis_text: list[Any] = [-1, ""]  # the last millisecond (since the epoch) formatted, and its text


def _iso_utc(wall: float) -> str:
    """RFC 3339 UTC with milliseconds; requests in the same millisecond share the text."""
    millis = int(wall * 1000)
    last = _millis_text
    if last[0] != millis:
        second, ms = divmod(millis, 1000)
        cached = _second_text
        if cached[0] != second:
            cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            cached[0] = second
        last[1] = cached[1] + _MILLIS[ms]
        last[0] = millis
    return last[1]


def entry(ctx: RequestContext, provider: str, now: float | None = None) -> dict[str, Any]:
    """The access-log record of one finished request (Envoy AI Gateway's field names); never a secret."""
    end = time.monotonic() if now is None else now
    request = ctx.request
    headers = request.headers
    started = ctx.started_at
    duration = end - started
    ref = ctx.backend_ref
    rule = ctx.rule
    usage = ctx.usage
    inputs: int | None
    outputs: int | None
    reasoning: int | None
    cached: int | None
    if usage is not None:
        inputs, outputs = usage.input_tokens, usage.output_tokens
        reasoning, cached = usage.reasoning_tokens, usage.cached_input_tokens
    else:
        inputs = outputs = reasoning = cached = None
    first_byte = ctx.first_byte_at if ctx.stream else 0.0
    # milliseconds to the microsecond, as round(seconds * 1000, 3) but a quarter of its cost
    record: dict[str, Any] = {
        "start_time": _iso_utc(time.time() - duration),
        "method": request.method,
        "request.path": request.path,
        "response_code": ctx.status or 500,
        "duration": int(duration * 1e6 + 0.5) / 1000,  # milliseconds, as Envoy's %DURATION%
        "gen_ai.operation.name": ctx.operation,
        "gen_ai.original.model": ctx.model,
        "gen_ai.request.model": (ref.model_name_override if ref is not None else None) or ctx.model,
        "gen_ai.response.model": ctx.response_model or None,
        "gen_ai.provider.name": provider or None,
        "gen_ai.usage.input_tokens": inputs,
        "gen_ai.usage.output_tokens": outputs,
        "gen_ai.usage.reasoning_tokens": reasoning,
        "gen_ai.usage.cached_input_tokens": cached,
        "stream": ctx.stream,
        "route": rule.route if rule is not None else None,
        "backend": ref.backend.name if ref is not None else None,
        "attempts": ctx.attempts,
        "upstream_attempts": ctx.attempt_log or None,  # "backend:outcome" of each attempt, in order
        "token_latency_ttft": int((first_byte - started) * 1e6 + 0.5) / 1000 if first_byte else None,
        "upstream_time": int(ctx.upstream_seconds * 1e6 + 0.5) / 1000,
        "x-request-id": headers.get("x-request-id"),
        "session.id": headers.get(SESSION_HEADER),
        "user_agent": headers.get("user-agent"),
        "error": ctx.error or None,
    }
    costs = ctx.costs
    if costs:
        for key, cost in costs.items():
            if key not in record:  # each llmRequestCosts metadataKey, flat as Envoy's dynamic metadata
                record[key] = cost
    return record


class AccessLog:
    """Encodes lines into a batch buffer; a daemon thread writes each batch out with one write."""

    def __init__(self, target: str, max_queued: int = MAX_QUEUED) -> None:
        self.target = target  # "-" for stdout, else a file path (appended to)
        self.max_queued = max_queued
        self.dropped = 0  # lines dropped because the output could not keep up
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # (bytes-like, lines, buffer | None)
        self._spare: queue.SimpleQueue[bytearray] = queue.SimpleQueue()  # written buffers, to fill again
        self._writer: threading.Thread | None = None
        self._pid = 0
        os.register_at_fork(after_in_child=self._forget_writer)  # the writer thread does not survive a fork
        # lines not yet handed to the writer thread, copied into a buffer of fixed size that is used
        # again once written: fresh memory per batch (or a bytes object kept per line) costs page faults
        self._buffer = bytearray()
        self._view = memoryview(self._buffer)
        self._used = 0  # bytes of the buffer filled
        self._queued = 0  # lines encoded (in this process); only the event loop's thread adds to it
        self._handed = 0  # of these, lines handed to the writer thread
        self._written = 0  # lines written out; only the writer thread adds to it
        self._flush_handle: asyncio.TimerHandle | None = None

    def write(self, record: dict[str, Any]) -> None:
        """Encode one record; lines go to the writer thread in batches, so it wakes a few times a second."""
        if self._writer is None:  # first use in this process (a forked worker starts with none)
            self._start()
        if self._queued - self._written >= self.max_queued:
            self.dropped += 1  # the pipe or disk is stuck: never let memory grow without bound
            return
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        start = self._used
        end = start + len(line)
        if end > BUFFER_BYTES:  # the buffer is full: hand it over now
            self._flush()
            start, end = 0, len(line)
            if end > BUFFER_BYTES:  # a line longer than a buffer goes on its own
                self._queue.put((line, 1, None))
                self._queued += 1
                self._handed = self._queued
                return
        self._view[start:end] = line
        self._used = end
        self._queued += 1
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()  # not on an event loop: hand the line over at once
                return
            self._flush_handle = loop.call_later(FLUSH_SECONDS, self._flush)

    def _flush(self) -> None:
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()  # when called before its time (a full buffer); cancelling a fired one is a no-op
            self._flush_handle = None
        if self._used:
            self._queue.put((self._view[: self._used], self._queued - self._handed, self._buffer))
            self._handed = self._queued
            try:
                self._buffer = self._spare.get_nowait()
            except queue.Empty:
                self._buffer = bytearray(BUFFER_BYTES)
            self._view, self._used = memoryview(self._buffer), 0

    def _forget_writer(self) -> None:
        self._writer = None

    def _start(self) -> None:
        self._pid = os.getpid()
        self._queue, self._spare = queue.SimpleQueue(), queue.SimpleQueue()
        self._buffer = bytearray(BUFFER_BYTES)
        self._view, self._used, self._flush_handle = memoryview(self._buffer), 0, None
        self._queued = self._handed = self._written = 0
        self._writer = threading.Thread(target=self._run, name="sluicegate-access-log", daemon=True)
        self._writer.start()

    def _run(self) -> None:
        # the raw descriptor, not sys.stdout: a write blocked on a full pipe must not hold a lock
        # that the main thread needs to print or to exit
        if self.target == "-":
            fd, owned = sys.stdout.fileno(), False
        else:
            fd, owned = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), True
        queued, spare = self._queue, self._spare
        try:
            while True:
                item = queued.get()
                batches = []
                stop = item is _STOP
                if not stop:
                    batches.append(item)
                while not stop and len(batches) < 4096:  # take what else is queued: one write for all
                    try:
                        item = queued.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    else:
                        batches.append(item)
                if batches:
                    # one batch (the usual case: a flush every FLUSH_SECONDS) is written without a copy
                    data = batches[0][0] if len(batches) == 1 else b"".join(b[0] for b in batches)
                    _write_all(fd, data)
                    self._written += sum(b[1] for b in batches)
                    for _, _, buffer in batches:
                        if buffer is not None and spare.qsize() < SPARE_BUFFERS:
                            spare.put(buffer)
                if stop:
                    return
        finally:
            if owned:
                os.close(fd)

    def close(self, timeout: float = 2.0) -> None:
        """Write out what is queued (waiting at most `timeout` seconds) and stop the thread."""
        thread = self._writer
        if thread is None or self._pid != os.getpid():
            return
        self._flush()
        self._queue.put(_STOP)
        thread.join(timeout)
        self._writer = None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)  # not in the bound: mypyc 2.4.1 evaluates a memoryview's twice
        view = view[written:]
