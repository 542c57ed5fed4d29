"""`sluicegate run | check | fake-provider | version`: the only entry point."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import logging
import sys

from sluicegate import __version__

# Each command imports what it needs: `version` and `fake-provider` do not load the config compiler (nor the
# metrics, guardrail and rate-limit modules it brings), `run` loads the server besides.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluicegate", description="An AI gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the gateway")
    run.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="PATH",
        help="a YAML file or a folder of them; repeatable (default: from the environment)",
    )
    run.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    run.add_argument(
        "--port",
        type=int,
        default=None,
        help="listen port (default: the config's Gateway listener port, else 1975)",
    )
    run.add_argument("--admin-host", default="127.0.0.1", help="admin listen address (default 127.0.0.1)")
    run.add_argument("--admin-port", type=int, default=1064, help="admin port: /health /ready /metrics")
    run.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    run.add_argument(
        "--max-body-bytes",
        type=int,
        default=32 * 1024 * 1024,
        help="largest request body accepted; larger gets 413 (default 32 MiB)",
    )
    run.add_argument(
        "--max-header-bytes",
        type=int,
        default=64 * 1024,
        help="largest request head accepted; larger gets 431 (default 64 KiB)",
    )
    run.add_argument(
        "--request-read-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a whole request (default 30)",
    )
    run.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="seconds an idle keep-alive connection stays open (default 60)",
    )
    run.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="seconds in-flight requests get to finish on SIGTERM (default 30)",
    )
    run.add_argument(
        "--redis-url",
        default=None,
        metavar="URL",
        help="Redis for Global rate limits shared by workers and replicas, e.g. redis://host:6379/0 "
        "(default: the Gateway annotation sluicegate.io/redis-url, else counters in memory)",
    )
    run.add_argument(
        "--ratelimit-failure-mode",
        choices=["open", "closed"],
        default=None,
        help="when Redis is unreachable: open serves requests unchecked (default), closed answers 503",
    )
    run.add_argument(
        "--redis-timeout",
        type=float,
        default=0.5,
        help="seconds a rate-limit call to Redis may take before the failure mode applies (default 0.5)",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--access-log",
        default="-",
        metavar="PATH|-|off",
        help="one JSON line per LLM request: - for stdout (default), a file to append to, or off",
    )
    run.add_argument(
        "--metrics-header-labels",
        default="",
        metavar="HEADER[:LABEL],...",
        help="request headers recorded as labels on the gen_ai_* metrics, e.g. x-tenant-id:tenant",
    )
    run.add_argument(
        "--metrics-header-label-max",
        type=int,
        default=100,
        metavar="N",
        help="distinct values kept per header label; further values are recorded as _other (default 100)",
    )

    check = commands.add_parser("check", help="validate config files and print a summary")
    check.add_argument("paths", nargs="+", metavar="PATH")

    fake = commands.add_parser("fake-provider", help="run the built-in fake LLM provider")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8090)

    commands.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "version":
        server = importlib.util.find_spec("sluicegate.server.http")
        compiled = str(server and server.origin).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
        print(f"sluicegate {__version__} ({'mypyc-compiled' if compiled else 'pure Python'})")
        return 0
    if args.command == "check":
        from sluicegate.config.compile import load_config
        from sluicegate.config.errors import ConfigError
        from sluicegate.config.summary import summarize

        try:
            config = load_config(args.paths)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print(f"{len(exc.problems)} problem(s) found.", file=sys.stderr)
            return 1
        print(summarize(config))
        return 0
    if args.command == "fake-provider":
        from sluicegate.testing.fake_provider import run as run_fake

        run_fake(args.host, args.port)
        return 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from sluicegate.config.errors import ConfigError
    from sluicegate.observability.state import Settings, configure
    from sluicegate.server.app import RunOptions, run
    from sluicegate.server.http import ServerLimits

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        labels, most = args.metrics_header_labels, max(1, args.metrics_header_label_max)
        configure(Settings(args.access_log, labels, most))
    except ValueError as exc:
        print(f"sluicegate: --metrics-header-labels: {exc}", file=sys.stderr)
        return 2
    options = RunOptions(
        config_paths=args.config,
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        workers=max(1, args.workers),
        limits=ServerLimits(
            max_header_bytes=args.max_header_bytes,
            max_body_bytes=args.max_body_bytes,
            request_read_timeout=args.request_read_timeout,
            idle_timeout=args.idle_timeout,
        ),
        grace=args.shutdown_grace,
        redis_url=args.redis_url,
        ratelimit_fail_closed={"open": False, "closed": True}.get(args.ratelimit_failure_mode),
        redis_timeout=args.redis_timeout,
    )
    try:
        return run(options)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"sluicegate: {len(exc.problems)} config problem(s); not starting.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
