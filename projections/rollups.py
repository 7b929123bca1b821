"""The `rollups` projection: the read models that count and summarise tasks, with one row per task.

Four read models fold a task's events into a few fields of their own and write only totals: the
queue depths (projections/queue_stats.py), the minute statistics (projections/stats_minutely.py),
the metric counters and histograms (projections/counters.py) and the dead letters
(projections/dead_letters.py). Each needs its task's fields from earlier batches; they are kept
together in one `rollup_tasks` row per task (a column group each, NULL where a read model keeps
nothing for the task), written once per batch, and in the runner's memory as one `Marks`. Four
separate per-task tables cost four index-maintained upserts per task and batch: about a third of
PostgreSQL's time under W1 (docs/benchmarks.md).

They are one projection: one checkpoint, rebuilt together (`ordo rebuild rollups`), and an event
one of them cannot apply is recorded once, under `rollups`, and skipped by all four.

A deployment that kept the four as projections of their own moves on its first start
(`_MIGRATION`): when their checkpoints agree (the runner moves them in one statement), their per-task
tables are joined into `rollup_tasks` and the checkpoint carried over; otherwise their totals are
emptied and replayed from the log.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ordo.infra.event_store import StoredEvent
from ordo.projections import counters, dead_letters, queue_stats, stats_minutely
from ordo.projections.batch_statement import Write, combined, last_param, presumed, run
from ordo.projections.memory import Memory, TaskKey, fetch_tasks, sort_tasks

NAME = "rollups"
RETIRED = ("dead_letters", "queue_stats", "stats_minutely", "counters")  # the four, before the merge

_PARTS = (queue_stats, stats_minutely, counters, dead_letters)
_COLUMNS = tuple(c for part in _PARTS for c in part.COLUMNS)
_TYPES = tuple(t for part in _PARTS for t in part.TYPES)
_SQL_TYPES = {"bool": "boolean"}


class Marks:
    """A task's kept fields, one part per read model (None where it keeps nothing for the task)."""

    __slots__ = ("queue", "stats", "counters", "dead")

    def __init__(
        self,
        queue: queue_stats.State | None,
        stats: stats_minutely.State | None,
        marks: counters.State | None,
        dead: dead_letters.State | None,
    ) -> None:
        self.queue, self.stats, self.counters, self.dead = queue, stats, marks, dead


async def apply(conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
    await run(conn, await plan(conn, events, None))


async def plan(conn: asyncpg.Connection, events: list[StoredEvent], memory: Memory | None) -> Write | None:
    """The batch's writes; with `memory`, the tasks' marks of earlier batches are taken from it (and
    this batch's left there) and new tasks are not looked up."""
    marks: dict[TaskKey, Marks]
    marks, new, unknown = sort_tasks(events, memory)
    if unknown:
        for rec in await fetch_tasks(conn, "SELECT * FROM rollup_tasks", unknown):
            marks[(rec["tenant"], rec["task_id"])] = Marks(
                queue_stats.from_row(rec),
                stats_minutely.from_row(rec),
                counters.from_row(rec),
                dead_letters.from_row(rec),
            )
    queues = {k: m.queue for k, m in marks.items() if m.queue is not None}
    stats = {k: m.stats for k, m in marks.items() if m.stats is not None}
    marked = {k: m.counters for k, m in marks.items() if m.counters is not None}
    dead = {k: m.dead for k, m in marks.items() if m.dead is not None}
    totals = [
        queue_stats.fold(events, queues),
        stats_minutely.fold(events, stats),
        counters.fold(events, marked),
        dead_letters.fold(events, dead),
    ]
    last = {(e.tenant, e.task_id): e.seq for e in events}
    keys = sorted(queues.keys() | stats.keys() | marked.keys() | dead.keys())
    rows = [
        (
            key[0],
            key[1],
            *queue_stats.to_row(queues.get(key)),
            *stats_minutely.to_row(stats.get(key)),
            *counters.to_row(marked.get(key)),
            *dead_letters.to_row(dead.get(key)),
            last[key],
            key in new,
        )
        for key in keys
    ]
    if memory is not None:
        for key in keys:
            memory.put(key, Marks(queues.get(key), stats.get(key), marked.get(key), dead.get(key)))
    if not rows:
        return None
    columns: list[Any] = [list(col) for col in zip(*rows, strict=True)]
    expected = sum(1 for key in keys if key in new)
    return combined([Write(_CTES, [*columns, expected], _CHECK), *(w for w in totals if w is not None)])


_COLS = ", ".join(("tenant", "task_id", *_COLUMNS, "last_seq"))
_PARAMS = ", ".join(f"${i}::{t}[]" for i, t in enumerate(("text", "text", *_TYPES, "bigint", "bool"), 1))
_UPDATE = ", ".join(f"{c}=EXCLUDED.{c}" for c in (*_COLUMNS, "last_seq"))
# The tasks' rows: of tasks first seen in the batch only if absent (the count says whether that held).
_CTES = f"""
rollups_rows AS (SELECT * FROM unnest({_PARAMS}) AS r({_COLS}, new)),
rollups_fresh AS (
    INSERT INTO rollup_tasks ({_COLS}) SELECT {_COLS} FROM rollups_rows WHERE new
    ON CONFLICT (tenant, task_id) DO NOTHING RETURNING 1
),
rollups_known AS (
    INSERT INTO rollup_tasks AS t ({_COLS}) SELECT {_COLS} FROM rollups_rows WHERE NOT new
    ON CONFLICT (tenant, task_id) DO UPDATE SET {_UPDATE}
    WHERE t.last_seq < EXCLUDED.last_seq
)
"""  # noqa: S608 - column names are constants
_CHECK = presumed("(SELECT count(*) FROM rollups_fresh)", last_param(_CTES) + 1, "rollup task")


# ---- moving a deployment from the four projections to this one ----------------------------------

_RETIRED_LIST = ", ".join(f"'{name}'" for name in RETIRED)
_CARRIED = """
INSERT INTO rollup_tasks (tenant, task_id,
    q_queue, q_status, q_paused_from, q_archived, q_attempt, q_lease_until, q_seq,
    s_queue, s_type, s_attempt_started_at, s_seq,
    c_queue, c_type, c_runnable_at, c_started_at,
    d_queue, d_type, d_attempts, d_error, d_seq, last_seq)
SELECT k.tenant, k.task_id,
    q.queue, q.status, q.paused_from, q.archived, q.attempt, q.lease_until, q.last_seq,
    s.queue, s.type, s.attempt_started_at, s.last_seq,
    m.queue, m.type, m.runnable_at, m.started_at,
    d.queue, d.type, d.attempts, d.error, d.last_seq,
    greatest(q.last_seq, s.last_seq, d.last_seq, 0)
FROM (SELECT tenant, task_id FROM queue_task_status UNION SELECT tenant, task_id FROM stats_tasks
      UNION SELECT tenant, task_id FROM metric_task_marks
      UNION SELECT tenant, task_id FROM dead_letter_tasks) k
LEFT JOIN queue_task_status q USING (tenant, task_id)
LEFT JOIN stats_tasks s USING (tenant, task_id)
LEFT JOIN metric_task_marks m USING (tenant, task_id)
LEFT JOIN dead_letter_tasks d USING (tenant, task_id)
ON CONFLICT (tenant, task_id) DO NOTHING
"""
# Runs in `migrate`'s transaction, after the checkpoints' DDL, in whichever schema the search_path
# names (a rebuild's shadow schema never holds the retired tables, so it does nothing there).
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
       AND cardinality(seqs) = 1 AND NOT EXISTS (SELECT 1 FROM rollup_tasks) THEN
        EXECUTE $carry${_CARRIED}$carry$;
        INSERT INTO projection_checkpoints (name, last_seq) VALUES ('{NAME}', seqs[1])
        ON CONFLICT (name) DO NOTHING;
        INSERT INTO projection_errors
            (projection, seq, family, subject, tenant, aggregate_id, event, error, at)
        SELECT DISTINCT ON (seq) '{NAME}', seq, family, subject, tenant, aggregate_id, event, error, at
        FROM projection_errors WHERE projection IN ({_RETIRED_LIST}) ORDER BY seq, projection
        ON CONFLICT DO NOTHING;
    ELSE
        TRUNCATE queue_depth, stats_minutely, stats_durations, metric_counters, metric_histograms,
                 dead_letters, rollup_tasks;
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
    + f"""
CREATE TABLE IF NOT EXISTS rollup_tasks (
    tenant text NOT NULL,
    task_id text NOT NULL,
    {", ".join(f"{c} {_SQL_TYPES.get(t, t)}" for c, t in zip(_COLUMNS, _TYPES, strict=True))},
    last_seq bigint NOT NULL,
    PRIMARY KEY (tenant, task_id)
);
"""
    + _MIGRATION
)
