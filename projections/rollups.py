"""The `rollups` projection: the read models that count and summarise tasks, from marks kept per task.

Four read models fold a task's events into a few fields of their own and write only totals: the
queue depths (projections/queue_stats.py), the minute statistics (projections/stats_minutely.py),
the metric counters and histograms (projections/counters.py) and the dead letters
(projections/dead_letters.py). Each needs its task's fields from earlier batches (a `Marks`, one
part per read model). They are one projection: one checkpoint, rebuilt together (`ordo rebuild
rollups`), and an event one of them cannot apply is recorded once, under `rollups`, and skipped by
all four.

A task's marks are a fold of its events, so they are not stored (decision 46): the elected runner
keeps them in memory, and a task it does not remember (after a restart, an election, a task evicted
from the memory) has its marks folded again from its history in `task_events`, the events before
its first one in the batch, less those `rollups` skipped as ones it cannot apply. Writing a row of
marks for every task at every batch (`rollup_tasks`, decision 38) cost PostgreSQL about a seventh of
its time under W1. `rollups` therefore reads `task_events` (`Projection.needs`): the runner applies
both in one statement per batch, a rebuild of `rollups` rebuilds `task_events` with it, and a rebuild
swaps its tables in only once they are at the live checkpoint, so the history below a checkpoint of
`rollups` is always there. A task first seen in a batch by its `submitted` is presumed to have no
history; the batch's statement checks it in `task_events` (`memory.NotNew` otherwise).

A deployment that kept the four as projections of their own moves on its first start
(`_MIGRATION`): when their checkpoints agree, the checkpoint is carried over; otherwise their totals
are emptied and replayed from the log. `rollup_tasks` is dropped.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from ordo.domain.events import decode_event
from ordo.domain.status import TaskStatus
from ordo.infra.event_store import StoredEvent
from ordo.projections import counters, dead_letters, queue_stats, stats_minutely
from ordo.projections.batch_statement import Write, combined, presumed, run
from ordo.projections.memory import Memory, TaskKey, first_events, sort_tasks

NAME = "rollups"
NEEDS = ("task_events",)  # a task's history, for the marks of a task not remembered
RETIRED = ("dead_letters", "queue_stats", "stats_minutely", "counters")  # the four, before the merge
# A task in one of these has an attempt running: its history grows by a heartbeat every few seconds,
# so its marks are pinned in the memory rather than folded again from that history (decision 46).
_IN_ATTEMPT = (TaskStatus.RUNNING, TaskStatus.CANCELLING)


class Marks(msgspec.Struct, gc=False):
    """A task's kept fields, one part per read model (None where it keeps nothing for the task).
    Like each part, not tracked by the garbage collector (see projections/tasks.py `_Row`)."""

    queue: queue_stats.State | None
    stats: stats_minutely.State | None
    counters: counters.State | None
    dead: dead_letters.State | None


async def apply(conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
    await run(conn, await plan(conn, events, None))


async def plan(conn: asyncpg.Connection, events: list[StoredEvent], memory: Memory | None) -> Write | None:
    """The batch's writes; with `memory`, the tasks' marks of earlier batches are taken from it (and
    this batch's left there) and tasks first seen by their `submitted` are not looked up."""
    marks: dict[TaskKey, Marks]
    marks, new, unknown = sort_tasks(events, memory)
    queues = {k: m.queue for k, m in marks.items() if m.queue is not None}
    stats = {k: m.stats for k, m in marks.items() if m.stats is not None}
    marked = {k: m.counters for k, m in marks.items() if m.counters is not None}
    dead = {k: m.dead for k, m in marks.items() if m.dead is not None}
    if unknown:  # their marks as their history left them (the totals' writes are not wanted)
        history = await _history(conn, unknown, events)
        queue_stats.fold(history, queues)
        stats_minutely.fold(history, stats)
        counters.fold(history, marked)
        dead_letters.fold(history, dead)
    totals = [
        queue_stats.fold(events, queues),
        stats_minutely.fold(events, stats),
        counters.fold(events, marked),
        dead_letters.fold(events, dead),
    ]
    if memory is not None:
        for key in queues.keys() | stats.keys() | marked.keys() | dead.keys():
            queue = queues.get(key)
            running = queue is not None and queue[1].status in _IN_ATTEMPT  # heartbeats to come
            memory.put(key, Marks(queue, stats.get(key), marked.get(key), dead.get(key)), pin=running)
    writes = [w for w in totals if w is not None]
    if new:
        firsts = _firsts(events, new)
        args: list[Any] = [[k[0] for k in firsts], [k[1] for k in firsts], list(firsts.values()), len(firsts)]
        writes.insert(0, Write(_UNSEEN, args, _CHECK))
    return combined(writes) if writes else None


def _firsts(events: list[StoredEvent], keys: set[TaskKey]) -> dict[TaskKey, int]:
    """The sequence of each of `keys`' first event in the batch."""
    return {k: e.seq for k, e in first_events(events, lambda e: (e.tenant, e.task_id)).items() if k in keys}


async def _history(conn: Any, keys: list[TaskKey], events: list[StoredEvent]) -> list[StoredEvent]:
    """The events of the tasks `keys` that `rollups` applied before this batch, in sequence order:
    those `task_events` holds before each task's first event in the batch, less the ones `rollups`
    recorded as events it cannot apply. `conn` has `fetch` (a plan's reads in a pipeline)."""
    firsts = _firsts(events, set(keys))
    rows = await conn.fetch(
        _HISTORY, [k[0] for k in firsts], [k[1] for k in firsts], list(firsts.values()), NAME
    )
    return [
        StoredEvent(
            seq=r["seq"],
            subject="",
            tenant=r["tenant"],
            queue=r["queue"],
            task_id=r["task_id"],
            name=r["type"],
            event=decode_event(r["data"].encode()),
            stored_at=r["at"],
        )
        for r in rows
    ]


_HISTORY = """
SELECT e.seq, e.tenant, e.task_id, e.queue, e.type, e.at, e.data::text AS data
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(tenant, task_id, first_seq)
JOIN task_events e ON e.tenant = k.tenant AND e.task_id = k.task_id AND e.seq < k.first_seq
WHERE NOT EXISTS (SELECT 1 FROM projection_errors p WHERE p.projection = $4 AND p.seq = e.seq)
ORDER BY e.seq
"""
# Tasks presumed new (first seen by their `submitted`, not remembered): none may have an event before
# it in `task_events` (of an earlier batch: the statement does not see its own rows). One index probe
# per task, by a scalar subquery that PostgreSQL cannot turn into a join: as `NOT EXISTS` it planned a
# hash anti-join reading all of `task_events` whenever the table looked small next to the batch (it
# takes the batch for 100 rows), 5-9 ms a batch in W1, where the probes take 0.4-2.5 ms.
_UNSEEN = """
rollups_unseen AS (
    SELECT count(*) AS n FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(tenant, task_id, first_seq)
    WHERE (
        SELECT e.seq FROM task_events e
        WHERE e.tenant = k.tenant AND e.task_id = k.task_id AND e.seq < k.first_seq
        LIMIT 1
    ) IS NULL
)
"""
_CHECK = presumed("(SELECT n FROM rollups_unseen)", 4, "rollup task")


# ---- moving a deployment from the four projections to this one ----------------------------------

_RETIRED_LIST = ", ".join(f"'{name}'" for name in RETIRED)
# Runs in `migrate`'s transaction, after the checkpoints' DDL, in whichever schema the search_path
# names (a rebuild's shadow schema never holds the retired tables, so it does nothing there). The
# four's per-task tables are not carried: the marks are folded from `task_events` when needed.
_MIGRATION = f"""
DO $$
DECLARE
    seqs bigint[];
BEGIN
    IF to_regclass('queue_task_status') IS NULL OR to_regclass('stats_tasks') IS NULL
       OR to_regclass('metric_task_marks') IS NULL OR to_regclass('dead_letter_tasks') IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(DISTINCT last_seq) INTO seqs FROM projection_checkpoints
    WHERE name IN ({_RETIRED_LIST});
    IF seqs IS NULL THEN
        -- No checkpoint of the four: nothing was projected into these tables (an older process
        -- created them after the move, or before any projector ran). Nothing to carry or replay.
        DROP TABLE queue_task_status, stats_tasks, metric_task_marks, dead_letter_tasks;
        RETURN;
    END IF;
    IF (SELECT count(*) FROM projection_checkpoints WHERE name IN ({_RETIRED_LIST})) = {len(RETIRED)}
       AND cardinality(seqs) = 1
       AND NOT EXISTS (SELECT 1 FROM projection_checkpoints WHERE name = '{NAME}') THEN
        INSERT INTO projection_checkpoints (name, last_seq) VALUES ('{NAME}', seqs[1])
        ON CONFLICT (name) DO NOTHING;
        INSERT INTO projection_errors
            (projection, seq, family, subject, tenant, aggregate_id, event, error, at)
        SELECT DISTINCT ON (seq) '{NAME}', seq, family, subject, tenant, aggregate_id, event, error, at
        FROM projection_errors WHERE projection IN ({_RETIRED_LIST}) ORDER BY seq, projection
        ON CONFLICT DO NOTHING;
    ELSE
        TRUNCATE queue_depth, stats_minutely, stats_durations, metric_counters, metric_histograms,
                 dead_letters;
        DELETE FROM projection_checkpoints WHERE name = '{NAME}';
    END IF;
    DELETE FROM projection_errors WHERE projection IN ({_RETIRED_LIST});
    DELETE FROM projection_checkpoints WHERE name IN ({_RETIRED_LIST});
    DROP TABLE queue_task_status, stats_tasks, metric_task_marks, dead_letter_tasks;
END $$;
"""

DDL = (
    queue_stats.DDL
    + stats_minutely.DDL
    + counters.DDL
    + dead_letters.DDL
    + _MIGRATION
    # The marks' table of decision 38: folded from `task_events` instead (decision 46).
    + "DROP TABLE IF EXISTS rollup_tasks;\n"
)
