"""Active health checks: probe every endpoint of a checked backend off the request path, mark it in health.py.

One task per (backend, endpoint), started when a config is used and stopped when the next one is. A probe
dials its own connection through the endpoint's Pool (DNS cache, TLS, Host) and keeps it alive for the
next probe, so it never takes a keep-alive connection away from a request. An endpoint is down after
`unhealthy_threshold` failed probes in a row and up again after `healthy_threshold` passed ones; a backend
whose endpoints are all down is skipped by the planner like an ejected one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sluicegate.config.runtime import Backend, Endpoint, RuntimeConfig
from sluicegate.upstream.connection import UpstreamConnection, UpstreamError
from sluicegate.upstream.health import HEALTH, Health
from sluicegate.upstream.metrics import HEALTHY
from sluicegate.upstream.policy import ActiveCheck
from sluicegate.upstream.pool import Pool, Pools

log = logging.getLogger("sluicegate.upstream")

PROBE_HEADERS = [("user-agent", "sluicegate-health-check"), ("accept", "*/*")]


class Prober:
    """Probes one endpoint; keeps its own keep-alive connection between HTTP probes."""

    def __init__(self, pool: Pool, check: ActiveCheck) -> None:
        self.pool = pool
        self.check = check
        self.connection: UpstreamConnection | None = None
        self.last_error = ""

    async def probe(self) -> bool:
        """True when the endpoint passed: TCP connects; HTTP answers one of the expected statuses in time."""
        try:
            async with asyncio.timeout(self.check.timeout):
                if self.check.type == "TCP":
                    (await self.pool.dial(self.check.timeout)).close()
                    return True
                status = await self._http()
        except TimeoutError:
            self.last_error = f"no answer within {self.check.timeout:g}s"
            self.close()
            return False
        except UpstreamError as exc:
            self.last_error = str(exc) or "connection failed"
            self.close()
            return False
        if status in self.check.expected_statuses:
            return True
        self.last_error = f"status {status}"
        return False

    async def _http(self) -> int:
        check = self.check
        for _ in range(2):  # a kept connection the endpoint closed meanwhile: once more on a new one
            reused = self.connection is not None
            connection = self.connection if reused else await self.pool.dial(check.timeout)
            assert connection is not None
            self.connection = None
            try:
                connection.send(check.method, check.path, PROBE_HEADERS, b"")
                status, _ = await connection.read_head()
                await connection.read_body()
            except UpstreamError:
                connection.close()
                if reused and not connection.received_any:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            if connection.reusable:
                self.connection = connection
            else:
                connection.close()
            return status
        raise UpstreamError("connection closed by the backend")

    def close(self) -> None:
        """Drop the kept connection."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class ActiveHealthChecks:
    """The probes of one config: which backends its rules check, and their tasks."""

    def __init__(self, config: RuntimeConfig, pools: Pools, health: Health | None = None) -> None:
        self.pools = pools
        self.health = HEALTH if health is None else health
        self.targets: dict[str, tuple[Backend, ActiveCheck]] = {}
        for rule in config.rules:
            check = rule.resilience.active
            if check is None:
                continue
            for ref in rule.backend_refs:  # a backend in several rules: the first rule's check
                self.targets.setdefault(ref.backend.name, (ref.backend, check))
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start one probe task per endpoint of each checked backend (needs a running event loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for name in self.health.clear_marks(set(self.targets)):
            log.warning("backend %s is no longer health-checked: healthy again", name)
        for name, (backend, check) in self.targets.items():
            state = self.health.state(name)
            HEALTHY.labels(name).set(0 if state.unhealthy else 1)
            for endpoint in backend.endpoints:
                self.tasks.append(loop.create_task(self._run(backend, endpoint, check)))

    def stop(self) -> None:
        """Cancel the probes (the next config starts its own); the verdicts so far are kept."""
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        for name in self.targets:
            with contextlib.suppress(KeyError):
                HEALTHY.remove(name)

    async def _run(self, backend: Backend, endpoint: Endpoint, check: ActiveCheck) -> None:
        prober = Prober(self.pools.get(endpoint), check)
        where = f"{endpoint.host}:{endpoint.port}"
        passes = fails = 0
        try:
            while True:
                try:
                    ok = await prober.probe()
                except Exception as exc:  # a probe must never end the task
                    ok, prober.last_error = False, repr(exc)
                passes, fails = (passes + 1, 0) if ok else (0, fails + 1)
                down = endpoint in self.health.state(backend.name).down
                if down and passes >= check.healthy_threshold:
                    self._mark(backend, endpoint, True, f"{where} passed {passes} health checks")
                elif not down and fails >= check.unhealthy_threshold:
                    self._mark(backend, endpoint, False, f"{where} failed {fails}: {prober.last_error}")
                await asyncio.sleep(check.interval)
        finally:
            prober.close()

    def _mark(self, backend: Backend, endpoint: Endpoint, healthy: bool, why: str) -> None:
        name = backend.name
        changed = self.health.mark(name, endpoint, healthy, len(backend.endpoints))
        log.warning("backend %s endpoint %s (%s)", name, "healthy" if healthy else "unhealthy", why)
        if changed:
            unhealthy = self.health.state(name).unhealthy
            HEALTHY.labels(name).set(0 if unhealthy else 1)
            log.warning("backend %s is %s", name, "unhealthy" if unhealthy else "healthy again")
