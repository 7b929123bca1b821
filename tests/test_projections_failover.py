"""Projector failover: a crash between commit and acknowledgement applies nothing twice, a standby takes
over, the checkpoint never moves backwards; a poison event halts the projector instead of being skipped.

The runner acknowledges nothing to NATS (an ordered consumer; PostgreSQL holds the cursor), so the
"acknowledgement" a crash can interrupt is everything after COMMIT: the `after_commit` fault hook
raises there. An audit projection records every sequence each runner applies; a sequence applied
twice, or one never applied, fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from domain.commands import SubmitTask
from infra import subjects as sj
from infra.command_handler import CommandHandler
from infra.settings import Settings
from projections.reader import PoisonEvent
from projections.registry import PROJECTIONS, Projection
from projections.runner import LEADER_LOCK, ProjectionRunner, RunnerConfig, checkpoint, lag, leader_present
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent


class Crash(Exception):
    """The fault hook's stand-in for a process dying right after COMMIT."""


def audit(runner: str) -> Projection:
    """One projection (one checkpoint) shared by every runner; each row names the runner that applied it."""

    async def apply(conn: asyncpg.Connection, events: list[object]) -> None:
        await conn.execute(
            "INSERT INTO apply_audit (seq, runner) SELECT unnest($1::bigint[]), $2",
            [e.seq for e in events],  # type: ignore[attr-defined]
            runner,
        )

    return Projection("audit", "", apply)


async def submit(handler: CommandHandler, tenant: str, n: int) -> None:
    now = datetime.now(UTC)
    commands = [
        SubmitTask(
            task_id=f"fo{uuid.uuid4().hex[:12]}",
            tenant=tenant,
            queue="default",
            task_type="demo.echo",
            now=now,
        )
        for _ in range(n)
    ]
    for i in range(0, n, 50):  # many small appends: many small batches for the projector
        await handler.submit_many(tenant, commands[i : i + 50])


@contextlib.asynccontextmanager
async def watch_checkpoint(dsn: str) -> AsyncIterator[list[int]]:
    """Sample the tasks checkpoint continuously; the samples are yielded when the block ends."""
    samples: list[int] = []
    stop = asyncio.Event()
    conn = await asyncpg.connect(dsn)

    async def sample() -> None:
        while not stop.is_set():
            samples.append(await checkpoint(conn))
            await asyncio.sleep(0.005)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        stop.set()
        await task
        await conn.close()


async def event_seqs(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["seq"] for r in await conn.fetch("SELECT seq FROM task_events ORDER BY seq")]
    finally:
        await conn.close()


async def test_a_crash_after_commit_applies_nothing_twice_and_a_standby_takes_over(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    dsn = settings.database_url
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE IF NOT EXISTS apply_audit (seq bigint NOT NULL, runner text NOT NULL)")
    config = RunnerConfig(batch_size=40, standby_poll_s=0.05)
    commits: dict[str, int] = {}

    def runner(name: str, crash_at_commit: int | None) -> ProjectionRunner:
        async def after_commit(seq: int) -> None:
            commits[name] = commits.get(name, 0) + 1
            if commits[name] == crash_at_commit:
                raise Crash(f"{name} died after committing up to {seq}")

        return ProjectionRunner(nc, dsn, config, (*PROJECTIONS, audit(name)), after_commit=after_commit)

    a, b, c = runner("a", 3), runner("b", 4), runner("c", None)
    task_a = asyncio.create_task(a.run())
    await eventually(lambda: _true(a.active), what="a active")
    task_b = asyncio.create_task(b.run())  # the only standby
    async with watch_checkpoint(dsn) as samples:
        writes = asyncio.create_task(submit(handler, settings.tenant, 1500))
        with pytest.raises(Crash):
            await asyncio.wait_for(task_a, 120)
        await eventually(lambda: _true(b.active), what="b took over")
        task_c = asyncio.create_task(c.run())  # now the standby of b
        with pytest.raises(Crash):
            await asyncio.wait_for(task_b, 120)
        await eventually(lambda: _true(c.active), what="c took over")
        await writes
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        assert pool is not None
        await eventually(lambda: _lag_zero(pool, nc), timeout=120, what="caught up")
        await pool.close()
    await c.shutdown()
    await asyncio.wait_for(task_c, 30)

    assert commits["a"] == 3 and commits["b"] == 4 and commits["c"] > 0
    assert all(x <= y for x, y in zip(samples, samples[1:], strict=False)), "the checkpoint moved backwards"
    dupes = await conn.fetch(
        "SELECT seq, array_agg(runner) AS r FROM apply_audit GROUP BY seq HAVING count(*) > 1"
    )
    assert [dict(d) for d in dupes] == []
    applied = [r["seq"] for r in await conn.fetch("SELECT seq FROM apply_audit ORDER BY seq")]
    assert applied == await event_seqs(dsn) and len(applied) >= 1500
    by_runner = {r["runner"] for r in await conn.fetch("SELECT DISTINCT runner FROM apply_audit")}
    assert by_runner == {"a", "b", "c"}
    assert a.skipped_duplicates == b.skipped_duplicates == c.skipped_duplicates == 0
    await conn.close()


async def _true(value: bool) -> bool:
    return value


async def test_kill_9_of_the_active_projector_process_and_the_standby_takes_over(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    env = {**os.environ, **settings.to_env(), "ORDO_PROJECTION_BATCH": "50", "PYTHONPATH": str(ROOT)}

    async def projector() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "infra.cli", "projector", env=env, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    active = await projector()
    standby = None
    try:
        await eventually(lambda: leader_present(pool), timeout=60, what="first projector active")
        holder = await pool.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype='advisory' AND objid=$1 AND granted", LEADER_LOCK
        )
        standby = await projector()
        await submit(handler, settings.tenant, 200)
        await eventually(lambda: _lag_zero(pool, nc), timeout=60, what="first projector caught up")
        async with watch_checkpoint(settings.database_url) as samples:
            writes = asyncio.create_task(submit(handler, settings.tenant, 1000))
            base = await checkpoint(pool)
            await eventually(lambda: _beyond(pool, base + 200), timeout=60, what="projector applying")
            active.send_signal(signal.SIGKILL)
            assert await active.wait() == -signal.SIGKILL
            await writes
            await eventually(lambda: _lag_zero(pool, nc), timeout=120, what="the standby caught up")
        new_holder = await pool.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype='advisory' AND objid=$1 AND granted", LEADER_LOCK
        )
        assert new_holder is not None and new_holder != holder
        assert standby.returncode is None
        assert all(x <= y for x, y in zip(samples, samples[1:], strict=False)), (
            "the checkpoint moved backwards"
        )
        assert await pool.fetchval("SELECT count(*) FROM tasks WHERE tenant=$1", settings.tenant) == 1200
        counts = await pool.fetchval("SELECT sum(n) FROM queue_depth WHERE tenant=$1", settings.tenant)
        assert counts == 1200, "a counter was applied twice or never"
        assert await pool.fetchval(
            "SELECT sum(submitted) FROM stats_minutely WHERE tenant=$1", settings.tenant
        ) == 1200  # fmt: skip
    finally:
        for proc in (active, standby):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 30)
        await pool.close()


async def _lag_zero(pool: asyncpg.Pool, nc: NATS) -> bool:
    return all(v == 0 for v in (await lag(pool, nc)).values())


async def _beyond(pool: asyncpg.Pool, seq: int) -> bool:
    return await checkpoint(pool) >= seq


async def test_a_poison_event_halts_the_projector_and_is_never_skipped(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    await submit(handler, settings.tenant, 3)
    js = nc.jetstream()
    before = (await js.get_last_msg(sj.EVENTS_STREAM, sj.all_events_filter())).seq
    subject = sj.event_subject(settings.tenant, "default", "poison1", "submitted")
    poison = (await js.publish(subject, b"\x00 not an event", stream=sj.EVENTS_STREAM)).seq
    await submit(handler, settings.tenant, 3)  # good events after it must wait too

    for _ in range(2):  # a restarted projector halts at the same event again
        runner = ProjectionRunner(nc, settings.database_url, RunnerConfig(batch_size=100))
        with pytest.raises(PoisonEvent, match=f"seq {poison}"):
            await asyncio.wait_for(runner.run(), 60)
        conn = await asyncpg.connect(settings.database_url)
        try:
            assert await checkpoint(conn) == before  # everything before it, nothing after it
            assert await conn.fetchval("SELECT count(*) FROM tasks WHERE tenant=$1", settings.tenant) == 3
        finally:
            await conn.close()
