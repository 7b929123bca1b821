"""A deployment whose four rollup read models were projections of their own moves to `rollups`.

Before the merge, queue_stats, stats_minutely, counters and dead_letters each kept a per-task table
and a checkpoint. The tests make that layout from a projected workload (each old table holds its
column group of `rollup_tasks`), run the migration, and check that the read models equal what the
live projector and a rebuild from the log give.
"""

from __future__ import annotations

import asyncio

import asyncpg
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.pg import connect
from ordo.infra.settings import Settings
from ordo.projections import rollups
from ordo.projections.rebuild import Rebuilder
from ordo.projections.runner import ProjectionRunner, RunnerConfig, checkpoint
from ordo.projections.schema import migrate
from tests.helpers import eventually
from tests.rebuild_workload import drive
from tests.test_rebuild import all_tables, table_hashes

Hashes = dict[str, tuple[int, str]]  # table -> (rows, hash), as tests.test_rebuild.table_hashes gives

# The old per-task tables, as `rollup_tasks` column groups: (table, its columns <- rollup columns).
_OLD = {
    "queue_task_status": (
        "queue, status, paused_from, archived, last_seq, attempt, lease_until",
        "q_queue, q_status, q_paused_from, q_archived, q_seq, q_attempt, q_lease_until",
        "q_status",
    ),
    "stats_tasks": (
        "queue, type, attempt_started_at, last_seq",
        "s_queue, s_type, s_attempt_started_at, s_seq",
        "s_seq",
    ),
    "metric_task_marks": (
        "queue, type, runnable_at, started_at",
        "c_queue, c_type, c_runnable_at, c_started_at",
        "c_queue",
    ),
    "dead_letter_tasks": (
        "queue, type, attempts, error, last_seq",
        "d_queue, d_type, d_attempts, d_error, d_seq",
        "d_seq",
    ),
}


async def _projected(nc: NATS, dsn: str) -> int:
    """Run a projector until it has applied the whole log; returns the log's last sequence."""
    last = int((await nc.jetstream().stream_info(sj.EVENTS_STREAM)).state.last_seq)
    conn = await connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    runner = ProjectionRunner(nc, dsn, RunnerConfig(batch_size=100))
    running = asyncio.create_task(runner.run())
    conn = await asyncpg.connect(dsn)
    try:
        await eventually(lambda: _at(conn, last), timeout=60, what=f"rollups at {last}")
    finally:
        await conn.close()
        await runner.shutdown()
        await running
    return last


async def _at(conn: asyncpg.Connection, seq: int) -> bool:
    return await checkpoint(conn, rollups.NAME) >= seq


async def _old_layout(dsn: str, checkpoints: list[int]) -> None:
    """Turn `rollup_tasks` back into the four per-task tables and checkpoints it replaced."""
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            for table, (cols, source, present) in _OLD.items():
                renamed = zip(cols.split(", "), source.split(", "), strict=True)
                select = ", ".join(f"{new} AS {old}" for old, new in renamed)
                await conn.execute(
                    f"CREATE TABLE {table} AS SELECT tenant, task_id, {select} FROM rollup_tasks"
                    f" WHERE {present} IS NOT NULL"
                )
            await conn.execute("DROP TABLE rollup_tasks")
            await conn.execute("DELETE FROM projection_checkpoints WHERE name = $1", rollups.NAME)
            await conn.executemany(
                "INSERT INTO projection_checkpoints (name, last_seq) VALUES ($1, $2)",
                list(zip(rollups.RETIRED, checkpoints, strict=True)),
            )
    finally:
        await conn.close()


async def _migrated(dsn: str) -> dict[str, int]:
    conn = await connect(dsn)
    try:
        await migrate(conn)
        rows = await conn.fetch("SELECT name, last_seq FROM projection_checkpoints")
        left = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ANY($1::text[])", list(_OLD)
        )
        assert left == 0, "the retired per-task tables are dropped"
        return {r["name"]: r["last_seq"] for r in rows}
    finally:
        await conn.close()


async def _workload(settings: Settings, nc: NATS, handler: CommandHandler) -> tuple[int, Hashes]:
    """120 tasks through every lifecycle, projected: the log's last sequence and the tables' hashes."""
    await drive(handler, settings.tenant, 120, concurrency=16)
    last = await _projected(nc, settings.database_url)
    before = await table_hashes(settings.database_url, all_tables())
    assert before["dead_letters"][0] > 0 and before["rollup_tasks"][0] == 120
    return last, before


async def test_the_four_checkpoints_agreeing_their_tasks_are_carried_over(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    dsn, tables = settings.database_url, all_tables()
    last, before = await _workload(settings, nc, handler)

    await _old_layout(dsn, [last] * 4)
    checkpoints = await _migrated(dsn)
    assert checkpoints[rollups.NAME] == last and not set(rollups.RETIRED) & set(checkpoints)
    assert await table_hashes(dsn, tables) == before  # carried over row for row, nothing replayed

    await drive(handler, settings.tenant, 40, concurrency=16)  # the projector goes on from there
    await _projected(nc, dsn)
    await _rebuilt_equal(nc, dsn, tables)


async def test_checkpoints_that_disagree_replay_the_rollups_from_the_log(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    dsn, tables = settings.database_url, all_tables()
    last, before = await _workload(settings, nc, handler)

    await _old_layout(dsn, [last, last, last - 5, last])  # e.g. a rebuild of one of them was cut short
    checkpoints = await _migrated(dsn)
    assert rollups.NAME not in checkpoints and not set(rollups.RETIRED) & set(checkpoints)
    emptied = await table_hashes(dsn, tables)
    assert emptied["queue_depth"][0] == 0 and emptied["dead_letters"][0] == 0

    await _projected(nc, dsn)
    assert await table_hashes(dsn, tables) == before


async def _rebuilt_equal(nc: NATS, dsn: str, tables: tuple[str, ...]) -> None:
    live = await table_hashes(dsn, tables)
    await Rebuilder(nc, dsn).run()
    assert await table_hashes(dsn, tables) == live


async def test_tables_an_older_process_made_again_after_the_move_are_dropped_and_nothing_replayed(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """An older gateway's `migrate` creates the four per-task tables again (empty, no checkpoints):
    the next start drops them and keeps the rollups as they are."""
    dsn, tables = settings.database_url, all_tables()
    last, before = await _workload(settings, nc, handler)
    conn = await connect(dsn)
    try:
        for table in _OLD:
            await conn.execute(f"CREATE TABLE {table} (tenant text, task_id text)")
    finally:
        await conn.close()
    checkpoints = await _migrated(dsn)
    assert checkpoints[rollups.NAME] == last
    assert await table_hashes(dsn, tables) == before
