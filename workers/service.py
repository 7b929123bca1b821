"""The worker process's composition root: connect, provision, build, run until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from infra.command_handler import CommandHandler
from infra.event_store import EventStore
from infra.nats_conn import connect, provision
from infra.settings import Settings
from infra.timers import Timers
from workers.demo import registry
from workers.runtime import Worker

log = logging.getLogger("ordo.worker")


async def run_worker(
    settings: Settings, queues: Sequence[str] = ("default",), concurrency: int | None = None
) -> None:
    """Run a worker with the demo handlers until SIGTERM/SIGINT, then shut down gracefully."""
    if concurrency is not None:
        settings = settings.with_(worker_concurrency=concurrency)
    nc = await connect(settings, name="ordo-worker")
    try:
        await provision(nc, settings)
        handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
        worker = Worker(nc, handler, registry, settings, queues=tuple(queues), logger=log)
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
        await nc.drain()
