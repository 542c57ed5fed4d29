"""One request to the backends: for each planned attempt translate, sign, send; relay the first answer."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sluicegate.auth import credential_provider
from sluicegate.auth.credential_override import OVERRIDE_HEADERS
from sluicegate.config.runtime import Backend, BackendRef, Rule, RuntimeConfig
from sluicegate.core.context import ClientWriter, RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.translate.base import Translator, UpstreamRequest
from sluicegate.upstream.connection import UpstreamConnection, UpstreamError
from sluicegate.upstream.health import HEALTH, Health, retry_after
from sluicegate.upstream.metrics import EJECTIONS, FAILOVERS, RESTS, RETRIES, count_attempt
from sluicegate.upstream.planner import Attempts, RulePlan
from sluicegate.upstream.policy import RetryPolicy
from sluicegate.upstream.pool import Pool, Pools

log = logging.getLogger("sluicegate.upstream")

TranslatorFactory = Callable[[RequestContext, BackendRef], Translator]
ATTEMPTS_HEADER = b"x-sluicegate-attempts"
BACKEND_HEADER = b"x-sluicegate-backend"
FAILURE_LATENCY = 1.0  # seconds a failed attempt counts as, at least, for latency-aware balancing

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
        *OVERRIDE_HEADERS,
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
    """The backend a first attempt would go to now (filters that need it early, e.g. per-backend quotas)."""
    if len(rule.backend_refs) == 1:
        return rule.backend_refs[0]
    return RulePlan(rule, HEALTH).first(time.monotonic())


@dataclass(slots=True)
class _Failure:
    """An attempt that did not answer the client; the next attempt may."""

    kind: str  # connect-failure | reset | timeout | status | unsupported | broken
    message: str
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    translator: Translator | None = None
    answered: bool = False  # the client has had its (broken) answer: nothing more to try

    def retriable(self, retry: RetryPolicy) -> bool:
        """Whether the retry policy wants another attempt after this one."""
        if self.kind == "unsupported":
            return True
        if self.kind == "status":
            return retry.retries_status(self.status)
        return retry.retries_failure(self.kind)


class _ConnectFailure(UpstreamError):
    """No connection could be opened: nothing reached the backend."""


class Forwarder:
    """Carries requests to backends over the shared pools; one per config."""

    def __init__(self, config: RuntimeConfig, pools: Pools, health: Health | None = None) -> None:
        self.pools = pools
        self.health = HEALTH if health is None else health
        self.credentials = {
            b.name: credential_provider(b.credential) for b in config.backends if b.credential is not None
        }
        self.plans = {id(rule): RulePlan(rule, self.health) for rule in config.rules}
        # each backend's pools in the order of its endpoints, looked up once (Pools hashes an Endpoint)
        self.backend_pools = {b.name: tuple(pools.get(e) for e in b.endpoints) for b in config.backends}
        self._endpoint_turn = 0

    async def forward(
        self,
        ctx: RequestContext,
        translators: dict[str, TranslatorFactory],
        client: ClientWriter,
        api: str = "openai",
    ) -> None:
        """Answer the client from the backends of ctx.rule, one attempt after another until one answers."""
        rule = ctx.rule
        assert rule is not None
        plan = self.plans.get(id(rule)) or RulePlan(rule, self.health)
        retry = plan.resilience.retry
        deadline = None if rule.request_timeout is None else time.monotonic() + rule.request_timeout
        # a filter may have chosen already (quotas are per backend): that backend is the first attempt
        attempts = plan.attempts(ctx.backend_ref)
        failure: _Failure | None = None
        while (ref := attempts.next(time.monotonic())) is not None:
            if failure is not None:
                await self._before_retry(ctx, attempts, retry, deadline)
            ctx.backend_ref = ref
            ctx.attempts += 1
            failure = await self._attempt(ctx, ref, translators, client, plan, deadline, api)
            outcome = "ok" if failure is None else str(failure.status or failure.kind)
            ctx.attempt_log.append(f"{ref.backend.name}:{outcome}")
            count_attempt(ref.backend.name, outcome)
            if failure is None or failure.answered:
                return
            if not failure.retriable(retry) or (deadline is not None and time.monotonic() >= deadline):
                break
        assert failure is not None
        self._give_up(ctx, failure, client)

    async def _before_retry(
        self, ctx: RequestContext, attempts: Attempts, retry: RetryPolicy, deadline: float | None
    ) -> None:
        """Count the retry; back off only when it goes to a backend that was already tried."""
        ref, previous = attempts.tried[-1], attempts.tried[-2]
        RETRIES.labels(ref.backend.name).inc()
        if ref.backend is not previous.backend:
            FAILOVERS.labels(previous.backend.name, ref.backend.name).inc()
        if any(r.backend is ref.backend for r in attempts.tried[:-1]) and retry.backoff_base > 0:
            repeats = sum(r.backend is ref.backend for r in attempts.tried[:-1])
            pause = min(retry.backoff_base * 2 ** (repeats - 1), retry.backoff_max)
            pause *= 0.5 + random.random() / 2  # jitter, so that many clients do not retry in step
            if deadline is not None:
                pause = min(pause, max(deadline - time.monotonic(), 0.0))
            await asyncio.sleep(pause)

    async def _attempt(
        self,
        ctx: RequestContext,
        ref: BackendRef,
        translators: dict[str, TranslatorFactory],
        client: ClientWriter,
        plan: RulePlan,
        deadline: float | None,
        api: str,
    ) -> _Failure | None:
        """One attempt: translate, sign, send; None once the client has its answer."""
        backend = ref.backend
        factory = translators.get(backend.schema.name)
        if factory is None:
            message = f"Backend {backend.name} (schema {backend.schema.name}) cannot serve this endpoint."
            return _Failure("unsupported", message)
        translator = factory(ctx, ref)
        upstream = translator.request(ctx)
        upstream.headers = self._headers(ctx, ref, upstream.headers)
        if ctx.trace is not None:
            ctx.trace.attempt(ref, upstream.headers)  # a child span; traceparent for the backend
        self._endpoint_turn += 1
        endpoints = backend.endpoints
        state = self.health.state(backend.name)
        if state.down and len(endpoints) > 1:  # skip endpoints active health checks found down
            endpoints = tuple(e for e in endpoints if e not in state.down) or endpoints
        index = self._endpoint_turn % len(endpoints)
        pools = self.backend_pools.get(backend.name) if endpoints is backend.endpoints else None
        pool = pools[index] if pools is not None else self.pools.get(endpoints[index])
        provider = self.credentials.get(backend.name)
        if provider is not None:
            upstream.client_headers = ctx.request.headers
            await provider.apply(upstream, pool.authority.decode())

        resilience = plan.resilience
        timeout = said = resilience.retry.per_try_timeout  # `said`: the configured limit, for the message
        if deadline is not None:
            left = max(deadline - time.monotonic(), 0.001)
            if timeout is None or left < timeout:
                timeout, said = left, ctx.rule.request_timeout  # type: ignore[union-attr]
        state.outstanding += 1
        try:
            return await self._send(ctx, ref, pool, upstream, translator, client, plan, (timeout, said), api)
        finally:
            state.outstanding -= 1

    async def _send(
        self,
        ctx: RequestContext,
        ref: BackendRef,
        pool: Pool,
        upstream: UpstreamRequest,
        translator: Translator,
        client: ClientWriter,
        plan: RulePlan,
        limits: tuple[float | None, float | None],
        api: str,
    ) -> _Failure | None:
        """Send one attempt and answer the client from it, unless it failed before the first byte."""
        backend, resilience, health = ref.backend, plan.resilience, self.health
        name = backend.name
        timeout, said = limits
        first: bytes | None = None
        body = b""
        connection: UpstreamConnection | None = None
        waited_from = time.monotonic()
        deadline = 0.0 if timeout is None else waited_from + timeout
        try:
            connection = await self._exchange(pool, upstream, resilience.connect_timeout, deadline)
            head_at = time.monotonic()
            status, response_headers = connection.status, connection.headers
            streaming = status < 400 and _is_stream(response_headers, ctx.stream)
            if streaming:
                first = await connection.read_chunk()  # a stream may still fail over until this arrives
            else:
                body = await connection.read_body()
        except TimeoutError:
            if connection is not None:
                connection.close()
            self._failed(name, None, plan, waited_from)
            return _Failure("timeout", f"Backend {name} did not answer within {said or timeout:g}s.")
        except UpstreamError as exc:
            kind = "connect-failure" if isinstance(exc, _ConnectFailure) else "reset"
            if connection is not None:
                connection.close()
            self._failed(name, None, plan, waited_from)
            return _Failure(kind, f"Backend {name} is unreachable: {exc}")
        finally:
            ctx.upstream_seconds += time.monotonic() - waited_from

        assert connection is not None
        if status >= 400:
            pool.release(connection)
            if status >= 500:
                self._failed(name, status, plan, waited_from)
            else:
                health.succeeded(name)
            if status in (429, 503) and (rest := retry_after(response_headers)) is not None and rest > 0:
                health.rest(name, min(rest, resilience.max_retry_after), time.monotonic())
                RESTS.labels(name).inc()
            return _Failure("status", f"upstream status {status}", status, response_headers, body, translator)

        health.succeeded(name)
        health.observe_latency(name, head_at - waited_from, head_at)
        ctx.status = status
        headers = self._client_headers(ctx, response_headers)
        headers = translator.response_headers(status, headers)
        if not streaming:
            pool.release(connection)
            out, ctx.usage = translator.response_body(body, True)
            ctx.response_model = translator.response_model
            if ctx.response_filter is not None:
                # bytes, or an awaitable of them (an async filter: response moderation); a GatewayError here
                # answers the client instead
                filtered = ctx.response_filter(out, True)
                out = await filtered if inspect.isawaitable(filtered) else filtered
            ctx.first_byte_at = time.monotonic()
            if ctx.trace is not None and ctx.trace.capture:
                ctx.trace.capture_output(out)  # gen_ai.output.messages, only with content capture on
            client.send(status, headers, out)
            return None
        idle = resilience.stream_idle_timeout or ctx.rule.request_timeout  # type: ignore[union-attr]
        if await self._relay(ctx, connection, translator, client, headers, first, idle, backend, api):
            pool.release(connection)
            return None
        self._failed(name, None, plan, None)
        return _Failure("broken", ctx.error, answered=True)

    def _failed(self, name: str, status: int | None, plan: RulePlan, since: float | None) -> None:
        """Count a failure for outlier ejection; a failure also looks slow to the latency-aware balancer."""
        now = time.monotonic()
        if self.health.failed(name, status, plan.resilience.outlier, now):
            EJECTIONS.labels(name).inc()
            log.warning("backend %s ejected after consecutive errors", name)
        if since is not None:
            self.health.observe_latency(name, max(now - since, FAILURE_LATENCY), now)

    def _client_headers(self, ctx: RequestContext, upstream: list[tuple[bytes, bytes]]) -> list:
        """The upstream headers the client may see, the filters' headers and where the answer came from."""
        headers = []
        for header in upstream:  # a loop, not a comprehension: one function call less for every answer
            if header[0] not in _DROP_RESPONSE_HEADERS:  # names are lower-case
                headers.append(header)
        headers += ctx.response_headers
        headers.append((ATTEMPTS_HEADER, b"%d" % ctx.attempts))
        if ctx.backend_ref is not None:
            headers.append((BACKEND_HEADER, ctx.backend_ref.backend.name.encode()))
        return headers

    def _give_up(self, ctx: RequestContext, failure: _Failure, client: ClientWriter) -> None:
        """Answer with the last attempt's upstream error, or our own when no backend answered."""
        if failure.kind == "status" and failure.translator is not None:
            ctx.status = failure.status
            ctx.error = failure.message
            headers = _json_headers(self._client_headers(ctx, failure.headers))
            client.send(failure.status, headers, failure.translator.error(failure.status, failure.body))
            return
        status = {"unsupported": 422, "timeout": 504}.get(failure.kind, 502)
        where = [(ATTEMPTS_HEADER, b"%d" % ctx.attempts)]
        if ctx.backend_ref is not None:
            where.append((BACKEND_HEADER, ctx.backend_ref.backend.name.encode()))
        raise GatewayError(status, failure.message, headers=where)

    async def _exchange(
        self, pool: Pool, upstream: UpstreamRequest, connect_timeout: float, deadline: float
    ) -> UpstreamConnection:
        """Send the request and wait for the response head; one retry when a reused connection was stale.

        `deadline` (time.monotonic(), 0 for none) bounds the whole attempt: waits on the connection raise
        TimeoutError once it passes (cheaper than a timer per request: see connection._Deadlines).
        """
        for _ in range(2):
            if deadline and deadline - time.monotonic() < connect_timeout:
                connect_timeout = deadline - time.monotonic()
                if connect_timeout <= 0:
                    raise TimeoutError
            try:
                connection = await pool.acquire(connect_timeout)
            except UpstreamError as exc:
                if deadline and time.monotonic() >= deadline:
                    raise TimeoutError from exc
                raise _ConnectFailure(str(exc)) from exc
            reused = connection.requests_sent > 0
            try:
                connection.send(upstream.method, upstream.target, upstream.headers, upstream.body)
                connection.deadline = deadline
                await connection.read_head()
                return connection
            except UpstreamError:
                connection.close()
                if not (reused and not connection.received_any):
                    raise
            except BaseException:
                connection.close()  # a timeout or cancellation: this connection's answer is of no use now
                raise
        raise UpstreamError("connection closed by the backend")

    async def _relay(
        self,
        ctx: RequestContext,
        connection: UpstreamConnection,
        translator: Translator,
        client: ClientWriter,
        headers: list[tuple[bytes, bytes]],
        chunk: bytes | None,
        idle_timeout: float | None,
        backend: Backend,
        api: str,
    ) -> bool:
        """Relay a stream piece by piece (a slow client pauses the upstream read); False if it broke.

        Without a response filter the pieces are relayed as they arrive, from the connection's callback
        (`_StreamRelay.take`); this coroutine then only waits for the end, and handles what the callback
        declines (while the client is not reading) the same way. A break ends the stream with an error
        event in the client API's format, after the last whole event: what follows the last event boundary
        is held back until the boundary arrives.
        """
        client.start(ctx.status, headers)
        relay = _StreamRelay(ctx, connection, translator, client, _is_sse(headers), idle_timeout)
        response_filter = ctx.response_filter
        if response_filter is None:
            connection.sink = relay.take
        try:
            while chunk is not None:
                out, usage = translator.response_body(chunk, False)
                if usage is not None:
                    ctx.usage = usage
                if response_filter is not None:
                    filtered = response_filter(out, False)
                    out = await filtered if inspect.isawaitable(filtered) else filtered
                if out:
                    relay.write(out)
                    await client.drain()
                waited_from = time.monotonic()
                connection.deadline = waited_from + idle_timeout if idle_timeout else 0.0
                chunk = await connection.read_chunk()
                ctx.upstream_seconds += time.monotonic() - waited_from
                if relay.failure is not None:
                    raise relay.failure
            out, usage = translator.response_body(b"", True)
            if usage is not None:
                ctx.usage = usage
            if response_filter is not None:
                filtered = response_filter(out, True)
                out = await filtered if inspect.isawaitable(filtered) else filtered
            relay.write(out, end=True)
        except (UpstreamError, TimeoutError) as exc:
            connection.close()
            broke = str(exc) or f"no data for {idle_timeout:g}s"
            ctx.error = f"stream from {backend.name} broke: {broke}"
            if not relay.events:
                raise ConnectionAbortedError(ctx.error) from exc
            status = 504 if isinstance(exc, TimeoutError) else 502
            error = GatewayError(status, f"The backend stream broke off: {broke}.")
            client.write(error.stream_event(api))
            client.end()
            return False
        except GatewayError as exc:  # a response filter ended the stream (e.g. a guardrail blocked it)
            connection.close()
            ctx.error = exc.message
            client.write(relay.held + exc.stream_event(api) if relay.events else relay.held)
            client.end()
            return True
        except BaseException:
            connection.close()  # the client left or we were cancelled: the backend owes us nothing more
            raise
        finally:
            connection.sink = None
            ctx.response_model = translator.response_model
        client.end()
        return True

    @staticmethod
    def _headers(ctx: RequestContext, ref: BackendRef, own: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Forwardable client headers, then the translator's, then the header mutation."""
        own_by_name = dict(own)  # loops, not comprehensions: two function calls less for every attempt
        headers = []
        for header in ctx.request.headers.items():
            if header[0] not in _DROP_REQUEST_HEADERS and header[0] not in own_by_name:
                headers.append(header)
        headers += own
        mutation = ref.header_mutation
        if mutation.set or mutation.remove:
            drop = set(mutation.remove) | {name for name, _ in mutation.set}
            headers = [h for h in headers if h[0] not in drop]
            headers += mutation.set
        return headers


class _StreamRelay:
    """The way of a stream's pieces to the client: whole events only, first-byte time, trace capture."""

    __slots__ = ("capture", "client", "connection", "ctx", "events", "failure", "held", "idle", "translator")

    def __init__(
        self,
        ctx: RequestContext,
        connection: UpstreamConnection,
        translator: Translator,
        client: ClientWriter,
        events: bool,
        idle: float | None,
    ) -> None:
        self.ctx, self.connection, self.translator, self.client = ctx, connection, translator, client
        self.events = events  # server-sent events: cut only at event boundaries
        self.idle = idle
        self.held = b""  # the start of an event whose end has not arrived
        self.failure: BaseException | None = None  # raised by `take`, re-raised by the relay coroutine
        trace = ctx.trace
        self.capture = trace.capture_output if trace is not None and trace.capture else None

    def write(self, out: bytes, end: bool = False) -> None:
        """Send the translated bytes, up to the last whole event unless this is the end."""
        if self.held:
            out = self.held + out
            self.held = b""
        if self.events and not end and out:
            out, self.held = _whole_events(out)
        if out:
            if not self.ctx.first_byte_at:
                self.ctx.first_byte_at = time.monotonic()
            if self.capture is not None:
                self.capture(out)
            self.client.write(out)

    def take(self, chunk: bytes) -> bool:
        """The connection's sink: relay a piece now; decline (False) while the client is not reading."""
        if self.failure is not None or self.client.write_paused:
            return False
        try:
            out, usage = self.translator.response_body(chunk, False)
            if usage is not None:
                self.ctx.usage = usage
            if out:
                self.write(out)
        except BaseException as exc:  # the coroutine raises it, as if it had relayed the piece itself
            self.failure = exc
            return False
        if self.idle:
            self.connection.deadline = time.monotonic() + self.idle
        return True


def _is_stream(headers: list[tuple[bytes, bytes]], asked: bool) -> bool:
    """Relay chunk by chunk for an event stream, or an unsized body the client asked to stream."""
    sized = False
    for name, value in headers:  # as UpstreamConnection keeps them: lower-case names
        if name == b"content-type" and value.startswith(b"text/event-stream"):
            return True
        if name == b"content-length":
            sized = True
    return asked and not sized


def _is_sse(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the client gets server-sent events."""
    return any(v.startswith(b"text/event-stream") and n.lower() == b"content-type" for n, v in headers)


def _whole_events(data: bytes) -> tuple[bytes, bytes]:
    """(the events data completes, the rest): split after the last blank line."""
    lf = data.rfind(b"\n\n")
    cut = lf + 2 if lf >= 0 else 0
    if b"\r" in data:  # a CRLF stream (searched only then: a reverse search reads the whole block)
        crlf = data.rfind(b"\r\n\r\n")
        if crlf >= 0:
            cut = max(cut, crlf + 4)
    if cut == 0:
        return b"", data
    if cut >= len(data):
        return data, b""
    return data[:cut], data[cut:]


def _json_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Error bodies we hand back are JSON."""
    kept = [(n, v) for n, v in headers if n.lower() != b"content-type"]
    kept.append((b"content-type", b"application/json"))
    return kept
