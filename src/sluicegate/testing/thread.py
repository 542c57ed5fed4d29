"""FakeProviderThread: a FakeProvider on its own thread and event loop, for synchronous tests."""

from __future__ import annotations

import asyncio
import ssl
import threading

from sluicegate.testing.fake_provider import FakeProvider, RecordedRequest


class FakeProviderThread:
    """Runs a FakeProvider on its own thread and event loop, for synchronous tests."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.provider = FakeProvider()
        self._address = (host, port, ssl_context)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeProviderThread:
        """Start the thread and wait until the provider listens."""
        if self._thread is not None:
            raise RuntimeError("FakeProviderThread already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.provider.start(*self._address))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.provider.stop())
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.close()

        thread = threading.Thread(target=main, name="sluicegate-fake-provider", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Stop the provider and join the thread."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    def __enter__(self) -> FakeProviderThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget recorded requests and zero the counters."""
        self.provider.reset()

    @property
    def port(self) -> int:
        """The bound port."""
        return self.provider.port

    @property
    def base_url(self) -> str:
        """The provider's root URL (append /v1 for the OpenAI SDK)."""
        return self.provider.base_url

    @property
    def requests(self) -> list[RecordedRequest]:
        """The last (at most 1000) requests received."""
        return self.provider.requests

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted."""
        return self.provider.connections_opened

    @property
    def connections_open(self) -> int:
        """TCP connections currently open."""
        return self.provider.connections_open

    @property
    def streams_completed(self) -> int:
        """Streams sent to the end, `[DONE]` included."""
        return self.provider.streams_completed

    @property
    def streams_aborted(self) -> int:
        """Streams cut short because writing to the client failed (the client went away)."""
        return self.provider.streams_aborted

    @property
    def streams_dropped(self) -> int:
        """Responses the provider cut short on purpose (`x-fake-drop-after`)."""
        return self.provider.streams_dropped
