"""Writes held to the turn's end while several requests run: answers arrive whole, over real sockets."""

from __future__ import annotations

import asyncio

import uvloop

from sluicegate.core.context import Request
from sluicegate.core.inflight import InFlight, in_flight
from sluicegate.server.http import HttpConnection, HttpServer


async def _answer(request: Request, client: HttpConnection) -> None:
    """Echo the body back; `slow` bodies wait a little first, so that requests overlap."""
    if request.body.startswith(b"slow"):
        await asyncio.sleep(0.02)
    client.send(200, [(b"content-type", b"text/plain")], b"echo:" + request.body)


def _render_error(request: Request | None, status: int, message: str) -> tuple[list, bytes]:
    return [(b"content-type", b"text/plain")], message.encode()


async def _ask(port: int, body: bytes, leave_early: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
    await writer.drain()
    if leave_early:
        writer.close()
        return b""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    answer = await reader.readexactly(length)
    writer.close()
    return answer


def test_concurrent_answers_are_whole_and_a_lone_request_is_counted_out_again() -> None:
    async def main() -> None:
        server = HttpServer(_answer, _render_error)
        assert server.in_flight is in_flight(asyncio.get_running_loop())
        assert isinstance(server.in_flight, InFlight)
        port = await server.listen("127.0.0.1", 0)
        assert not server.in_flight.batching
        bodies = [b"slow-%d" % i if i % 2 else b"fast-%d" % i for i in range(60)]
        leavers = [_ask(port, b"slow-gone-%d" % i, leave_early=True) for i in range(10)]
        answers = await asyncio.gather(*(_ask(port, body) for body in bodies), *leavers)
        assert list(answers[:60]) == [b"echo:" + body for body in bodies]
        await asyncio.sleep(0.1)  # the handlers of the clients that left finish or are cancelled
        assert server.in_flight.count == 0  # batching is off again for the next lone request
        assert await _ask(port, b"alone") == b"echo:alone"
        assert server.in_flight.count == 0
        await server.shutdown(1.0)

    uvloop.run(main())
