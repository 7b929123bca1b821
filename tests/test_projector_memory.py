"""The projector's per-task memory (projections/memory.py) never makes a table differ from a rebuild.

The runner keeps the states its projections fold in process between batches and does not look up a
task first seen in a batch. These tests break each assumption that makes that safe: a transaction
that fails after the memory was updated, a `submitted` for a task that already has rows (a forged
second submit, not remembered by a freshly elected runner), a checkpoint moved under the runner.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from ordo.domain import events as ev
from ordo.domain.commands import CancelTask, ExtendLease, StartAttempt
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.pg import connect
from ordo.infra.settings import Settings
from ordo.projections import poison, rollups
from ordo.projections.batch_apply import apply_batch_committed
from ordo.projections.memory import Memories, Memory
from ordo.projections.reader import LogReader, Record
from ordo.projections.rebuild import Rebuilder
from ordo.projections.registry import FAMILIES, PROJECTIONS, Projection
from ordo.projections.runner import (
    ProjectionRunner,
    RunnerConfig,
    apply_batch,
    checkpoint,
    ensure_checkpoints,
)
from ordo.projections.schema import migrate
from tests.helpers import eventually
from tests.test_projections_failover import submissions
from tests.test_rebuild import all_tables, table_hashes


def test_memory_keeps_only_what_was_committed() -> None:
    memory = Memory(capacity=2)
    memory.align((10, 0))
    memory.put("a", {"n": 1})
    assert memory.get("a") == {"n": 1} and len(memory) == 0  # staged, not committed
    memory.rollback()
    assert memory.get("a") is None
    row = {"n": 1}
    memory.put("a", row)
    memory.moved((20, 0))
    memory.commit()
    assert memory.get("a") is row  # handed out as it is: the batch may change it
    memory.rollback()
    assert memory.get("a") is None  # a failed batch may have changed it: read from the table again
    memory.put("a", row)
    memory.commit()
    memory.forget("a")
    memory.rollback()  # a forget undone; nothing was handed out: still there
    assert memory.get("a") is row
    memory.commit()  # a batch that was handed a state and committed keeps it as the batch left it
    assert memory.get("a") is row and len(memory) == 1
    memory.commit()
    memory.put("b", 2)
    memory.put("c", 3)
    memory.commit()
    assert memory.get("a") is None and memory.get("c") == 3  # least recently used evicted
    memory.commit()
    memory.forget("c")
    assert memory.get("c") is None
    memory.rollback()
    assert memory.get("c") == 3
    memory.forget("c")
    memory.commit()
    assert memory.get("c") is None and len(memory) == 1

    memory.align((20, 0))  # where its last commit left the checkpoint: kept
    assert memory.get("b") == 2
    memory.align((20, 1))  # a rebuild swapped the tables in (epoch moved): forgotten
    assert memory.get("b") is None
    memory.put("d", 4)
    memory.align((20, 1))
    assert memory.get("d") == 4
    memory.align((25, 1))  # someone else moved the checkpoint
    assert memory.get("d") is None

    with pytest.raises(ValueError):
        Memory(capacity=0)
    with pytest.raises(ValueError):
        RunnerConfig(batch_size=100, max_batch_size=50)
    assert RunnerConfig(batch_size=100).catch_up_batch_size == 500
    assert RunnerConfig(batch_size=100).catch_up_events == 1000  # ten batches per catch-up transaction
    with pytest.raises(ValueError):
        RunnerConfig(feed_want_ttl_s=0)


async def _records(nc: NATS, last: int) -> list[Record]:
    reader = LogReader(nc, FAMILIES, 1)
    await reader.start()
    try:
        batch: list[Record] = []
        while not batch or batch[-1][1].seq < last:
            batch += await reader.batch(1000, upto=last, linger_s=0.5)
        return batch
    finally:
        await reader.close()


async def _rebuilt_equal(nc: NATS, dsn: str) -> None:
    """Every projection's tables equal a rebuild from the log (a rebuild starts with empty memory)."""
    tables = all_tables()
    live = await table_hashes(dsn, tables)
    await Rebuilder(nc, dsn).run()
    rebuilt = await table_hashes(dsn, tables)
    assert sorted(t for t in tables if live[t] != rebuilt[t]) == []


async def test_a_failed_batch_leaves_nothing_in_memory(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    commands = submissions(settings.tenant, 20)
    await handler.submit_many(settings.tenant, commands)
    last = 0
    for command in commands[::2]:
        last = (await handler.execute(settings.tenant, CancelTask(task_id=command.task_id))).last_seq
    records = await _records(nc, last)
    cancels = next(i for i, (_, r) in enumerate(records) if isinstance(r.event, ev.Cancelled))
    first, second = records[:cancels], records[cancels:]

    async def boom(conn: asyncpg.Connection, records: list[Any]) -> None:
        raise RuntimeError("the process fails after the projections folded the batch")

    conn = await connect(settings.database_url)
    memories = Memories()
    try:
        await migrate(conn)
        await ensure_checkpoints(conn, PROJECTIONS)
        async with conn.transaction():
            await apply_batch(conn, PROJECTIONS, first, memories)
        memories.commit()
        assert len(memories.of("tasks")) == 20
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await apply_batch(conn, (*PROJECTIONS, Projection("boom", "", boom)), second, memories)
        memories.rollback()
        async with conn.transaction():
            await apply_batch(conn, PROJECTIONS, second, memories)
        memories.commit()
        statuses = await conn.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status ORDER BY status")
        assert [(r["status"], r["n"]) for r in statuses] == [("cancelled", 10), ("queued", 10)]
    finally:
        await conn.close()
    await _rebuilt_equal(nc, settings.database_url)


async def test_a_second_submitted_for_a_known_task_is_read_not_presumed_new(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    (command,) = submissions(settings.tenant, 1)
    (out,) = await handler.submit_many(settings.tenant, [command])
    task_id = command.task_id
    dsn = settings.database_url
    conn = await connect(dsn)
    await migrate(conn)
    await conn.close()

    async def project_up_to(seq: int) -> None:
        """A freshly elected runner (empty memory) until its checkpoint reaches `seq`."""
        runner = ProjectionRunner(nc, dsn, RunnerConfig(batch_size=100))
        running = asyncio.create_task(runner.run())
        conn = await asyncpg.connect(dsn)
        try:
            await eventually(lambda: _at(conn, seq), timeout=30, what=f"checkpoint at {seq}")
        finally:
            await conn.close()
            await runner.shutdown()
            await running

    await project_up_to(out.last_seq)
    # Forged, as a credential allowed to publish task subjects could (no decider involved).
    forged = ev.Submitted("forged.type", "default", settings.tenant)
    subject = sj.event_subject(settings.tenant, "default", task_id, ev.event_name(forged))
    await nc.jetstream().publish(subject, ev.encode_event(forged), stream=sj.EVENTS_STREAM)
    cancelled = await handler.execute(settings.tenant, CancelTask(task_id=task_id))
    await project_up_to(cancelled.last_seq)

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT type, status FROM tasks WHERE id=$1", task_id)
        assert (row["type"], row["status"]) == ("demo.echo", "cancelled")
        depths = await conn.fetch("SELECT queue, status, n FROM queue_depth")
        assert [tuple(r) for r in depths] == [("default", "cancelled", 1)]
        assert await conn.fetchval("SELECT count(*) FROM projection_errors") == 0
    finally:
        await conn.close()
    await _rebuilt_equal(nc, dsn)


async def _at(conn: asyncpg.Connection, seq: int) -> bool:
    return await checkpoint(conn) >= seq


async def test_a_batch_is_one_statement_when_its_tasks_are_new_or_remembered(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """The first batch locks the checkpoints (BEGIN, the lock, the statement, COMMIT); once the runner
    knows where it left them, a batch is one statement for every write and the checkpoints."""
    commands = submissions(settings.tenant, 30)
    await handler.submit_many(settings.tenant, commands)
    last = 0
    for command in commands[::3]:
        last = (await handler.execute(settings.tenant, CancelTask(task_id=command.task_id))).last_seq
    records = await _records(nc, last)
    cancels = next(i for i, (_, r) in enumerate(records) if isinstance(r.event, ev.Cancelled))
    conn = await connect(settings.database_url)
    try:
        await migrate(conn)
        await ensure_checkpoints(conn, PROJECTIONS)
        memories = Memories()
        sent: list[str] = []
        conn.add_query_logger(lambda q: sent.append(q.query))
        counts = []
        # The first batch also makes asyncpg look up the column types once; then new tasks, then
        # remembered ones.
        for batch in (records[:5], records[5:cancels], records[cancels:]):
            sent.clear()
            await apply_batch_committed(conn, PROJECTIONS, batch, memories, "ordo_events")
            counts.append(len(sent))
        assert counts[1:] == [1, 1], [q[:60] for q in sent]
        assert "FOR UPDATE" not in sent[0] and "ordo_checkpoints_held" in sent[0]
        cancelled = await conn.fetchval("SELECT count(*) FROM tasks WHERE status='cancelled'")
        assert cancelled == 10 and await checkpoint(conn, "rollups") == last
    finally:
        await conn.close()


async def test_a_batch_without_a_transaction_writes_nothing_when_a_check_fails(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """The one-statement batch checks its presumptions and the checkpoints it moves inside the
    statement: a forged `submitted` for a task the memory no longer holds, and a checkpoint another
    writer moved (a rebuild's swap moves the epoch), each abort the statement whole; the batch is then
    applied the long way, once, and the tables equal a rebuild."""
    commands = submissions(settings.tenant, 6)
    await handler.submit_many(settings.tenant, commands)
    forged = ev.Submitted("forged.type", "default", settings.tenant)
    subject = sj.event_subject(settings.tenant, "default", commands[0].task_id, ev.event_name(forged))
    await nc.jetstream().publish(subject, ev.encode_event(forged), stream=sj.EVENTS_STREAM)
    last = (await handler.execute(settings.tenant, CancelTask(task_id=commands[1].task_id))).last_seq
    records = await _records(nc, last)
    first, forged_batch, cancel = records[:6], records[6:7], records[7:]
    assert isinstance(forged_batch[0][1].event, ev.Submitted) and isinstance(cancel[0][1].event, ev.Cancelled)

    conn = await connect(settings.database_url)
    try:
        await migrate(conn)
        await ensure_checkpoints(conn, PROJECTIONS)
        memories = Memories()
        sent: list[str] = []
        conn.add_query_logger(lambda q: sent.append(q.query))
        await apply_batch_committed(conn, PROJECTIONS, first, memories, "ordo_events")
        assert memories.checkpoints is not None
        for projection in PROJECTIONS:  # the tasks leave the memory, the checkpoints' places stay
            memories.of(projection.name).clear()

        sent.clear()
        await apply_batch_committed(conn, PROJECTIONS, forged_batch, memories, "ordo_events")
        # Tried unlocked, then applied again reading every task, with the checkpoints locked.
        assert any("ordo_checkpoints_held" in q for q in sent) and any("FOR UPDATE" in q for q in sent)

        await conn.execute("UPDATE projection_checkpoints SET epoch = epoch + 1")  # as a swap does
        sent.clear()
        await apply_batch_committed(conn, PROJECTIONS, cancel, memories, "ordo_events")
        assert sum("ordo_checkpoints_held" in q for q in sent) == 1 and any("FOR UPDATE" in q for q in sent)

        row = await conn.fetchrow("SELECT type, status FROM tasks WHERE id=$1", commands[0].task_id)
        assert (row["type"], row["status"]) == ("demo.echo", "queued")
        depth = {r["status"]: r["n"] for r in await conn.fetch("SELECT status, n FROM queue_depth")}
        assert depth == {"queued": 5, "cancelled": 1}  # each counted once
        assert await conn.fetchval("SELECT sum(cancelled) FROM stats_minutely") == 1
        assert await conn.fetchval("SELECT min(last_seq) FROM projection_checkpoints") == last
    finally:
        await conn.close()
    await _rebuilt_equal(nc, settings.database_url)


async def test_a_batch_without_a_transaction_gives_way_to_a_swap_holding_the_checkpoints(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """A rebuild's swap locks the checkpoints, then the tables; the one-statement batch takes the
    tables, then waits on the checkpoints. The batch gives way within its short wait for the rows (no
    deadlock, so no second-long stall for either), waits for the swap the long way (checkpoints
    locked) and is applied once after it."""
    commands = submissions(settings.tenant, 4)
    await handler.submit_many(settings.tenant, commands)
    last = (await handler.execute(settings.tenant, CancelTask(task_id=commands[0].task_id))).last_seq
    records = await _records(nc, last)
    first, cancel = records[:4], records[4:]
    conn = await connect(settings.database_url)
    swap = await connect(settings.database_url)
    try:
        await migrate(conn)
        await ensure_checkpoints(conn, PROJECTIONS)
        memories = Memories()
        await apply_batch_committed(conn, PROJECTIONS, first, memories, "ordo_events")
        assert memories.checkpoints is not None
        deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        deadlocks_before = await conn.fetchval(deadlocks)

        async with swap.transaction():  # as `Rebuilder._swap` does: the rows first, then the tables
            await swap.execute("SELECT name FROM projection_checkpoints FOR UPDATE")
            batch = asyncio.create_task(
                apply_batch_committed(conn, PROJECTIONS, cancel, memories, "ordo_events")
            )

            async def waiting_on_rows() -> bool:
                return bool(
                    await swap.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )

            await eventually(waiting_on_rows, timeout=10, what="the batch waiting on the checkpoints")
            await swap.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            await swap.execute("UPDATE projection_checkpoints SET epoch = epoch + 1")
            assert not batch.done()
        await asyncio.wait_for(batch, 30)

        row = await conn.fetchrow("SELECT status FROM tasks WHERE id=$1", commands[0].task_id)
        assert row["status"] == "cancelled"
        assert await conn.fetchval("SELECT min(last_seq) FROM projection_checkpoints") == last
        depth = {r["status"]: r["n"] for r in await conn.fetch("SELECT status, n FROM queue_depth")}
        assert depth == {"queued": 3, "cancelled": 1}
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        assert await conn.fetchval(deadlocks) == deadlocks_before, "the batch and the swap deadlocked"
    finally:
        await swap.close()
        await conn.close()
    await _rebuilt_equal(nc, settings.database_url)


async def test_a_task_not_remembered_has_its_marks_folded_from_its_history_less_skipped_events(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """`rollups` keeps no per-task row (decision 46): a task it does not remember is folded again from
    `task_events`, up to its first event in the batch and without the events `rollups` skipped."""
    first, second = submissions(settings.tenant, 2)
    await handler.submit_many(settings.tenant, [first, second])
    cancelled = await handler.execute(settings.tenant, CancelTask(task_id=first.task_id))
    records = await _records(nc, cancelled.last_seq)
    conn = await connect(settings.database_url)
    try:
        await migrate(conn)
        await ensure_checkpoints(conn, PROJECTIONS)
        await apply_batch_committed(conn, PROJECTIONS, records, Memories())
        await poison.record(conn, rollups.NAME, "task", records[-1][1], "an event rollups cannot apply")
        later = [
            msgspec.structs.replace(r, seq=cancelled.last_seq + 1 + i) for i, (_, r) in enumerate(records)
        ]
        history = await rollups._history(
            conn, [(settings.tenant, first.task_id), (settings.tenant, second.task_id)], later
        )
        assert [(e.task_id, e.name) for e in history] == [
            (first.task_id, "submitted"),
            (second.task_id, "submitted"),
        ]
        # Up to the task's first event in the batch: the cancel itself is not history of the batch
        # that holds it.
        cancel = [r for _, r in records if r.name == "cancelled"]
        history = await rollups._history(conn, [(settings.tenant, first.task_id)], cancel)
        assert [e.name for e in history] == ["submitted"]
    finally:
        await conn.close()


async def test_rollups_without_the_tasks_projection_checks_a_task_presumed_new_in_task_events(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """A rebuild of `rollups` runs with `task_events` alone (no `tasks` projection to catch a forged
    second `submitted`): its own check, in the batch's statement, finds the task's history."""
    (command,) = submissions(settings.tenant, 1)
    (out,) = await handler.submit_many(settings.tenant, [command])
    forged = ev.Submitted("forged.type", "default", settings.tenant)
    subject = sj.event_subject(settings.tenant, "default", command.task_id, ev.event_name(forged))
    await nc.jetstream().publish(subject, ev.encode_event(forged), stream=sj.EVENTS_STREAM)
    cancelled = await handler.execute(settings.tenant, CancelTask(task_id=command.task_id))
    records = await _records(nc, cancelled.last_seq)
    pair = tuple(p for p in PROJECTIONS if p.name in ("task_events", rollups.NAME))
    conn = await connect(settings.database_url)
    try:
        await migrate(conn)
        await ensure_checkpoints(conn, pair)
        first = [r for r in records if r[1].seq <= out.last_seq]
        await apply_batch_committed(conn, pair, first, Memories())
        # A freshly elected runner: the forged `submitted` is the task's first event in its batch.
        await apply_batch_committed(conn, pair, records[len(first) :], Memories())
        depths = await conn.fetch("SELECT queue, status, n FROM queue_depth")
        assert [tuple(r) for r in depths] == [("default", "cancelled", 1)]
    finally:
        await conn.close()


def test_a_pinned_state_is_kept_out_of_the_least_recently_used_eviction() -> None:
    memory = Memory(capacity=2)
    memory.put("run", 1, pin=True)
    for key in ("a", "b", "c"):
        memory.put(key, key)
    memory.commit()
    assert memory.get("run") == 1 and memory.get("a") is None and len(memory) == 3  # b, c and the pin
    memory.commit()
    memory.put("run", 2)  # no longer pinned: back in the LRU order, and the oldest there goes
    memory.commit()
    assert memory.get("run") == 2 and memory.get("b") is None
    for key in ("p1", "p2", "p3"):
        memory.put(key, key, pin=True)
    memory.commit()
    assert memory.get("p1") is None and memory.get("p3") == "p3"  # at most `capacity` pins
    memory.rollback()  # p3 was handed out: forgotten, pinned or not
    assert memory.get("p3") is None and memory.get("p2") == "p2"
    memory.commit()
    memory.forget("p2")
    memory.commit()
    assert memory.get("p2") is None
    memory.put("p4", 4, pin=True)
    memory.clear()
    assert len(memory) == 0


async def test_a_running_task_is_remembered_however_many_tasks_pass_between_its_heartbeats(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """Its marks are pinned: its heartbeats do not make `rollups` fold its history again."""
    tenant = settings.tenant
    (command,) = submissions(tenant, 1)
    await handler.submit_many(tenant, [command])
    now = datetime.now(UTC)
    lease = now + timedelta(seconds=30)
    start = StartAttempt(task_id=command.task_id, dispatch=1, worker_id="w", now=now, lease_until=lease)
    await handler.execute(tenant, start)
    started = await _records(nc, (await handler.load(tenant, command.task_id))[2])
    others = submissions(tenant, 10)
    await handler.submit_many(tenant, others)
    extend = ExtendLease(task_id=command.task_id, attempt=1, worker_id="w", lease_until=lease)
    last = (await handler.execute(tenant, extend)).last_seq
    records = await _records(nc, last)
    conn = await connect(settings.database_url)
    try:
        await migrate(conn)
        await ensure_checkpoints(conn, PROJECTIONS)
        memories = Memories(capacity=2)  # the ten other tasks push the running one out of the LRU order
        sent: list[str] = []
        conn.add_query_logger(lambda q: sent.append(q.query))
        n = len(started)
        for batch in (records[:n], records[n:-1], records[-1:]):
            sent.clear()
            await apply_batch_committed(conn, PROJECTIONS, batch, memories, "ordo_events")
        assert not [q for q in sent if "JOIN task_events" in q], "the running task's history was read"
        running = await conn.fetchval("SELECT n FROM queue_depth WHERE status = 'running'")
        assert running == 1
    finally:
        await conn.close()


async def test_the_presumed_new_check_probes_task_events_by_index_whatever_its_statistics(
    database_url: str,
) -> None:
    """The check that tasks first seen by their `submitted` have no earlier event looks each one up in
    `task_events_task`. Written as a join, PostgreSQL (which takes a batch's rows for 100) read the
    whole of `task_events` for it in every batch while the table was small, and a table growing
    faster than its statistics stays small to the planner (W1: 5-9 ms a batch at 20,000 rows)."""
    from ordo.projections.batch_statement import Write, _as_json, statement

    conn = await connect(database_url)
    try:
        await migrate(conn)
        fill = (
            "INSERT INTO task_events (seq, tenant, task_id, queue, type, at, data)"
            " SELECT g, 't', 'task-' || g, 'default', 'submitted', now(), '{}'"
            " FROM generate_series($1::bigint, $2::bigint) g"
        )
        await conn.execute(fill, 1, 5000)
        await conn.execute("ANALYZE task_events")
        await conn.execute(fill, 5001, 20_000)  # the table grew faster than its statistics
        keys = [("t", f"new-{i}", 60_000 + i) for i in range(1000)]
        args = [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], len(keys)]
        sql, params = _as_json(*statement([Write(rollups._UNSEEN, args, rollups._CHECK)]))
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *params))
        assert "task_events_task" in plan and "Seq Scan on task_events" not in plan, plan
        assert await conn.fetchval(sql, *params) is not None  # and it passes: none of them has history
    finally:
        await conn.close()


async def test_a_rebuild_keeps_the_index_the_presumed_new_check_probes(nc: NATS, database_url: str) -> None:
    """A rebuild drops the shadow's secondary indexes while it replays, but not `task_events_task`:
    without it the check above reads the whole of `task_events` once per task, and a rebuild of
    W1's 102,000 events ran at 587 events/s instead of 26,000."""
    from ordo.projections.batch_statement import Write, _as_json, statement
    from ordo.projections.rebuild import SHADOW_SCHEMA

    conn = await connect(database_url)
    try:
        await migrate(conn)
        rebuilder = Rebuilder(nc, database_url)
        await rebuilder._prepare_shadow(conn)  # the session's search_path is the shadow's now
        deferred = {name for name, _ in await rebuilder._defer_indexes(conn)}
        assert "tasks_status_newest" in deferred and "task_events_task" not in deferred, deferred
        fill = (
            "INSERT INTO task_events (seq, tenant, task_id, queue, type, at, data)"
            " SELECT g, 't', 'task-' || g, 'default', 'submitted', now(), '{}'"
            " FROM generate_series(1, 20000) g"
        )
        await conn.execute(fill)
        await conn.execute("ANALYZE task_events")
        keys = [("t", f"new-{i}", 60_000 + i) for i in range(1000)]
        args = [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], len(keys)]
        sql, params = _as_json(*statement([Write(rollups._UNSEEN, args, rollups._CHECK)]))
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *params))
        assert "task_events_task" in plan and "Seq Scan on task_events" not in plan, plan
        await conn.execute(f"DROP SCHEMA {SHADOW_SCHEMA} CASCADE")
    finally:
        await conn.close()


def test_the_states_the_projector_remembers_are_not_walked_by_the_garbage_collector() -> None:
    """Tens of thousands of these stay in the memory between batches; they hold no reference cycles,
    so the collector need not walk them on every young collection (6-8 % of the projector's CPU)."""
    import gc

    from ordo.domain.state import initial
    from ordo.projections import counters, dead_letters, stats_minutely, tasks

    row = tasks._Row(initial("t"))
    marks = rollups.Marks(
        ("default", initial("t"), 1),
        stats_minutely.State("default", "demo.echo", None, 1),
        counters.State("default", "demo.echo", None, None),
        dead_letters.State("default", "demo.echo"),
    )
    kept = (row, marks, marks.stats, marks.counters, marks.dead)
    assert not any(gc.is_tracked(state) for state in kept)
