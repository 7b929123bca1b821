"""The worker process's composition root: connect, provision, build, run until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from ordo.infra import wiring
from ordo.infra.nats_conn import connect, disconnect, provision
from ordo.infra.settings import Settings
from ordo.workers.handlers import Registry
from ordo.workers.limits import parse_type_limits
from ordo.workers.runtime import Worker

log = logging.getLogger("ordo.worker")


def worker_options(env: Mapping[str, str]) -> dict[str, Any]:
    """Worker-only options from the environment (read here, not in Settings: only workers use them).

    ORDO_TYPE_LIMITS="type=N,..." per-type concurrency limits across workers (give every worker the
    same); ORDO_WORKER_HEARTBEAT_S registry heartbeat period (default 5); ORDO_WORKER_ID a fixed id.
    """
    options: dict[str, Any] = {"type_limits": parse_type_limits(env.get("ORDO_TYPE_LIMITS", ""))}
    if env.get("ORDO_WORKER_HEARTBEAT_S"):
        options["heartbeat_every_s"] = float(env["ORDO_WORKER_HEARTBEAT_S"])
    if env.get("ORDO_WORKER_ID"):
        options["worker_id"] = env["ORDO_WORKER_ID"]
    return options


async def run_worker(
    settings: Settings,
    queues: Sequence[str] = ("default",),
    concurrency: int | None = None,
    type_limits: Mapping[str, int] | None = None,
    registry: Registry | None = None,
) -> None:
    """Run a worker with `registry`'s handlers until SIGTERM/SIGINT, then shut down gracefully.

    Without a registry: the one named by ORDO_APP (`module:registry`), else the demo handlers."""
    from ordo.apps import demo_registry, load_registry

    if registry is None:
        app = os.environ.get("ORDO_APP", "").strip()
        registry = load_registry(app) if app else demo_registry()
    options = worker_options(os.environ)
    if type_limits:
        options["type_limits"] = {**options["type_limits"], **type_limits}
    if concurrency is not None:
        settings = settings.with_(worker_concurrency=concurrency)
    nc = await connect(settings, name="ordo-worker")
    try:
        # A worker's own NATS user may not change streams: it waits for them and checks them.
        await provision(nc, settings, manage=not settings.nats_user)
        handler = wiring.command_handler(nc, settings, batch_submits=False, worker=True)
        worker = Worker(nc, handler, registry, settings, queues=tuple(queues), logger=log, **options)
        loop = asyncio.get_running_loop()
        stops: list[asyncio.Task[None]] = []

        def on_signal() -> None:
            stops.append(asyncio.create_task(worker.shutdown()))

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # not on Windows
                loop.add_signal_handler(sig, on_signal)
        try:
            await worker.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(sig)
            await worker.shutdown()
    finally:
        await disconnect(nc)
