"""The FastAPI application: routes, problem+json errors, the UI's static files."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from ordo.gateway import (
    metrics,
    openapi,
    problems,
    routes_auth,
    routes_dead_letters,
    routes_events,
    routes_health,
    routes_queues,
    routes_schedules,
    routes_stats,
    routes_tasks,
    routes_ui_session,
    routes_workers,
)
from ordo.gateway.head import HeadAsGet
from ordo.gateway.nats_api import NatsApi
from ordo.gateway.nul_guard import RefuseNul
from ordo.gateway.query_names import known_query_only
from ordo.gateway.services import Services
from ordo.infra.nats_conn import ProvisioningError
from ordo.infra.pg import ReadModelUnavailable
from ordo.infra.settings import Settings

T = TypeVar("T")

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

# How long an idle HTTP connection stays open. A client drops a connection it has kept idle for its
# own expiry (httpx: 5 s, uvicorn's own default here too). If the server closes at that same moment,
# a request already on its way reads end-of-file instead of a response, and the client reports an
# error for a request the gateway never saw. The gateway keeps idle connections longer than common
# clients do, so the client is the one that closes them.
KEEP_ALIVE_S = 75


async def _unless_stopped(start: Awaitable[T]) -> T:
    """`start`, given up on SIGINT or SIGTERM. While uvicorn waits for the app's startup it only
    notes a signal (for after startup), so a gateway waiting for an unreachable NATS could not be
    stopped but by SIGKILL; uvicorn's own handlers are put back once started."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(start)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    late: list[signal.Signals] = []

    stopped: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        if task.done():
            late.append(sig)  # started meanwhile: uvicorn's handlers get it once they are back
        else:
            stopped.append(sig)
            task.cancel()

    for sig in before:
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if stopped:
            raise StoppedWhileStarting(stopped[0]) from None
        raise
    finally:
        for sig, handler in before.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)
        for sig in late:
            signal.raise_signal(sig)


class StoppedWhileStarting(Exception):
    """A signal ended the gateway's start."""


async def _start_or_exit(start: Awaitable[T]) -> T:
    """`ordo gateway`'s start: stopped by a signal, the process ends (0); a server it cannot use
    (NATS refusing its user, PostgreSQL unreachable) ends it with one line saying why (1), not the
    traceback uvicorn would print for a failed startup."""
    try:
        return await _unless_stopped(start)
    except StoppedWhileStarting:
        print("ordo gateway: stopped while starting", file=sys.stderr, flush=True)
        os._exit(0)
    except (ProvisioningError, ReadModelUnavailable) as exc:
        print(f"ordo gateway: {exc}", file=sys.stderr, flush=True)
        os._exit(1)


def create_app(settings: Settings, *, stoppable_start: bool = False) -> FastAPI:
    """The gateway. `stoppable_start`: SIGINT and SIGTERM end a startup still waiting for NATS or
    PostgreSQL (`ordo gateway`, the main thread's own loop)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The gateway's own composition root: its services once, then the NATS command API (a
        # second front door into the same task service).
        starting = Services.start(settings)
        svc = await (_start_or_exit(starting) if stoppable_start else starting)
        nats_api = NatsApi(svc)
        try:
            await nats_api.start()
            app.state.services = svc
            yield
        finally:
            await nats_api.stop()
            await svc.close()

    app = FastAPI(
        title="Ordo",
        version="0.1.0",
        description="Event-sourced task scheduler on NATS JetStream",
        lifespan=lifespan,
        openapi_url=None,  # openapi.install serves the document and pages (behind a key by default)
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(known_query_only)],
    )
    problems.install(app)
    openapi.install(app, settings)
    app.include_router(routes_tasks.router)
    app.include_router(routes_auth.router)
    app.include_router(routes_ui_session.router)
    app.include_router(routes_schedules.router)
    app.include_router(routes_queues.router)
    app.include_router(routes_events.router)
    app.include_router(routes_health.router)
    app.include_router(routes_dead_letters.router)
    app.include_router(routes_stats.router)
    app.include_router(routes_workers.router)
    app.include_router(metrics.router)
    app.add_middleware(RefuseNul)
    app.add_middleware(HeadAsGet)
    app.add_middleware(metrics.HttpMetrics)  # the outermost: it counts the refusals too
    app.mount("/", StaticFiles(directory=UI_DIR, html=True), name="ui")
    return app
