"""Deployments made by older releases move to the `rollups` projection of today.

Before decision 38, queue_stats, stats_minutely, counters and dead_letters each kept a per-task table
and a checkpoint; from decision 38 to 46, `rollups` kept its marks in `rollup_tasks`. Since decision
46 the marks are folded from `task_events` when the projector does not remember a task, so neither
kind of per-task table is carried over: the tests make the old layouts, run the migration, and check
that the projector goes on from the checkpoint and that the read models equal a rebuild from the log.
"""

from __future__ import annotations

import asyncio

import asyncpg
from nats.aio.client import Client as NATS

from ordo.domain.commands import CancelTask
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
from tests.test_projections_failover import submissions
from tests.test_rebuild import all_tables, table_hashes

Hashes = dict[str, tuple[int, str]]  # table -> (rows, hash), as tests.test_rebuild.table_hashes gives

# The old per-task tables and their columns (their rows are not read any more).
_OLD = {
    "queue_task_status": "queue text, status text, paused_from text, archived bool, last_seq bigint",
    "stats_tasks": "queue text, type text, attempt_started_at timestamptz, last_seq bigint",
    "metric_task_marks": "queue text, type text, runnable_at timestamptz, started_at timestamptz",
    "dead_letter_tasks": "queue text, type text, attempts int, error json, last_seq bigint",
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
    """The four per-task tables and checkpoints `rollups` replaced, in place of its checkpoint."""
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            for table, columns in _OLD.items():
                await conn.execute(f"CREATE TABLE {table} (tenant text, task_id text, {columns})")
                await conn.execute(f"INSERT INTO {table} (tenant, task_id) SELECT tenant, id FROM tasks")
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
        assert await conn.fetchval("SELECT to_regclass('rollup_tasks')") is None
        return {r["name"]: r["last_seq"] for r in rows}
    finally:
        await conn.close()


async def _workload(settings: Settings, nc: NATS, handler: CommandHandler) -> tuple[int, Hashes]:
    """120 tasks through every lifecycle, projected: the log's last sequence and the tables' hashes."""
    await drive(handler, settings.tenant, 120, concurrency=16)
    last = await _projected(nc, settings.database_url)
    before = await table_hashes(settings.database_url, all_tables())
    assert before["dead_letters"][0] > 0 and before["queue_depth"][0] > 0
    return last, before


async def test_the_four_checkpoints_agreeing_are_carried_over(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    dsn, tables = settings.database_url, all_tables()
    last, before = await _workload(settings, nc, handler)

    await _old_layout(dsn, [last] * 4)
    checkpoints = await _migrated(dsn)
    assert checkpoints[rollups.NAME] == last and not set(rollups.RETIRED) & set(checkpoints)
    assert await table_hashes(dsn, tables) == before  # the totals kept as they were, nothing replayed

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


async def test_the_per_task_marks_table_of_decision_38_is_dropped_and_the_projector_goes_on(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """A deployment of decisions 38-45 kept the marks in `rollup_tasks`. It is dropped; tasks still
    in flight then have their marks folded from `task_events` and the totals stay right."""
    dsn, tables = settings.database_url, all_tables()
    await drive(handler, settings.tenant, 120, concurrency=16)
    waiting = submissions(settings.tenant, 10)  # still queued when the projector stops
    await handler.submit_many(settings.tenant, waiting)
    last = await _projected(nc, dsn)
    before = await table_hashes(dsn, tables)
    conn = await connect(dsn)
    try:
        await conn.execute("CREATE TABLE rollup_tasks (tenant text, task_id text, last_seq bigint)")
    finally:
        await conn.close()
    checkpoints = await _migrated(dsn)
    assert checkpoints[rollups.NAME] == last
    assert await table_hashes(dsn, tables) == before

    for command in waiting:  # tasks the next projector does not remember: marks from their history
        await handler.execute(settings.tenant, CancelTask(task_id=command.task_id))
    await drive(handler, settings.tenant, 40, concurrency=16)
    await _projected(nc, dsn)
    conn = await connect(dsn)
    try:
        queued = await conn.fetchval("SELECT n FROM queue_depth WHERE status = 'queued'")
        assert queued is None, "the cancelled tasks left the queued count"
    finally:
        await conn.close()
    await _rebuilt_equal(nc, dsn, tables)
