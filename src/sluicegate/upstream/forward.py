"""One request to a backend: pick the backend, translate, sign, send, relay the answer back."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from sluicegate.auth import credential_provider
from sluicegate.config.runtime import Backend, BackendRef, Rule, RuntimeConfig
from sluicegate.core.context import ClientWriter, RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.translate.base import Translator, UpstreamRequest
from sluicegate.upstream.connection import UpstreamConnection, UpstreamError
from sluicegate.upstream.pool import Pool, Pools

log = logging.getLogger("sluicegate.upstream")

TranslatorFactory = Callable[[RequestContext, BackendRef], Translator]

# Never forwarded: hop-by-hop and framing headers, the client's own credentials, our routing header.
_DROP_REQUEST_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "accept-encoding",
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "x-ai-eg-model",
    }
)
_DROP_RESPONSE_HEADERS = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    }
)


def choose_backend(rule: Rule) -> BackendRef:
    """Weighted choice among the backends of the best (lowest) priority."""
    refs = rule.backend_refs
    if len(refs) == 1:
        return refs[0]
    best = min(ref.priority for ref in refs)
    tier = [ref for ref in refs if ref.priority == best]
    if len(tier) == 1:
        return tier[0]
    return random.choices(tier, weights=[max(ref.weight, 0) for ref in tier])[0]


class Forwarder:
    """Carries requests to backends over the shared pools; one per config."""

    def __init__(self, config: RuntimeConfig, pools: Pools) -> None:
        self.pools = pools
        self.credentials = {
            b.name: credential_provider(b.credential) for b in config.backends if b.credential is not None
        }
        self._endpoint_turn = 0

    async def forward(
        self, ctx: RequestContext, translators: dict[str, TranslatorFactory], client: ClientWriter
    ) -> None:
        """Answer the client from a backend chosen for ctx.rule."""
        assert ctx.rule is not None
        # a filter may have chosen already (quotas are per backend, so the rate-limit check picks it)
        ref = ctx.backend_ref = ctx.backend_ref or choose_backend(ctx.rule)
        backend = ref.backend
        factory = translators.get(backend.schema.name)
        if factory is None:
            raise GatewayError(
                422, f"Backend {backend.name} (schema {backend.schema.name}) cannot serve this endpoint."
            )
        ctx.attempts += 1
        translator = factory(ctx, ref)
        upstream = translator.request(ctx)
        upstream.headers = self._headers(ctx, ref, upstream.headers)
        self._endpoint_turn += 1
        pool = self.pools.get(backend.endpoints[self._endpoint_turn % len(backend.endpoints)])
        provider = self.credentials.get(backend.name)
        if provider is not None:
            await provider.apply(upstream, pool.authority.decode())

        timeout = ctx.rule.request_timeout
        try:
            async with asyncio.timeout(timeout):
                connection = await self._exchange(pool, upstream)
                status, response_headers = connection.status, connection.headers
                streaming = _is_stream(response_headers)
                if not streaming:
                    body = await connection.read_body()
        except TimeoutError as exc:
            raise GatewayError(504, f"Backend {backend.name} did not answer within {timeout:g}s.") from exc
        except UpstreamError as exc:
            raise GatewayError(502, f"Backend {backend.name} is unreachable: {exc}") from exc

        ctx.status = status
        client_headers = [(n, v) for n, v in response_headers if n.lower() not in _DROP_RESPONSE_HEADERS]
        client_headers += ctx.response_headers
        if status >= 400:
            if streaming:
                body = await self._read_rest(connection, timeout, backend)
            pool.release(connection)
            ctx.error = f"upstream status {status}"
            client.send(status, _json_headers(client_headers), translator.error(status, body))
            return
        client_headers = translator.response_headers(status, client_headers)
        if not streaming:
            pool.release(connection)
            out, ctx.usage = translator.response_body(body, True)
            ctx.response_model = translator.response_model
            client.send(status, client_headers, out)
            return
        await self._relay(ctx, connection, translator, client, client_headers, timeout, backend)
        pool.release(connection)

    async def _exchange(self, pool: Pool, upstream: UpstreamRequest) -> UpstreamConnection:
        """Send the request and wait for the response head; one retry when a reused connection was stale."""
        for _ in range(2):
            connection = await pool.acquire()
            reused = connection.requests_sent > 0
            try:
                connection.send(upstream.method, upstream.target, upstream.headers, upstream.body)
                await connection.read_head()
                return connection
            except UpstreamError:
                connection.close()
                if not (reused and not connection.received_any):
                    raise
        raise UpstreamError("connection closed by the backend")

    async def _relay(
        self,
        ctx: RequestContext,
        connection: UpstreamConnection,
        translator: Translator,
        client: ClientWriter,
        headers: list[tuple[bytes, bytes]],
        idle_timeout: float | None,
        backend: Backend,
    ) -> None:
        """Relay a stream chunk by chunk; a slow client pauses the upstream read."""
        client.start(ctx.status, headers)
        try:
            while True:
                async with asyncio.timeout(idle_timeout):
                    chunk = await connection.read_chunk()
                if chunk is None:
                    break
                out, usage = translator.response_body(chunk, False)
                if usage is not None:
                    ctx.usage = usage
                if out:
                    client.write(out)
                    await client.drain()
            out, usage = translator.response_body(b"", True)
            if usage is not None:
                ctx.usage = usage
            if out:
                client.write(out)
        except (UpstreamError, TimeoutError) as exc:
            connection.close()
            ctx.error = f"stream from {backend.name} broke: {exc or 'idle timeout'}"
            raise ConnectionAbortedError(ctx.error) from exc
        except BaseException:
            connection.close()  # the client left or we were cancelled: the backend owes us nothing more
            raise
        finally:
            ctx.response_model = translator.response_model
        client.end()

    async def _read_rest(
        self, connection: UpstreamConnection, timeout: float | None, backend: Backend
    ) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await connection.read_body()
        except (UpstreamError, TimeoutError) as exc:
            connection.close()
            raise GatewayError(502, f"Backend {backend.name} broke off its error response.") from exc

    @staticmethod
    def _headers(ctx: RequestContext, ref: BackendRef, own: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Forwardable client headers, then the translator's, then the header mutation."""
        own_names = {name for name, _ in own}
        headers = [
            (name, value)
            for name, value in ctx.request.headers.items()
            if name not in _DROP_REQUEST_HEADERS and name not in own_names
        ]
        headers += own
        mutation = ref.header_mutation
        if mutation.set or mutation.remove:
            drop = set(mutation.remove) | {name for name, _ in mutation.set}
            headers = [h for h in headers if h[0] not in drop]
            headers += mutation.set
        return headers


def _is_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    """Relay chunk by chunk unless the response is a plain sized body."""
    sized = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-type" and value.startswith(b"text/event-stream"):
            return True
        if lower == b"content-length":
            sized = True
    return not sized


def _json_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Error bodies we hand back are JSON."""
    kept = [(n, v) for n, v in headers if n.lower() != b"content-type"]
    kept.append((b"content-type", b"application/json"))
    return kept
