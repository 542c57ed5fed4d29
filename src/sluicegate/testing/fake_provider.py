"""The fake provider: an OpenAI-compatible LLM server on aiohttp, for tests, benchmarks and the demo."""

from __future__ import annotations

import asyncio
import itertools
import signal
import ssl
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from sluicegate.testing import openai_format as fmt
from sluicegate.testing.dialects import find_dialect
from sluicegate.testing.knobs import Knobs
from sluicegate.testing.openai_format import MODELS

__all__ = ["MODELS", "FakeProvider", "RecordedRequest", "run", "serve"]

MAX_RECORDED = 1000
MAX_BODY = 64 * 1024 * 1024
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


@dataclass(slots=True)
class RecordedRequest:
    """One request as the fake provider received it (header names lower-cased)."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


class _BadRequest(Exception):
    """A request the fake answers with a 400 OpenAI error envelope."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None, type_: str | None = None
) -> web.Response:
    body = fmt.error_body(message, type_ or fmt.error_type(status), param, code)
    return web.Response(status=status, body=body, content_type=_JSON)


def _status_response(knobs: Knobs) -> web.Response:
    status = knobs.status or 500
    if knobs.error_body is None:
        return _error(status, f"fake error: status {status}", code=f"fake_{status}")
    raw = knobs.error_body
    try:
        orjson.loads(raw)
        content_type = _JSON
    except orjson.JSONDecodeError:
        content_type = "text/plain"
    return web.Response(status=status, body=raw.encode(), content_type=content_type)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(data, dict):
        raise _BadRequest("The request body must be a JSON object.")
    return data


def _model_of(data: dict[str, Any], path: str) -> str:
    model = data.get("model")
    if isinstance(model, str) and model:
        return model
    parts = path.split("/")
    if "deployments" in parts:
        i = parts.index("deployments")
        if i + 1 < len(parts) and parts[i + 1]:
            return parts[i + 1]
    raise _BadRequest("you must provide a model parameter", "model")


def _include_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _close(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


class _Server(web.Server):
    """aiohttp's low-level server, counting the provider's connections."""

    def __init__(self, provider: FakeProvider) -> None:
        super().__init__(provider._handle, request_factory=self._request, access_log=None)
        self._provider = provider

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, self._loop, client_max_size=MAX_BODY)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        """Count an accepted connection."""
        super().connection_made(handler, transport)
        self._provider.connections_opened += 1
        self._provider.connections_open += 1

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        """Count a closed connection (aiohttp calls this once per connection)."""
        super().connection_lost(handler, exc)
        self._provider.connections_open -= 1


class FakeProvider:
    """An OpenAI-compatible fake LLM server; `await start()` it on a running event loop."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.scheme = "http"
        self.requests: list[RecordedRequest] = []
        self.connections_opened = 0
        self.connections_open = 0
        self.streams_completed = 0
        self.streams_aborted = 0
        self.streams_dropped = 0
        self._runner: web.ServerRunner | None = None
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """The provider's root URL, e.g. http://127.0.0.1:8090 (append /v1 for the OpenAI SDK)."""
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"{self.scheme}://{_url_host(host)}:{self.port}"

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Listen on host:port (0 picks a free port; HTTPS with ssl_context) and return the bound port."""
        if self._runner is not None:
            raise RuntimeError("FakeProvider already started")
        runner = web.ServerRunner(_Server(self), shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.scheme = "https" if ssl_context is not None else "http"
        self.port = runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and close all connections (waits at most ~1 s for running handlers)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def reset(self) -> None:
        """Forget recorded requests and zero the counters (but not `connections_open`)."""
        self.requests.clear()
        self.connections_opened = self.streams_completed = self.streams_aborted = self.streams_dropped = 0

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        path = request.path
        requests = self.requests
        requests.append(RecordedRequest(request.method, path, request.query_string, headers, body))
        if len(requests) > MAX_RECORDED:
            del requests[0]
        try:
            knobs = Knobs(headers)
        except ValueError as exc:
            return _error(400, str(exc))
        if knobs.delay_ms:
            await asyncio.sleep(knobs.delay_ms / 1000)
        if knobs.drop_after == 0:
            _close(request)
            self.streams_dropped += 1
            return web.Response()
        dialect = find_dialect(request.method, path)
        if knobs.status is not None:
            return dialect.error(knobs) if dialect is not None else _status_response(knobs)
        if dialect is not None:
            return await dialect.handle(self, request, body, knobs)
        try:
            method = request.method
            if method == "POST":
                if path.endswith("/chat/completions"):
                    return await self._chat(request, _json_object(body), knobs)
                if path.endswith("/completions"):
                    return await self._completions(request, _json_object(body), knobs)
                if path.endswith("/embeddings"):
                    return self._embeddings(_json_object(body), knobs)
            elif method == "GET":
                if path.endswith("/models"):
                    return web.Response(body=fmt.MODELS_LIST, content_type=_JSON)
                _, found, model = path.rpartition("/models/")
                if found and model in fmt.MODEL_OBJECTS:
                    return web.Response(body=fmt.MODEL_OBJECTS[model], content_type=_JSON)
                if found and model and "/" not in model:
                    return _error(
                        404,
                        f"The model '{model}' does not exist",
                        "model",
                        "model_not_found",
                        "invalid_request_error",
                    )
        except _BadRequest as exc:
            return _error(400, str(exc), exc.param)
        return _error(404, f"Invalid URL ({request.method} {path})", type_="invalid_request_error")

    def _usage(self, knobs: Knobs, prompt_tokens: int, pieces: int) -> dict[str, Any]:
        return fmt.usage(
            knobs.prompt_tokens if knobs.prompt_tokens is not None else prompt_tokens,
            knobs.completion_tokens if knobs.completion_tokens is not None else pieces,
            knobs.cached_tokens or 0,
            knobs.reasoning_tokens or 0,
        )

    async def _chat(self, request: web.BaseRequest, data: dict[str, Any], knobs: Knobs) -> web.StreamResponse:
        model = _model_of(data, request.path)
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise _BadRequest("'messages' must be a list of messages", "messages")
        reply = knobs.reply if knobs.reply is not None else fmt.chat_reply(messages)
        pieces = fmt.split_reply(reply, knobs.chunks)
        use = self._usage(knobs, fmt.chat_prompt_tokens(messages), len(pieces))
        cid = f"chatcmpl-fake{next(self._ids):012d}"
        created = int(time.time())
        if data.get("stream") is True:
            chunks = fmt.ChatChunks(cid, created, model, _include_usage(data))
            return await self._stream(request, chunks, pieces, use, knobs)
        return await self._unary(request, fmt.chat_completion(cid, created, model, reply, use), knobs)

    async def _completions(
        self, request: web.BaseRequest, data: dict[str, Any], knobs: Knobs
    ) -> web.StreamResponse:
        model = _model_of(data, request.path)
        texts = fmt.input_texts(data.get("prompt"))
        if texts is None:
            raise _BadRequest("'prompt' must be a string, a list of strings or token arrays", "prompt")
        reply = knobs.reply if knobs.reply is not None else fmt.completion_reply(texts)
        pieces = fmt.split_reply(reply, knobs.chunks)
        use = self._usage(knobs, fmt.word_tokens(texts), len(pieces))
        cid = f"cmpl-fake{next(self._ids):012d}"
        created = int(time.time())
        if data.get("stream") is True:
            chunks = fmt.TextChunks(cid, created, model, _include_usage(data))
            return await self._stream(request, chunks, pieces, use, knobs)
        return await self._unary(request, fmt.text_completion(cid, created, model, reply, use), knobs)

    def _embeddings(self, data: dict[str, Any], knobs: Knobs) -> web.Response:
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("you must provide a model parameter", "model")
        texts = fmt.input_texts(data.get("input"))
        if texts is None:
            raise _BadRequest("'input' must be a string, a list of strings or token arrays", "input")
        dimensions = data.get("dimensions", fmt.EMBEDDING_DIMENSIONS)
        if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
            raise _BadRequest("'dimensions' must be an integer between 1 and 4096", "dimensions")
        encoding = data.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        tokens = knobs.prompt_tokens if knobs.prompt_tokens is not None else fmt.word_tokens(texts)
        body = fmt.embeddings(model, texts, dimensions, encoding == "base64", tokens)
        return web.Response(body=body, content_type=_JSON)

    async def _unary(self, request: web.BaseRequest, body: bytes, knobs: Knobs) -> web.StreamResponse:
        if knobs.drop_after is None:
            return web.Response(body=body, content_type=_JSON)
        # Send the headers and the first `drop_after` bytes of the body, then close: a truncated body.
        resp = web.StreamResponse()
        resp.content_type = _JSON
        resp.content_length = len(body)
        try:
            await resp.prepare(request)
            await resp.write(body[: knobs.drop_after])
        except ConnectionError:
            return resp
        _close(request)
        self.streams_dropped += 1
        return resp

    async def _stream(
        self,
        request: web.BaseRequest,
        chunks: fmt.ChatChunks,
        pieces: list[str],
        use: dict[str, Any],
        knobs: Knobs,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        delay = (knobs.chunk_delay_ms or 0) / 1000
        drop_after = knobs.drop_after
        sent = False
        try:
            await resp.prepare(request)
            first = chunks.first()
            if first is not None:
                await resp.write(first)
                sent = True
            for i, piece in enumerate(pieces):
                if i == drop_after:
                    break
                if delay and sent:
                    await asyncio.sleep(delay)
                await resp.write(chunks.content(piece))
                sent = True
            if drop_after is not None:
                _close(request)
                self.streams_dropped += 1
                return resp
            if delay and sent:
                await asyncio.sleep(delay)
            await resp.write(chunks.finish())
            if chunks.include_usage:
                await resp.write(chunks.usage(use))
            await resp.write(fmt.DONE)
            await resp.write_eof()
        except ConnectionError:
            self.streams_aborted += 1
            return resp
        self.streams_completed += 1
        return resp


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(host: str = "127.0.0.1", port: int = 8090) -> None:
    """Serve until SIGINT or SIGTERM, announcing the address on stdout."""
    provider = FakeProvider()
    bound = await provider.start(host, port)
    print(f"fake provider listening on http://{_url_host(host)}:{bound}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await provider.stop()


def run(host: str = "127.0.0.1", port: int = 8090) -> None:
    """Run the fake provider until SIGINT or SIGTERM (the `sluicegate fake-provider` command)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(host, port))
    else:
        uvloop.run(serve(host, port))
