"""The `counters` read model: monotonic task counters and duration histograms for /metrics.

Kept in PostgreSQL (not in process memory) so every gateway exposes the same numbers, they survive
restarts, and a rebuild from sequence 1 yields them again. Durations come from stored_at, never the
wall clock.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import asyncpg

from ordo.domain import events as ev
from ordo.infra.event_store import StoredEvent
from ordo.infra.metrics import DEFAULT_BUCKETS
from ordo.projections.batch_statement import Write, run
from ordo.projections.memory import Memory, copy_slots, first_events

NAME = "counters"
DDL = """
CREATE TABLE IF NOT EXISTS metric_counters (
    tenant text NOT NULL, queue text NOT NULL, type text NOT NULL, metric text NOT NULL,
    value double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, queue, type, metric)
);
CREATE TABLE IF NOT EXISTS metric_histograms (
    tenant text NOT NULL, queue text NOT NULL, type text NOT NULL, metric text NOT NULL,
    bucket int NOT NULL, count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, queue, type, metric, bucket)
);
CREATE TABLE IF NOT EXISTS metric_task_marks (
    tenant text NOT NULL, task_id text NOT NULL, queue text NOT NULL, type text NOT NULL,
    runnable_at timestamptz, started_at timestamptz,
    PRIMARY KEY (tenant, task_id)
);
"""

# Counter names by event; each is exposed as ordo_tasks_<name>_total.
COUNTED: dict[type[ev.Event], str] = {
    ev.Submitted: "submitted",
    ev.AttemptStarted: "started",
    ev.Succeeded: "succeeded",
    ev.Failed: "failed",
    ev.DeadLettered: "dead_lettered",
    ev.Cancelled: "cancelled",
    ev.AttemptFailed: "attempt_failed",
    ev.AttemptTimedOut: "attempt_timed_out",
    ev.ZombieRejected: "zombie_rejected",
}
BUCKETS = DEFAULT_BUCKETS
_RUNNABLE = (ev.Submitted, ev.Queued, ev.Resumed, ev.Replayed)
_FINISHED = (ev.Succeeded, ev.AttemptFailed, ev.AttemptTimedOut)


def _bucket(seconds: float) -> int:
    for i, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return i
    return len(BUCKETS)


class _Mark:
    __slots__ = ("queue", "type", "runnable_at", "started_at")
    __copy__ = copy_slots

    def __init__(self, queue: str, task_type: str, runnable_at: datetime | None, started_at: datetime | None):
        self.queue, self.type = queue, task_type
        self.runnable_at, self.started_at = runnable_at, started_at


async def apply(conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
    await run(conn, await plan(conn, events, None))


async def plan(conn: asyncpg.Connection, events: list[StoredEvent], memory: Memory | None) -> Write | None:
    """The batch's writes; with `memory`, the tasks' marks of earlier batches are taken from it (and
    this batch's left there)."""
    marks: dict[tuple[str, str], _Mark] = {}
    unknown = []
    for key, first in first_events(events, lambda e: (e.tenant, e.task_id)).items():
        remembered = None if memory is None else memory.get(key)
        if remembered is not None:
            marks[key] = remembered
        elif not isinstance(first.event, ev.Submitted):  # `submitted` starts a mark afresh: no read
            unknown.append(key)
    if unknown:
        for r in await conn.fetch(
            "SELECT tenant, task_id, queue, type, runnable_at, started_at FROM metric_task_marks"
            " WHERE (tenant, task_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [k[0] for k in unknown],
            [k[1] for k in unknown],
        ):
            kept = _Mark(r["queue"], r["type"], r["runnable_at"], r["started_at"])
            marks[(r["tenant"], r["task_id"])] = kept
    counters: dict[tuple[str, str, str, str], float] = defaultdict(float)
    buckets: dict[tuple[str, str, str, str, int], int] = defaultdict(int)
    for e in events:
        key = (e.tenant, e.task_id)
        event = e.event
        if isinstance(event, ev.Submitted):
            marks[key] = _Mark(event.queue, event.task_type, None, None)
        mark = marks.get(key)
        if mark is None:
            continue  # events of a task submitted before this projection existed: rebuild covers it
        name = COUNTED.get(type(event))
        if name is not None:
            counters[(e.tenant, mark.queue, mark.type, name)] += 1
        if isinstance(event, _RUNNABLE):
            mark.runnable_at = e.stored_at
        elif isinstance(event, ev.AttemptStarted):
            mark.started_at = e.stored_at
            if mark.runnable_at is not None:
                wait = (e.stored_at - mark.runnable_at).total_seconds()
                _observe(counters, buckets, (e.tenant, mark.queue, mark.type, "queue_wait"), wait)
            mark.runnable_at = None
        elif isinstance(event, _FINISHED) and mark.started_at is not None:
            took = (e.stored_at - mark.started_at).total_seconds()
            _observe(counters, buckets, (e.tenant, mark.queue, mark.type, "duration"), took)
            mark.started_at = None
    if not marks:
        return None
    items = sorted(marks.items(), key=lambda km: km[0])
    values = sorted(counters.items())
    counts = sorted(buckets.items())
    args = [
        *[[k[0] for k, _ in items], [k[1] for k, _ in items], [m.queue for _, m in items]],
        *[[m.type for _, m in items], [m.runnable_at for _, m in items], [m.started_at for _, m in items]],
        *[[k[i] for k, _ in values] for i in range(4)],
        [v for _, v in values],
        *[[k[i] for k, _ in counts] for i in range(5)],
        [n for _, n in counts],
    ]

    if memory is not None:
        for key, mark in items:
            memory.put(key, mark)
    return Write(_CTES, args)


# One statement: the tasks' marks (a `submitted` starts a task's mark afresh, queue and type too),
# the counters and the histogram buckets moved by the batch.
_CTES = """
counters_marked AS (
    INSERT INTO metric_task_marks (tenant, task_id, queue, type, runnable_at, started_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::timestamptz[])
    ON CONFLICT (tenant, task_id) DO UPDATE SET queue=EXCLUDED.queue, type=EXCLUDED.type,
        runnable_at=EXCLUDED.runnable_at, started_at=EXCLUDED.started_at
),
counters_counted AS (
    INSERT INTO metric_counters AS c (tenant, queue, type, metric, value)
    SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::double precision[])
    ON CONFLICT (tenant, queue, type, metric) DO UPDATE SET value = c.value + EXCLUDED.value
),
counters_histograms AS (
    INSERT INTO metric_histograms AS h (tenant, queue, type, metric, bucket, count)
    SELECT * FROM unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::int[], $17::bigint[])
    ON CONFLICT (tenant, queue, type, metric, bucket) DO UPDATE SET count = h.count + EXCLUDED.count
)
"""


def _observe(
    counters: dict[tuple[str, str, str, str], float],
    buckets: dict[tuple[str, str, str, str, int], int],
    key: tuple[str, str, str, str],
    seconds: float,
) -> None:
    seconds = max(0.0, seconds)
    buckets[(*key, _bucket(seconds))] += 1
    # Sums are stored in whole microseconds: integer-valued doubles add exactly, so the total does
    # not depend on how events were grouped into batches (live vs rebuild); snapshot() gives seconds.
    counters[(key[0], key[1], key[2], key[3] + "_sum")] += round(seconds * 1_000_000)


async def snapshot(conn: asyncpg.Connection | asyncpg.Pool, tenant: str | None) -> dict[str, Any]:
    """Counters and histograms for one tenant (or all, for an operator's /metrics)."""
    where, args = ("WHERE tenant=$1", [tenant]) if tenant is not None else ("", [])
    counters = await conn.fetch(
        f"SELECT tenant, queue, type, metric, value FROM metric_counters {where}", *args
    )
    hist = await conn.fetch(
        f"SELECT tenant, queue, type, metric, bucket, count FROM metric_histograms {where}", *args
    )
    rows = [dict(r) for r in counters]
    for row in rows:
        if row["metric"].endswith("_sum"):
            row["value"] = row["value"] / 1_000_000  # stored in microseconds
    return {"counters": rows, "histograms": [dict(r) for r in hist]}
