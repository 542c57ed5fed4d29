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
_STOP = object()
_second_text: tuple[int, str] = (0, "")


def _iso_utc(wall: float) -> str:
    """RFC 3339 UTC with milliseconds; the seconds part is formatted once per second."""
    global _second_text
    second = int(wall)
    if _second_text[0] != second:
        _second_text = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_text[1]}.{int((wall - second) * 1000):03d}+00:00"


def entry(ctx: RequestContext, provider: str, now: float | None = None) -> dict[str, Any]:
    """The access-log record of one finished request (Envoy AI Gateway's field names); never a secret."""
    end = time.monotonic() if now is None else now
    headers = ctx.request.headers
    usage = ctx.usage
    ref = ctx.backend_ref
    request_model = (ref.model_name_override if ref is not None else None) or ctx.model
    wall_start = time.time() - (end - ctx.started_at)
    record: dict[str, Any] = {
        "start_time": _iso_utc(wall_start),
        "method": ctx.request.method,
        "request.path": ctx.request.path,
        "response_code": ctx.status or 500,
        "duration": round((end - ctx.started_at) * 1000, 3),  # milliseconds, as Envoy's %DURATION%
        "gen_ai.operation.name": ctx.operation,
        "gen_ai.original.model": ctx.model,
        "gen_ai.request.model": request_model,
        "gen_ai.response.model": ctx.response_model or None,
        "gen_ai.provider.name": provider or None,
        "gen_ai.usage.input_tokens": usage.input_tokens if usage is not None else None,
        "gen_ai.usage.output_tokens": usage.output_tokens if usage is not None else None,
        "gen_ai.usage.reasoning_tokens": usage.reasoning_tokens if usage is not None else None,
        "gen_ai.usage.cached_input_tokens": usage.cached_input_tokens if usage is not None else None,
        "stream": ctx.stream,
        "route": ctx.rule.route if ctx.rule is not None else None,
        "backend": ref.backend.name if ref is not None else None,
        "attempts": ctx.attempts,
        "upstream_attempts": ctx.attempt_log or None,  # "backend:outcome" of each attempt, in order
        "token_latency_ttft": round((ctx.first_byte_at - ctx.started_at) * 1000, 3)
        if ctx.stream and ctx.first_byte_at
        else None,
        "upstream_time": round(ctx.upstream_seconds * 1000, 3),
        "x-request-id": headers.get("x-request-id"),
        "session.id": headers.get(SESSION_HEADER),
        "user_agent": headers.get("user-agent"),
        "error": ctx.error or None,
    }
    for key, cost in ctx.costs.items():
        record.setdefault(key, cost)  # each llmRequestCosts metadataKey, flat as Envoy's dynamic metadata
    return record


class AccessLog:
    """Buffers encoded lines in a queue; a daemon thread writes them out in batches."""

    def __init__(self, target: str, max_queued: int = MAX_QUEUED) -> None:
        self.target = target  # "-" for stdout, else a file path (appended to)
        self.max_queued = max_queued
        self.dropped = 0  # lines dropped because the output could not keep up
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        os.register_at_fork(after_in_child=self._forget_thread)  # the writer thread does not survive a fork
        self._pending: list[bytes] = []  # encoded lines not yet handed to the writer thread
        self._waiting = 0  # lines handed over or pending and not yet written
        self._flush_handle: asyncio.TimerHandle | None = None

    def write(self, record: dict[str, Any]) -> None:
        """Encode one record; lines go to the writer thread in batches, so it wakes a few times a second."""
        if self._thread is None:  # first use in this process (a forked worker starts with none)
            self._start()
        if self._waiting >= self.max_queued:
            self.dropped += 1  # the pipe or disk is stuck: never let memory grow without bound
            return
        self._pending.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self._waiting += 1
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()  # not on an event loop: hand the line over at once
                return
            self._flush_handle = loop.call_later(FLUSH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._pending:
            self._queue.put(b"".join(self._pending))
            self._pending = []

    def _forget_thread(self) -> None:
        self._thread = None

    def _start(self) -> None:
        self._pid = os.getpid()
        self._queue = queue.SimpleQueue()
        self._pending, self._waiting, self._flush_handle = [], 0, None
        self._thread = threading.Thread(target=self._run, name="sluicegate-access-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # the raw descriptor, not sys.stdout: a write blocked on a full pipe must not hold a lock
        # that the main thread needs to print or to exit
        if self.target == "-":
            fd, owned = sys.stdout.fileno(), False
        else:
            fd, owned = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), True
        try:
            while True:
                item = self._queue.get()
                lines = []
                stop = item is _STOP
                if not stop:
                    lines.append(item)
                while not stop and len(lines) < 4096:  # take what else is queued: one write per batch
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    else:
                        lines.append(item)
                if lines:
                    data = b"".join(lines)
                    _write_all(fd, data)
                    self._waiting -= data.count(b"\n")
                if stop:
                    return
        finally:
            if owned:
                os.close(fd)

    def close(self, timeout: float = 2.0) -> None:
        """Write out what is queued (waiting at most `timeout` seconds) and stop the thread."""
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            return
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()
        self._queue.put(_STOP)
        thread.join(timeout)
        self._thread = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
