"""The `counters` read model: monotonic task counters and duration histograms for /metrics.

Kept in PostgreSQL (not in process memory) so every gateway exposes the same numbers, they survive
restarts, and a rebuild from sequence 1 yields them again. Durations come from stored_at, never the
wall clock. What is kept per task is part of the `rollups` projection's marks
(projections/rollups.py applies this fold with the other rollups').
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ordo.domain import events as ev
from ordo.infra.event_store import StoredEvent
from ordo.infra.metrics import DEFAULT_BUCKETS
from ordo.projections.batch_statement import Write
from ordo.projections.memory import TaskKey

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
    """The index of the first bucket whose bound is >= seconds (len(BUCKETS): above them all)."""
    return bisect.bisect_left(BUCKETS, seconds)


class State(msgspec.Struct, gc=False):
    """What is kept per task (its part of the marks, projections/rollups.py): its queue and type, and
    since when it has been runnable or running."""

    queue: str
    type: str
    runnable_at: datetime | None
    started_at: datetime | None


def fold(events: list[StoredEvent], marks: dict[TaskKey, State]) -> Write | None:
    """Fold the batch into `marks` (each task's kept state, in place; a `submitted` starts a task's
    mark afresh, queue and type too) and return the writes of the counters and histogram buckets."""
    counters: dict[tuple[str, str, str, str], float] = defaultdict(float)
    buckets: dict[tuple[str, str, str, str, int], int] = defaultdict(int)
    for e in events:
        key = (e.tenant, e.task_id)
        event = e.event
        if isinstance(event, ev.Submitted):
            marks[key] = State(event.queue, event.task_type, None, None)
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
    if not counters and not buckets:
        return None
    values = sorted(counters.items())
    counts = sorted(buckets.items())
    args = [
        *[[k[i] for k, _ in values] for i in range(4)],
        [v for _, v in values],
        *[[k[i] for k, _ in counts] for i in range(5)],
        [n for _, n in counts],
    ]
    return Write(_CTES, args)


# The counters and the histogram buckets moved by the batch.
_CTES = """
counters_counted AS (
    INSERT INTO metric_counters AS c (tenant, queue, type, metric, value)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::double precision[])
    ON CONFLICT (tenant, queue, type, metric) DO UPDATE SET value = c.value + EXCLUDED.value
),
counters_histograms AS (
    INSERT INTO metric_histograms AS h (tenant, queue, type, metric, bucket, count)
    SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::int[], $11::bigint[])
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


# The `type` label of the types beyond the busiest ones: no task type can be named this
# (gateway/schemas.py `TaskType`).
OTHER_TYPES = "(other)"


async def snapshot(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str | None, max_types: int = 100
) -> dict[str, Any]:
    """Counters and histograms for one tenant (or all, for an operator's /metrics), with their own
    `type` for the `max_types` types with the most tasks submitted and summed as `OTHER_TYPES` for
    the rest: every distinct type would otherwise add its series to every scrape, for good."""
    where, args = ("WHERE tenant=$1", [tenant]) if tenant is not None else ("WHERE true", [])
    n = len(args)
    top = f"""
        WITH top AS (
            SELECT type FROM metric_counters {where} AND metric = 'submitted'
            GROUP BY type ORDER BY sum(value) DESC, type LIMIT ${n + 1}
        )"""
    label = f"CASE WHEN type IN (SELECT type FROM top) THEN type ELSE '{OTHER_TYPES}' END"
    counters = await conn.fetch(
        f"{top} SELECT tenant, queue, {label} AS type, metric, sum(value) AS value"
        f" FROM metric_counters {where} GROUP BY 1, 2, 3, 4",
        *args,
        max_types,
    )
    hist = await conn.fetch(
        f"{top} SELECT tenant, queue, {label} AS type, metric, bucket, sum(count)::bigint AS count"
        f" FROM metric_histograms {where} GROUP BY 1, 2, 3, 4, 5",
        *args,
        max_types,
    )
    rows = [dict(r) for r in counters]
    for row in rows:
        if row["metric"].endswith("_sum"):
            row["value"] = row["value"] / 1_000_000  # stored in microseconds
    return {"counters": rows, "histograms": [dict(r) for r in hist]}
