"""A schema migration meeting a live writer's locks steps back instead of deadlocking it.

`migrate` runs at every projector (re)connection, gateway start and rebuild, while the live projector
writes. Its statements take table locks one after another; a writer's transaction takes its own in
another order. Here a writer holds `tasks` (as a projector's batch does) while the migration holds
`projection_checkpoints`, then asks for `projection_checkpoints` (as the batch's checkpoint move
does): a lock cycle. The migration must give way within its lock wait and finish afterwards; the
writer must get its lock and commit. On a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from ordo.infra.pg import connect
from ordo.projections.schema import MIGRATION_LOCK_WAIT_MS, migrate
from tests.helpers import eventually


async def test_a_migration_in_a_lock_cycle_with_a_writer_gives_way_and_then_completes(
    database_url: str,
) -> None:
    setup = await connect(database_url)
    writer = await asyncpg.connect(database_url)
    migrating = await connect(database_url)
    try:
        await migrate(setup)
        pid = migrating.get_server_pid()
        async with writer.transaction():
            await writer.execute("LOCK TABLE tasks IN ROW EXCLUSIVE MODE")
            run = asyncio.create_task(migrate(migrating))
            await eventually(lambda: _waiting_for_a_lock(setup, pid), timeout=10, what="a waiting migration")
            started = time.monotonic()
            # The cycle: the migration holds projection_checkpoints and waits for tasks.
            await asyncio.wait_for(
                writer.execute("LOCK TABLE projection_checkpoints IN ROW EXCLUSIVE MODE"), timeout=10
            )
            waited = time.monotonic() - started
        await asyncio.wait_for(run, timeout=30)  # done after the writer committed, no deadlock error
        assert waited < 2 * MIGRATION_LOCK_WAIT_MS / 1000 + 0.5, f"the writer waited {waited:.2f}s"
    finally:
        for conn in (setup, writer, migrating):
            await conn.close()


async def _waiting_for_a_lock(conn: asyncpg.Connection, pid: int) -> bool:
    query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1"
    state: str | None = await conn.fetchval(query, pid)
    return state == "Lock"
