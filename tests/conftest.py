"""Fixtures: a real nats-server and PostgreSQL per session, a fresh database and tenant per test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from nats.aio.client import Client as NATS

from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.embedded.postgres import EmbeddedPostgres, PostgresConfig
from ordo.embedded.processes import free_port
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.tasks import cancel_and_wait
from ordo.infra.timers import Timers
from ordo.projections.runner import ProjectionRunner
from ordo.workers.scheduler import Scheduler
from tests.helpers import eventually
from tests.watchdog import pytest_runtest_call  # noqa: F401  (a hook: dumps tasks before a timeout)

log = logging.getLogger("tests")


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A fresh nats-server per test (about 0.1 s): no test sees another's tickets, timers or
    consumers, however it ended."""
    server = EmbeddedNats(NatsServerConfig(data_dir=tmp_path_factory.mktemp("nats")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(PostgresConfig(data_dir=tmp_path_factory.mktemp("pg") / "data", fsync=False))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def database_url(pg_server: EmbeddedPostgres) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(pg_server.url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return pg_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def settings(nats_server: EmbeddedNats, database_url: str) -> Settings:
    return Settings(
        nats_url=nats_server.url,
        database_url=database_url,
        tenant="t" + uuid.uuid4().hex[:10],
        ack_wait_s=2.0,
        lease_extend_every_s=0.5,
        backoff_base_s=0.2,
        backoff_max_s=1.0,
        timer_lead_s=0.5,
        cancel_grace_s=1.0,
        shutdown_grace_s=2.0,
        max_payload_bytes=64 * 1024,
    )


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[NATS]:
    client = await connect(settings, name="ordo-test")
    await provision(client, settings)
    yield client
    await _bounded(client.close(), 15, "NATS client close")


@pytest.fixture
def handler(nc: NATS, settings: Settings) -> CommandHandler:
    return CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))


def uvicorn_gateway(settings: Settings, port: int, **options: Any) -> uvicorn.Server:
    """The gateway app of `settings` as a uvicorn server on 127.0.0.1:`port`, configured the way
    `ordo gateway` runs it where that matters to a test (its idle-connection time); `options` are
    more of uvicorn's settings."""
    from ordo.gateway.app import KEEP_ALIVE_S, create_app

    config: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **options}
    app = create_app(settings)
    return uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, timeout_keep_alive=KEEP_ALIVE_S, **config)
    )


@dataclass
class System:
    """Gateway, projector, scheduler and a worker running in this test's event loop."""

    settings: Settings
    base_url: str
    http: httpx.AsyncClient
    handler: CommandHandler
    nc: NATS
    projector: ProjectionRunner


@contextlib.asynccontextmanager
async def run_system(
    settings: Settings, nc: NATS, handler: CommandHandler, worker: bool = True
) -> AsyncIterator[System]:
    tasks: list[asyncio.Task[None]] = []
    projector = ProjectionRunner(nc, settings.database_url)
    scheduler = Scheduler(nc, handler)
    wk = None
    if worker:
        from ordo.workers.demo import registry
        from ordo.workers.runtime import Worker

        wk = Worker(nc, handler, registry, settings)
    tasks.append(asyncio.create_task(projector.run()))
    tasks.append(asyncio.create_task(scheduler.run()))
    if wk is not None:
        tasks.append(asyncio.create_task(wk.run()))
    port = free_port()
    server = uvicorn_gateway(settings, port)
    tasks.append(asyncio.create_task(server.serve()))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def ready() -> bool:
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout=60, what="gateway ready")
        try:
            yield System(settings, base, http, handler, nc, projector)
        finally:
            server.should_exit = True
            await projector.shutdown()
            await scheduler.shutdown()
            if wk is not None:
                await _bounded(wk.shutdown(), 30, "worker shutdown")
            await _bounded(asyncio.gather(*tasks, return_exceptions=True), 30, "system tasks")
            await cancel_and_wait(*tasks)


async def _bounded(awaitable: Awaitable[object], timeout: float, what: str) -> None:
    """A teardown step that cannot hang the session: after `timeout` it is abandoned, loudly
    (the stacks of every task still pending are logged, so the cause shows in the output)."""
    try:
        await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        log.error("teardown: %s still pending after %gs; abandoned", what, timeout)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                log.error("pending task %s:\n%s", task.get_name(), "".join(_stack(task)))


def _stack(task: asyncio.Task[object]) -> list[str]:
    import io

    out = io.StringIO()
    task.print_stack(limit=12, file=out)
    return [out.getvalue()]


@pytest.fixture
async def system(settings: Settings, nc: NATS, handler: CommandHandler) -> AsyncIterator[System]:
    async with run_system(settings, nc, handler) as sys_:
        yield sys_


@pytest.fixture
async def gateway_only(settings: Settings, nc: NATS, handler: CommandHandler) -> AsyncIterator[System]:
    """The system without a worker: tasks stay queued."""
    async with run_system(settings, nc, handler, worker=False) as sys_:
        yield sys_


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
