"""Start the gateway: config, listeners, workers, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import uvloop

from sluicegate.config.autoconfig import autoconfig_documents, demo_documents
from sluicegate.config.compile import compile_resources, load_config
from sluicegate.config.errors import ConfigError
from sluicegate.config.runtime import DEFAULT_LISTENER_PORT, RuntimeConfig
from sluicegate.endpoints.gateway import Gateway
from sluicegate.observability import state as observability
from sluicegate.ratelimit.stores import open_stores
from sluicegate.server.admin import Admin
from sluicegate.server.http import HttpServer, ServerLimits
from sluicegate.upstream.pool import DnsCache, Pools

log = logging.getLogger("sluicegate")

DEMO_HINT = (
    "No config and no provider keys: serving an OFFLINE DEMO through the built-in fake provider "
    "(models: {models}). For real providers set OPENAI_API_KEY (or AZURE_OPENAI_API_KEY + "
    "AZURE_OPENAI_ENDPOINT + OPENAI_API_VERSION, or ANTHROPIC_API_KEY), or pass -c config.yaml; "
    "see docs/configuration.md."
)


@dataclass
class RunOptions:
    """What `sluicegate run` was asked for."""

    config_paths: list[str] = field(default_factory=list)
    host: str = "0.0.0.0"
    port: int | None = None  # None: the config's Gateway listener port, else 1975
    admin_host: str = "127.0.0.1"
    admin_port: int = 1064
    workers: int = 1
    limits: ServerLimits = field(default_factory=ServerLimits)
    grace: float = 30.0  # seconds in-flight requests get on SIGTERM
    redis_url: str | None = None  # rate-limit store shared by workers and replicas (else the config's)
    ratelimit_fail_closed: bool | None = None  # Redis unreachable: refuse (503) instead of serving
    redis_timeout: float = 0.5  # seconds a rate-limit call to Redis may take


def load_startup_config(
    options: RunOptions, env: Mapping[str, str]
) -> tuple[RuntimeConfig | None, list[str]]:
    """The config from files or the environment, with notes to print; None means the offline demo."""
    if options.config_paths:
        return load_config(options.config_paths), []
    auto = autoconfig_documents(env)
    if auto is None or not auto.documents:
        return None, list(auto.notes) if auto else []
    return compile_resources(auto.documents), list(auto.notes)


_STOP_REQUESTED = False  # a worker got SIGTERM/SIGINT before its event loop handled signals


def _stop_early(_signum: int, _frame: object) -> None:
    global _STOP_REQUESTED
    _STOP_REQUESTED = True


def run(options: RunOptions) -> int:
    """Run until SIGTERM/SIGINT; with several workers, fork them onto one port (SO_REUSEPORT)."""
    config, notes = load_startup_config(options, os.environ)  # ConfigError surfaces before any fork
    for note in notes:
        log.warning("%s", note)
    limits = config.rate_limits if config is not None else None
    if limits is not None:
        options.redis_url = options.redis_url or limits.redis_url
        if options.ratelimit_fail_closed is None:
            options.ratelimit_fail_closed = limits.fail_closed
        if options.workers > 1 and limits.has_global and not options.redis_url:
            print(
                f"sluicegate: the config has Global rate limits, which every worker must share, but no Redis "
                f"is configured; with --workers {options.workers} each worker would allow the whole limit. "
                "Pass --redis-url redis://host:6379 (or annotate the Gateway with sluicegate.io/redis-url), "
                "or run one worker. Not starting.",
                file=sys.stderr,
                flush=True,
            )
            return 1
    # What start-up made (modules, the config) lives as long as the process: out of the cycle collector's
    # reach, its full passes are shorter and forked workers keep sharing those pages instead of copying them.
    gc.freeze()
    # A request's objects die by reference counting; the cycle collector would mostly walk the live objects
    # of requests in flight. Collecting after 20,000 net new objects instead of 700 cut the CPU per request
    # by 3-6 % (bench/run.py json and stream); cyclic garbage still goes, a little later.
    gc.set_threshold(20_000, 10, 10)
    if options.workers <= 1:
        return uvloop.run(_serve(options, config, worker=0))
    children = []
    for index in range(options.workers):
        pid = os.fork()
        if pid == 0:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # until the loop takes over
                signal.signal(signum, _stop_early if signum != signal.SIGHUP else signal.SIG_IGN)
            code = 1
            try:
                code = uvloop.run(_serve(options, config, worker=index))
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status) & 0xFF)
    return worst


async def _reload(options: RunOptions, gateway: Gateway, dns: DnsCache) -> None:
    """SIGHUP: load the config files again; a broken config is logged and the running one kept."""
    if not options.config_paths:
        log.warning("SIGHUP: nothing to reload (the config did not come from files)")
        return
    try:
        config = await asyncio.to_thread(load_config, options.config_paths)  # file reads off the loop
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload refused, keeping the running config: %s", problem)
        return
    await dns.resolve_all([e for b in config.backends for e in b.endpoints])
    gateway.use(config)
    log.warning("config reloaded: %d rules, %d backends", len(config.rules), len(config.backends))


async def _serve(options: RunOptions, config: RuntimeConfig | None, worker: int) -> int:
    loop = asyncio.get_running_loop()
    fake = None
    if config is None:
        from sluicegate.testing import MODELS, FakeProvider

        fake = FakeProvider()
        await fake.start("127.0.0.1", 0)
        config = compile_resources(demo_documents(fake.base_url, MODELS))
        if worker == 0:
            print(DEMO_HINT.format(models=", ".join(MODELS)), flush=True)

    dns = DnsCache()
    await dns.resolve_all([e for b in config.backends for e in b.endpoints])
    pools = Pools(dns)
    stores = open_stores(options.redis_url, bool(options.ratelimit_fail_closed), options.redis_timeout)
    gateway = Gateway(config, pools, stores)
    server = HttpServer(gateway.handle, gateway.render_error, options.limits)
    admin = Admin()
    admin_server = HttpServer(admin.handle, admin.render_error, ServerLimits(max_body_bytes=1024))
    reuse = options.workers > 1
    port = options.port if options.port is not None else config.listener_port or DEFAULT_LISTENER_PORT
    try:
        bound = await server.listen(options.host, port, reuse_port=reuse)
        admin_bound = await admin_server.listen(options.admin_host, options.admin_port, reuse_port=reuse)
    except OSError as exc:
        print(f"sluicegate: cannot listen: {exc}", file=sys.stderr, flush=True)
        return 1
    admin.ready = True
    if worker == 0:
        print(
            f"sluicegate listening on http://{options.host}:{bound} "
            f"(admin http://{options.admin_host}:{admin_bound}, workers {options.workers})",
            flush=True,
        )

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if _STOP_REQUESTED:
        stop.set()  # asked to stop while starting up: drain (nothing) and exit cleanly
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(options, gateway, dns)))
    await stop.wait()

    admin.ready = False
    log.info("draining: %d connections, up to %gs", len(server.connections), options.grace)
    await server.shutdown(options.grace)
    await admin_server.shutdown(0)
    pools.close()
    await stores.close()
    observability.shutdown()  # write out buffered access-log lines and spans
    if fake is not None:
        await fake.stop()
    return 0
