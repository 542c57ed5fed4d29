"""Keep-alive connection pools per backend endpoint, and the DNS cache they dial from."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import weakref

from sluicegate.config.runtime import Endpoint
from sluicegate.upstream.connection import UpstreamConnection, UpstreamError

log = logging.getLogger("sluicegate.upstream")

DNS_REFRESH_SECONDS = 30.0


class DnsCache:
    """Resolves backend host names in the background; the request path only reads the cache."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._addresses: dict[tuple[str, int], list[str]] = {}
        self._next = 0
        self._refresher: asyncio.Task[None] | None = None

    async def resolve_all(self, endpoints: list[Endpoint]) -> None:
        """Resolve every endpoint now (at start and on config change); failures are logged, not fatal."""
        names = {(e.host, e.port) for e in endpoints if not _is_ip(e.host)}
        await asyncio.gather(*(self._resolve(host, port) for host, port in names))
        if self._refresher is None:
            self._refresher = self.loop.create_task(self._refresh_forever())

    async def _resolve(self, host: str, port: int) -> None:
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("cannot resolve backend host %s: %s", host, exc)
            return
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if addresses:
            self._addresses[(host, port)] = addresses

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(DNS_REFRESH_SECONDS)
            await asyncio.gather(*(self._resolve(h, p) for h, p in list(self._addresses)))

    async def address(self, host: str, port: int) -> str:
        """An address for host; resolves once, off the hot path, if the name was never seen."""
        if _is_ip(host):
            return host
        addresses = self._addresses.get((host, port))
        if addresses is None:
            await self._resolve(host, port)
            addresses = self._addresses.get((host, port))
            if addresses is None:
                raise UpstreamError(f"cannot resolve {host}")
        self._next += 1
        return addresses[self._next % len(addresses)]

    def close(self) -> None:
        """Stop the background refresh."""
        if self._refresher is not None:
            self._refresher.cancel()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class Pool:
    """Idle keep-alive connections to one endpoint, reused last-in first-out."""

    def __init__(self, endpoint: Endpoint, dns: DnsCache, max_idle: int = 256) -> None:
        self.endpoint = endpoint
        self.dns = dns
        self.loop = dns.loop
        self.max_idle = max_idle
        self.idle: list[UpstreamConnection] = []
        self.opened = 0  # connections dialled over the pool's life
        self.connections: weakref.WeakSet[UpstreamConnection] = weakref.WeakSet()  # for the metrics
        default_port = 443 if endpoint.tls else 80
        host = endpoint.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal
        authority = host if endpoint.port == default_port else f"{host}:{endpoint.port}"
        self.authority = authority.encode("idna" if not _is_ip(endpoint.host) else "ascii")
        self.ssl_context: ssl.SSLContext | None = None
        if endpoint.tls:
            self.ssl_context = ssl.create_default_context(cafile=endpoint.ca_file)

    async def acquire(self, connect_timeout: float = 10.0) -> UpstreamConnection:
        """A live idle connection, or a new one."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        connection = await self.dial(connect_timeout)
        self.opened += 1
        self.connections.add(connection)
        return connection

    async def dial(self, connect_timeout: float = 10.0) -> UpstreamConnection:
        """A new connection of the caller's own, outside the pool (health checks dial with this)."""
        address = await self.dns.address(self.endpoint.host, self.endpoint.port)
        try:
            async with asyncio.timeout(connect_timeout):
                _, connection = await self.loop.create_connection(
                    lambda: UpstreamConnection(self.loop, self.authority),
                    address,
                    self.endpoint.port,
                    ssl=self.ssl_context,
                    server_hostname=(self.endpoint.server_name or self.endpoint.host)
                    if self.ssl_context
                    else None,
                )
        except TimeoutError as exc:
            raise UpstreamError(f"connect timeout after {connect_timeout:g}s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)) from exc
        return connection

    def release(self, connection: UpstreamConnection) -> None:
        """Give a connection back after its response was read whole; anything else is closed."""
        if connection.reusable and len(self.idle) < self.max_idle:
            self.idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        for connection in self.idle:
            with contextlib.suppress(Exception):
                connection.close()
        self.idle.clear()


class Pools:
    """One Pool per endpoint, shared across config reloads."""

    def __init__(self, dns: DnsCache) -> None:
        self.dns = dns
        self._pools: dict[Endpoint, Pool] = {}

    def get(self, endpoint: Endpoint) -> Pool:
        """The pool for an endpoint, created on first use."""
        pool = self._pools.get(endpoint)
        if pool is None:
            pool = self._pools[endpoint] = Pool(endpoint, self.dns)
        return pool

    @property
    def opened(self) -> int:
        """Connections dialled by all pools."""
        return sum(p.opened for p in self._pools.values())

    def close(self) -> None:
        """Close every pool's idle connections and stop DNS refresh."""
        for pool in self._pools.values():
            pool.close()
        self.dns.close()
