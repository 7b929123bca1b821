"""The projector behind the log (projections/runner.py `_catch_up`): it never waits for the log while
it holds a transaction, so a backlog followed by messages it does not apply (dispatch copies, held
tickets: `ordo.work.>` in the same stream) is committed at once, and then the checkpoints are free."""

from __future__ import annotations

import asyncio

import asyncpg
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from ordo.projections.runner import ProjectionRunner, RunnerConfig
from tests.helpers import eventually
from tests.test_projections_failover import submissions


async def test_a_backlog_then_messages_it_skips_is_committed_without_waiting(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    await handler.submit_many(settings.tenant, submissions(settings.tenant, 30))
    held = f"{sj.WORK_PREFIX}.{settings.tenant}.default.held"
    js = nc.jetstream()
    for _ in range(50):  # more than a batch of messages no family reads, after the backlog
        await js.publish(held, b"{}", stream=sj.EVENTS_STREAM)
    runner = ProjectionRunner(nc, settings.database_url, RunnerConfig(batch_size=5))
    running = asyncio.create_task(runner.run())
    conn = await asyncpg.connect(settings.database_url)
    try:

        async def projected() -> bool:
            try:
                n = await conn.fetchval("SELECT count(*) FROM tasks WHERE tenant=$1", settings.tenant)
            except asyncpg.UndefinedTableError:
                return False  # the projector has not created its tables yet
            return bool(n == 30)

        await eventually(projected, timeout=30, what="the backlog committed")

        async def no_open_transaction() -> bool:
            states = await conn.fetch(
                "SELECT state FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return bool(states) and all(r["state"] != "idle in transaction" for r in states)

        await eventually(no_open_transaction, timeout=10, what="no transaction open while the log is quiet")
        async with conn.transaction():  # the checkpoints are not held: a rebuild's swap could lock them
            await conn.execute("SET LOCAL lock_timeout = '2s'")
            await conn.fetch("SELECT name FROM projection_checkpoints FOR UPDATE")
    finally:
        await conn.close()
        await runner.shutdown()
        await asyncio.wait_for(running, 30)
