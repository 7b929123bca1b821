"""Projector failover: a crash between commit and acknowledgement applies nothing twice, a standby takes
over, the checkpoint never moves backwards; an undecodable event is recorded and skipped (Revision 2).

The runner acknowledges nothing to NATS (an ordered consumer; PostgreSQL holds the cursor), so the
"acknowledgement" a crash can interrupt is everything after COMMIT: the `after_commit` fault hook
raises there. An audit projection records every sequence each runner applies; a sequence applied
twice, or one never applied, fails the test.

The kill -9 test runs tasks through a worker while the active projector process dies: a reader polls
tasks in the read model all along and no status it sees may go backwards in the task's lifecycle, and
at the end the read model equals a rebuild from the log. Timing (kill point, batch size, task length,
crash points) is fixed, or drawn from ORDO_CHAOS_SEED under `make chaos` (tests/chaos.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from ordo.domain.commands import SubmitTask
from ordo.domain.state import fold
from ordo.domain.status import TaskStatus
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import StoredEvent
from ordo.infra.settings import Settings
from ordo.projections.rebuild import rebuild
from ordo.projections.registry import PROJECTIONS, Projection
from ordo.projections.runner import (
    LEADER_LOCK,
    ProjectionRunner,
    RunnerConfig,
    checkpoint,
    lag,
    leader_present,
)
from tests.chaos import Chaos
from tests.helpers import eventually
from tests.test_rebuild import all_tables, table_hashes
from tests.worker_procs import WorkerProc

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


def submissions(
    tenant: str, n: int, task_type: str = "demo.echo", payload: bytes | None = None
) -> list[SubmitTask]:
    now = datetime.now(UTC)
    return [
        SubmitTask(
            task_id=f"fo{uuid.uuid4().hex[:12]}",
            tenant=tenant,
            queue="default",
            task_type=task_type,
            now=now,
            payload=msgspec.Raw(payload) if payload is not None else msgspec.Raw(b"null"),
        )
        for _ in range(n)
    ]


async def submit(handler: CommandHandler, tenant: str, n: int | list[SubmitTask]) -> None:
    commands = submissions(tenant, n) if isinstance(n, int) else n
    for i in range(0, len(commands), 50):  # many small appends: many small batches for the projector
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
    chaos = Chaos("projector-crash-after-commit")
    config = RunnerConfig(batch_size=chaos.randint("batch_size", 40, 10, 120), standby_poll_s=0.05)
    crash_a = chaos.randint("crash_a_at_commit", 3, 1, 8)
    crash_b = chaos.randint("crash_b_at_commit", 4, 1, 8)
    commits: dict[str, int] = {}
    # A counted commit hands on one batch, and the catch-up transaction it ends may hold more: a and
    # b use at most this many events before they die. Submit more, or a chaos draw of large batches
    # and late crashes leaves b nothing to die on.
    n = max(1500, (crash_a + crash_b) * config.batch_size + 2 * config.catch_up_events + 200)

    def runner(name: str, crash_at_commit: int | None) -> ProjectionRunner:
        async def after_commit(seq: int) -> None:
            commits[name] = commits.get(name, 0) + 1
            if commits[name] == crash_at_commit:
                raise Crash(f"{name} died after committing up to {seq}")

        return ProjectionRunner(nc, dsn, config, (*PROJECTIONS, audit(name)), after_commit=after_commit)

    a, b, c = runner("a", crash_a), runner("b", crash_b), runner("c", None)
    task_a = asyncio.create_task(a.run())
    await eventually(lambda: _true(a.active), what="a active")
    task_b = asyncio.create_task(b.run())  # the only standby
    async with watch_checkpoint(dsn) as samples:
        writes = asyncio.create_task(submit(handler, settings.tenant, n))
        with pytest.raises(Crash):
            await asyncio.wait_for(task_a, 120)
        # b may be elected, commit `crash_b` times and die between two probes: its commits show it too.
        await eventually(lambda: _true(b.active or "b" in commits), what="b took over")
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

    assert commits["a"] == crash_a and commits["b"] == crash_b and commits["c"] > 0
    print(f"\nprojector failover: crash after commit, {chaos.describe()}")
    assert all(x <= y for x, y in zip(samples, samples[1:], strict=False)), "the checkpoint moved backwards"
    dupes = await conn.fetch(
        "SELECT seq, array_agg(runner) AS r FROM apply_audit GROUP BY seq HAVING count(*) > 1"
    )
    assert [dict(d) for d in dupes] == []
    applied = [r["seq"] for r in await conn.fetch("SELECT seq FROM apply_audit ORDER BY seq")]
    assert applied == await event_seqs(dsn) and len(applied) >= n
    by_runner = {r["runner"] for r in await conn.fetch("SELECT DISTINCT runner FROM apply_audit")}
    assert by_runner == {"a", "b", "c"}
    assert a.skipped_duplicates == b.skipped_duplicates == c.skipped_duplicates == 0
    await conn.close()


async def _true(value: bool) -> bool:
    return value


# The task lifecycle in order. A task that is never sent back (no retry, no hand-back, no replay) only
# moves up; the reader checks that against the log, so a retried task (running -> retrying -> queued,
# a real step down) is judged by its log, not by this order alone.
RANK = {
    TaskStatus.SCHEDULED: 0,
    TaskStatus.PAUSED: 0,
    TaskStatus.QUEUED: 1,
    TaskStatus.RETRYING: 1,
    TaskStatus.RUNNING: 2,
    TaskStatus.CANCELLING: 3,
    TaskStatus.SUCCEEDED: 4,
    TaskStatus.FAILED: 4,
    TaskStatus.CANCELLED: 4,
}


@dataclass
class Seen:
    """What a reader saw of one task: (monotonic time, status, last_seq), one entry per change."""

    rows: list[tuple[float, str, int]] = field(default_factory=list)


@dataclass
class Reader:
    seen: dict[str, Seen]
    polls: int = 0


@contextlib.asynccontextmanager
async def poll_tasks(dsn: str, tenant: str, ids: list[str]) -> AsyncIterator[Reader]:
    """A reader polling the tasks read model (what GET /v1/tasks/{id} reads) until the block ends."""
    reader = Reader({task_id: Seen() for task_id in ids})
    stop = asyncio.Event()
    conn = await asyncpg.connect(dsn)

    async def read() -> None:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT id, status, last_seq FROM tasks WHERE tenant=$1 AND id = ANY($2::text[])", tenant, ids
            )
            now = time.monotonic()
            reader.polls += 1
            for r in rows:
                mine = reader.seen[r["id"]].rows
                if not mine or mine[-1][1:] != (r["status"], r["last_seq"]):
                    mine.append((now, r["status"], r["last_seq"]))
            await asyncio.sleep(0.005)

    task = asyncio.create_task(read())
    try:
        yield reader
    finally:
        stop.set()
        await task
        await conn.close()


def never_backwards(task_id: str, seen: Seen, history: list[StoredEvent]) -> list[str]:
    """Faults in what the reader saw: a sequence or a lifecycle step going back, or a status the task
    never had at that sequence."""
    faults: list[str] = []
    log_statuses = []
    for i in range(len(history)):
        log_statuses.append(fold(task_id, [h.event for h in history[: i + 1]]).status)
    log_monotone = all(RANK[a] <= RANK[b] for a, b in zip(log_statuses, log_statuses[1:], strict=False))
    for (_, s1, q1), (_, s2, q2) in zip(seen.rows, seen.rows[1:], strict=False):
        if q2 < q1:
            faults.append(f"{task_id}: last_seq went back {q1} -> {q2}")
        if log_monotone and RANK[TaskStatus(s2)] < RANK[TaskStatus(s1)]:
            faults.append(f"{task_id}: status went back {s1} -> {s2}")
    for _, status, seq in seen.rows:
        upto = [h.event for h in history if h.seq <= seq]
        if fold(task_id, upto).status != status:
            faults.append(f"{task_id}: read {status} at seq {seq}, the log says {fold(task_id, upto).status}")
    return faults


async def test_kill_9_of_the_active_projector_process_and_the_standby_takes_over(
    settings: Settings, nc: NATS, handler: CommandHandler, tmp_path: Path
) -> None:
    chaos = Chaos("projector-kill-9")
    batch = chaos.randint("projection_batch", 50, 10, 200)
    kill_after = chaos.randint("kill_after_events", 200, 30, 700)
    task_s = chaos.uniform("task_seconds", 0.2, 0.05, 0.6)
    env = {**os.environ, **settings.to_env(), "ORDO_PROJECTION_BATCH": str(batch), "PYTHONPATH": str(ROOT)}

    async def projector() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ordo.cli", "projector", env=env, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    worker = WorkerProc(settings, "default", "fo-worker", tmp_path, concurrency=32)
    active = await projector()
    standby = None
    try:
        await worker.ready(nc)
        await eventually(lambda: leader_present(pool), timeout=60, what="first projector active")
        holder = await pool.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype='advisory' AND objid=$1 AND granted", LEADER_LOCK
        )
        standby = await projector()
        await submit(handler, settings.tenant, 200)
        await eventually(lambda: _lag_zero(pool, nc), timeout=60, what="first projector caught up")
        load = submissions(settings.tenant, 1000, "demo.sleep", f'{{"seconds": {task_s}}}'.encode())
        watched = [c.task_id for c in load[::25]]  # 40 tasks spread over the load
        async with (
            watch_checkpoint(settings.database_url) as samples,
            poll_tasks(settings.database_url, settings.tenant, watched) as reader,
        ):
            writes = asyncio.create_task(submit(handler, settings.tenant, load))
            base = await checkpoint(pool)
            await eventually(lambda: _beyond(pool, base + kill_after), timeout=60, what="projector applying")
            t_kill = time.monotonic()
            active.send_signal(signal.SIGKILL)
            assert await active.wait() == -signal.SIGKILL
            killed_at_seq = await checkpoint(pool)  # the dead projector's last commit
            await eventually(
                lambda: _beyond(pool, killed_at_seq + 1), timeout=60, what="the standby applied past the kill"
            )
            takeover_s = time.monotonic() - t_kill
            await writes
            await eventually(
                lambda: _count(pool, settings.tenant, "succeeded", 1200), timeout=180, interval=0.2,
                what="every task succeeded in the read model",
            )  # fmt: skip
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

        # The reader: no status went backwards, and it really watched tasks change across the kill.
        seen = reader.seen
        faults: list[str] = []
        for task_id in watched:
            _, history, _ = await handler.load(settings.tenant, task_id)
            faults += never_backwards(task_id, seen[task_id], history)
        assert faults == [], faults[:20]
        changes = sum(len(s.rows) - 1 for s in seen.values())
        after_kill = sum(1 for s in seen.values() for t, _, _ in s.rows[1:] if t > t_kill)
        assert all(s.rows and s.rows[-1][1] == "succeeded" for s in seen.values())
        assert after_kill > 0, "the reader saw no change after the kill: it proved nothing"

        # The read model ends equal to a rebuild from the log (quiet system: stop the worker first).
        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.proc.wait, 30) == 0
        tables = all_tables()
        live = await table_hashes(settings.database_url, tables)
        report = await asyncio.wait_for(rebuild(nc, settings.database_url), 240)
        rebuilt = await table_hashes(settings.database_url, tables)
        differ = sorted(t for t in tables if live[t] != rebuilt[t])
        assert differ == [], f"the read model differs from a rebuild in {differ}"
        print(
            f"\nprojector failover: {chaos.describe()} killed at checkpoint {killed_at_seq}; the standby "
            f"applied again after {takeover_s:.2f}s; reader polls={reader.polls} watched={len(watched)} "
            f"changes seen={changes} (after the kill: {after_kill}) backwards=0; rebuild of "
            f"{report.events} events equal on {len(tables)} tables"
        )
    finally:
        worker.stop()
        for proc in (active, standby):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 30)
        await pool.close()


async def _count(pool: asyncpg.Pool, tenant: str, status: str, n: int) -> bool:
    return bool(
        await pool.fetchval("SELECT count(*) FROM tasks WHERE tenant=$1 AND status=$2", tenant, status) == n
    )


async def _lag_zero(pool: asyncpg.Pool, nc: NATS) -> bool:
    return all(v == 0 for v in (await lag(pool, nc)).values())


async def _beyond(pool: asyncpg.Pool, seq: int) -> bool:
    return await checkpoint(pool) >= seq


async def test_an_undecodable_event_is_recorded_and_skipped_and_the_projector_carries_on(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """DESIGN Revision 2 (it replaced "a poison event halts its projection"): see tests/test_poison.py."""
    await submit(handler, settings.tenant, 3)
    js = nc.jetstream()
    subject = sj.event_subject(settings.tenant, "default", "poison1", "submitted")
    poison = (await js.publish(subject, b"\x00 not an event", stream=sj.EVENTS_STREAM)).seq
    await submit(handler, settings.tenant, 3)  # good events after it are applied
    last = (await js.get_last_msg(sj.EVENTS_STREAM, sj.all_events_filter())).seq
    assert last is not None

    runner = ProjectionRunner(nc, settings.database_url, RunnerConfig(batch_size=100))
    running = asyncio.create_task(runner.run())
    conn = await asyncpg.connect(settings.database_url)
    try:
        await eventually(lambda: leader_present(conn), timeout=60, what="projector active")
        await eventually(lambda: _beyond(conn, last), timeout=60, what="checkpoint past the poison")
        assert await conn.fetchval("SELECT count(*) FROM tasks WHERE tenant=$1", settings.tenant) == 6
        skipped = await conn.fetch(
            "SELECT projection, aggregate_id FROM projection_errors WHERE seq=$1", poison
        )
        assert {r["projection"] for r in skipped} == {p.name for p in PROJECTIONS if p.family == "task"}
        assert {r["aggregate_id"] for r in skipped} == {"poison1"}
    finally:
        await runner.shutdown()
        await running
        await conn.close()
