"""Socket writes held until the end of the event loop's turn, then made in one burst."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

log = logging.getLogger("sluicegate.server")


class TurnFlush:
    """Runs queued flushes once, at the end of the current loop turn, in the order they were queued.

    Why: writes made in one burst wake the process at the other end (a backend, a client) once, not once
    per write. On a VM the wake-up of an idle CPU is an interrupt between vCPUs that costs more than the
    write itself (bench json: 55-59 -> 47-49 µs of gateway CPU a request, docs/benchmarks.md). A lone
    request has nothing to share a burst with: `batching` is False then and its writes go out at once.
    """

    __slots__ = ("_queued", "active", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.active = 0  # client requests being answered on this loop (the HTTP server counts them)
        self._queued: list[Callable[[], None]] = []

    @property
    def batching(self) -> bool:
        """Whether writes are worth holding for the burst: more than one request is being answered."""
        return self.active > 1

    def later(self, flush: Callable[[], None]) -> None:
        """Call `flush` at the end of this loop turn."""
        if not self._queued:
            self.loop.call_soon(self._run)
        self._queued.append(flush)

    def _run(self) -> None:
        queued, self._queued = self._queued, []
        for flush in queued:
            try:
                flush()
            except Exception:  # one broken socket must not keep the others' bytes back
                log.exception("a held write failed")


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnFlush] = weakref.WeakKeyDictionary()


def turn_flush(loop: asyncio.AbstractEventLoop) -> TurnFlush:
    """The loop's TurnFlush (one per event loop, shared by the client and backend sides)."""
    turn = _BY_LOOP.get(loop)
    if turn is None:
        turn = _BY_LOOP[loop] = TurnFlush(loop)
    return turn
