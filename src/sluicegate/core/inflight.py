"""How many client requests an event loop is answering: while several are, writes wait for the turn's end."""

from __future__ import annotations

import asyncio
import weakref


class InFlight:
    """Client requests being answered on one event loop (the HTTP server counts them).

    While more than one is, the client and backend sides hold their writes until the end of the loop turn
    (`batching`), so that the writes of one turn go out in a burst and wake the process at the other end
    (a backend, a client) once, not once per write. On a VM the wake-up of an idle CPU is an interrupt
    between vCPUs that costs more than the write itself (bench json: 55-57 -> 47-51 µs of gateway CPU a
    request, docs/benchmarks.md). A lone request has nothing to share a burst with: its writes go out at once.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    @property
    def batching(self) -> bool:
        """Whether writes are worth holding until the end of the loop turn."""
        return self.count > 1


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, InFlight] = weakref.WeakKeyDictionary()


def in_flight(loop: asyncio.AbstractEventLoop) -> InFlight:
    """The loop's InFlight (one per event loop, shared by the client and backend sides)."""
    found = _BY_LOOP.get(loop)
    if found is None:
        found = _BY_LOOP[loop] = InFlight()
    return found
