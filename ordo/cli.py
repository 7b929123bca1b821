"""The `ordo` console script: thin sub-commands that build a component and run it."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ordo import event_loop
from ordo.infra.settings import Settings, SettingsError
from ordo.pool import MAX_WORKERS

log = logging.getLogger("ordo")


def _install_signals(stop: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: loop.create_task(stop()))


async def _run_projector(settings: Settings) -> None:
    from ordo.infra.nats_conn import connect, disconnect, provision
    from ordo.projections.runner import ProjectionRunner, RunnerConfig

    nc = await connect(settings, name="ordo-projector")
    await provision(nc, settings)
    config = RunnerConfig(
        batch_size=settings.projection_batch,
        commit_interval_s=settings.projection_commit_interval_s,
        linger_s=settings.projection_linger_s,
    )
    runner = ProjectionRunner(nc, settings.database_url, config)
    _install_signals(runner.shutdown)
    try:
        await runner.run()
    finally:
        await disconnect(nc)


async def _run_rebuild(settings: Settings, names: list[str]) -> int:
    from ordo.infra.nats_conn import connect, disconnect, provision
    from ordo.projections.rebuild import RebuildError, rebuild

    nc = await connect(settings, name="ordo-rebuild")
    try:
        await provision(nc, settings)
        report = await rebuild(nc, settings.database_url, names, batch_size=settings.projection_batch)
    except RebuildError as exc:
        print(f"ordo rebuild: {exc}", file=sys.stderr)
        return 1
    finally:
        await disconnect(nc)
    print(
        f"rebuilt {', '.join(report.projections)}: {report.events} events in {report.seconds:.2f} s"
        f" ({report.events_per_s:.0f} events/s), checkpoint {report.checkpoint}"
    )
    return 0


async def _run_scheduler(settings: Settings) -> None:
    from ordo.infra import wiring
    from ordo.infra.nats_conn import connect, disconnect, provision
    from ordo.workers.scheduler import Scheduler

    nc = await connect(settings, name="ordo-scheduler")
    await provision(nc, settings)
    handler = wiring.command_handler(nc, settings, batch_submits=False)
    schedules = wiring.schedule_handler(nc, handler, settings)
    scheduler = Scheduler(nc, handler, schedules=schedules)
    # The timer sweep (a backstop for scheduled tasks and schedules left without a timer) needs the
    # read model.
    from ordo.infra.pg import create_pool
    from ordo.projections import schedules as schedule_rows
    from ordo.projections.tasks import scheduled_before
    from ordo.workers.timer_sweep import TimerSweep

    sweep = TimerSweep(
        lambda: create_pool(settings.database_url, max_size=2),
        handler,
        overdue=scheduled_before,
        schedules=schedules,
        overdue_schedules=schedule_rows.overdue,
    )
    components: list[Scheduler | TimerSweep] = [scheduler, sweep] if settings.database_url else [scheduler]

    async def stop() -> None:
        for component in components:
            await component.shutdown()

    _install_signals(stop)
    try:
        await asyncio.gather(*(component.run() for component in components))
    finally:
        await disconnect(nc)


def _run_gateway(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from ordo.gateway.app import KEEP_ALIVE_S, create_app

    app = create_app(settings, stoppable_start=True)
    event_loop.tune_gc()  # uvicorn runs its own loop: the tuning applies to it all the same
    uvicorn.run(
        app, host=host, port=port, log_level="info", access_log=False, timeout_keep_alive=KEEP_ALIVE_S,
        # Trusted proxies' X-Forwarded-Proto makes the session cookie Secure behind TLS.
        proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips,
    )  # fmt: skip


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from ordo.up import run_local

    taken = _port_taken(settings.http_host, args.port)
    if taken is not None:  # before anything starts: no sign-in link printed for another server
        print(f"ordo: port {args.port} on {settings.http_host}: {taken}; use another --port", file=sys.stderr)
        return 1
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return event_loop.run(
        run_local(
            settings,
            data_dir=data_dir,
            port=args.port,
            workers=args.workers,
            cluster=args.cluster,
        )
    )


_APP_HELP = (
    "your handlers as 'package.module:registry' (an ordo.Registry; default: $ORDO_APP, else the demos)"
)


def _check_app(args: argparse.Namespace) -> str | None:
    """The --app path (or ORDO_APP), checked to import here so a typo fails now with a clear message."""
    from ordo.apps import AppError, load_registry

    app = (getattr(args, "app", None) or os.environ.get("ORDO_APP", "")).strip()
    if not app:
        return None
    try:
        load_registry(app)
    except AppError as exc:
        print(f"ordo: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    os.environ["ORDO_APP"] = app  # children (ordo up's workers) inherit it
    return app


def _within(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, or a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not within {low}..{high}")
        return value

    return parse


def _port_taken(host: str, port: int) -> str | None:
    """Why `port` cannot be listened on (another server has it, or it is not ours to take), or
    None; any other trouble (an unknown host) is left for the server's own start to report."""
    try:
        places = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for family, kind, proto, _, address in places:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return exc.strerror or str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ordo", description="Ordo task scheduler")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run everything on this machine (embedded NATS and PostgreSQL)")
    up.add_argument("--port", type=_within(1, 65535), default=8000)
    up.add_argument("--data-dir", default=os.environ.get("ORDO_DATA_DIR", ".ordo"))
    up.add_argument("--workers", type=_within(0, MAX_WORKERS), default=1)
    up.add_argument("--app", default=None, help=_APP_HELP)
    up.add_argument("--no-auth", action="store_true", help="switch API keys off (local use only)")
    up.add_argument(
        "--cluster", type=int, default=1, choices=(1, 3, 5), help="embedded JetStream cluster size"
    )
    gw = sub.add_parser("gateway", help="run the HTTP gateway")
    gw.add_argument("--host", default=None)
    gw.add_argument("--port", type=int, default=None)
    wk = sub.add_parser("worker", help="run a worker")
    wk.add_argument("--app", default=None, help=_APP_HELP)
    wk.add_argument("--queues", default="default", help="comma-separated queue names")
    wk.add_argument("--concurrency", type=int, default=None)
    wk.add_argument(
        "--type-limit",
        action="append",
        default=[],
        metavar="TYPE=N",
        help="at most N tasks of TYPE at once across all workers (repeatable; or ORDO_TYPE_LIMITS)",
    )
    sub.add_parser("projector", help="run the projections")
    rb = sub.add_parser("rebuild", help="replay the log into shadow tables and swap them in")
    rb.add_argument("projection", nargs="*", help="projections to rebuild (default: all)")
    sub.add_parser("scheduler", help="run the timer scheduler")
    args = parser.parse_args(argv)
    from ordo.infra.logs import setup_logging
    from ordo.infra.telemetry import setup_tracing

    setup_logging()
    setup_tracing(f"ordo-{args.command}")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"ordo: configuration error: {exc}", file=sys.stderr)
        return 2
    if "ORDO_AUTH" not in os.environ:
        settings = settings.with_(auth=True)  # entry points are secure unless told otherwise
    if args.command in ("up", "worker"):
        _check_app(args)
    if args.command == "up":
        if args.no_auth:
            settings = settings.with_(auth=False)
        return _cmd_up(settings, args)
    if not settings.nats_url or not settings.database_url and args.command != "worker":
        needs = "ORDO_NATS_URL" if args.command == "worker" else "ORDO_NATS_URL and ORDO_DATABASE_URL"
        print(f"ordo: set {needs} (or use `ordo up`)", file=sys.stderr)
        return 2
    from ordo.infra.nats_conn import ProvisioningError
    from ordo.infra.pg import ReadModelUnavailable

    try:
        if args.command == "gateway":
            _run_gateway(settings, args.host or settings.http_host, args.port or settings.http_port)
        elif args.command == "worker":
            from ordo.worker_process import run_worker

            queues = tuple(q for q in args.queues.split(",") if q)
            from ordo.workers.limits import parse_type_limits

            limits = parse_type_limits(",".join(args.type_limit))
            concurrency = args.concurrency or settings.worker_concurrency
            event_loop.run(run_worker(settings, queues, concurrency, limits))
        elif args.command == "projector":
            event_loop.run(_run_projector(settings))
        elif args.command == "rebuild":
            return event_loop.run(_run_rebuild(settings, args.projection))
        elif args.command == "scheduler":
            event_loop.run(_run_scheduler(settings))
    except (ProvisioningError, ReadModelUnavailable) as exc:  # e.g. NATS refuses the user, a wrong
        print(f"ordo: {exc}", file=sys.stderr)  # PostgreSQL password: say so and stop, no traceback
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
