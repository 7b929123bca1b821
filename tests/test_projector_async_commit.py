"""The projector commits without waiting for PostgreSQL's WAL flush (`synchronous_commit = off`,
docs/decisions.md 34): a crash of PostgreSQL may take its last commits with it, checkpoints
included, and the projector applies those events again from the log. Here PostgreSQL is killed
(every process, SIGKILL: the WAL not yet written goes with its shared memory) while the projector
applies a stream of submits; after the restart the read model must hold every event once and equal
a rebuild from the log, row for row."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ordo.domain.commands import SubmitTask
from ordo.embedded.nats import EmbeddedNats
from ordo.embedded.postgres import EmbeddedPostgres, PostgresConfig, _postgres_pids_in
from ordo.embedded.processes import free_port, wait_pid_gone
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.projections.rebuild import Rebuilder
from ordo.projections.runner import ProjectionRunner, lag
from tests.helpers import eventually
from tests.test_projections_failover import submissions
from tests.test_rebuild import all_tables, table_hashes


@pytest.fixture
def killable_pg(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(PostgresConfig(data_dir=tmp_path / "pg", port=free_port(), fsync=True))
    server.start()
    yield server
    server.stop()


def _kill_all(pg: EmbeddedPostgres) -> int:
    """SIGKILL every process of the server, and wait until each is gone: a process still dying (a
    loaded machine, a write in progress) would look running to `pg.start()`, which then returns
    without starting a server."""
    pids = _postgres_pids_in(pg.data_dir)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        assert wait_pid_gone(pid, 30.0), f"postgres process {pid} still alive 30 s after SIGKILL"
    return len(pids)


async def test_postgres_killed_under_the_projector_loses_no_event_and_matches_a_rebuild(
    killable_pg: EmbeddedPostgres, nats_server: EmbeddedNats
) -> None:
    pg = killable_pg
    admin = await asyncpg.connect(pg.url)
    name = "t_" + uuid.uuid4().hex[:12]
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = pg.url.rsplit("/", 1)[0] + "/" + name
    settings = Settings(nats_url=nats_server.url, database_url=dsn, tenant="t" + uuid.uuid4().hex[:8])
    nc = await connect(settings, name="ordo-test")
    await provision(nc, settings)
    handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
    runner = ProjectionRunner(nc, dsn)
    running = asyncio.create_task(runner.run())
    commands = submissions(settings.tenant, 3000)
    try:

        async def applying() -> bool:
            return runner.last_seq >= 600

        submitting = asyncio.create_task(_submit_in_small_appends(handler, settings.tenant, commands))
        await eventually(applying, timeout=60, what="the projector applying")
        applied_before = runner.last_seq
        assert _kill_all(pg) > 0
        await submitting  # the log keeps taking submits while PostgreSQL is down
        pg.start()  # on the test's thread (the server's parent-death signal follows it)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        assert pool is not None
        try:
            async with pool.acquire() as conn:
                # The kill may come before the WAL holding the projector's own tables was written
                # (its migration commits asynchronously too): then nothing survived, all is replayed.
                after_restart = 0
                if await conn.fetchval("SELECT to_regclass('projection_checkpoints')") is not None:
                    after_restart = await conn.fetchval(
                        "SELECT coalesce(min(last_seq), 0) FROM projection_checkpoints"
                    )

            async def caught_up() -> bool:
                return runner.active and not any((await lag(pool, nc)).values())

            await eventually(caught_up, timeout=120, interval=0.2, what="the projector caught up again")
            seqs = [r["seq"] for r in await pool.fetch("SELECT seq FROM task_events ORDER BY seq")]
            log_seqs = [e.seq for e in (await handler.store.load_filter(f"ordo.evt.{settings.tenant}.>"))[0]]
            assert seqs == log_seqs and len(seqs) == len(commands)  # every event once
            assert await pool.fetchval("SELECT count(*) FROM tasks") == len(commands)
            assert await pool.fetchval("SELECT sum(n) FROM queue_depth") == len(commands)
        finally:
            await pool.close()
        # Not asserted (the WAL writer may have flushed in time): whether commits were lost.
        print(f"applied before the kill: {applied_before}; checkpoint after the restart: {after_restart}")
        live = await table_hashes(dsn, all_tables())
        await runner.shutdown()
        await asyncio.wait_for(running, 30)
        await Rebuilder(nc, dsn).run()
        assert await table_hashes(dsn, all_tables()) == live
    finally:
        if not running.done():
            await runner.shutdown()
            await asyncio.wait_for(running, 30)
        await nc.close()


async def _submit_in_small_appends(handler: CommandHandler, tenant: str, commands: list[SubmitTask]) -> None:
    for i in range(0, len(commands), 20):  # many small batches for the projector, many commits
        await handler.submit_many(tenant, commands[i : i + 20])
