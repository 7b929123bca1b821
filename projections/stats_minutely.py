"""The `stats_minutely` read model: per minute, queue and task type, what happened and how long it took.

Counters (submitted, started, succeeded, failed, attempt failures, cancelled) per minute of the
event's `stored_at` — the log's time, never a clock, so a rebuild at any later date gives the same
rows. Each finished attempt's duration (its closing event's `stored_at` − its `attempt_started`'s)
is a row of `stats_durations`; p50/p95/p99 are computed from those rows when read. The task's type
and current attempt start are kept per task in the `rollups` projection's marks
(projections/rollups.py applies this fold with the other rollups'). Idempotent by sequence: an
event is counted only if its sequence is above the task's `last_seq` there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from ordo.domain import events as ev
from ordo.infra.event_store import StoredEvent
from ordo.projections.batch_statement import Write
from ordo.projections.memory import TaskKey

DDL = """
CREATE TABLE IF NOT EXISTS stats_minutely (
    tenant text NOT NULL,
    queue text NOT NULL,
    type text NOT NULL,
    minute timestamptz NOT NULL,
    submitted bigint NOT NULL DEFAULT 0,
    started bigint NOT NULL DEFAULT 0,
    succeeded bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    attempts_failed bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    last_seq bigint NOT NULL,
    PRIMARY KEY (tenant, minute, queue, type)
);
CREATE TABLE IF NOT EXISTS stats_durations (
    seq bigint PRIMARY KEY,
    tenant text NOT NULL,
    queue text NOT NULL,
    type text NOT NULL,
    minute timestamptz NOT NULL,
    outcome text NOT NULL,
    duration_ms double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS stats_durations_minute ON stats_durations (tenant, minute, queue, type);
"""

COUNTERS = ("submitted", "started", "succeeded", "failed", "attempts_failed", "cancelled")

_COUNTER_OF: dict[type, str] = {
    ev.Submitted: "submitted",
    ev.AttemptStarted: "started",
    ev.Succeeded: "succeeded",
    ev.Failed: "failed",
    ev.AttemptFailed: "attempts_failed",
    ev.AttemptTimedOut: "attempts_failed",
    ev.Cancelled: "cancelled",
}
# Events that close the current attempt, and the outcome they record.
_CLOSES: dict[type, str] = {
    ev.Succeeded: "succeeded",
    ev.AttemptFailed: "failed",
    ev.AttemptTimedOut: "timed_out",
    ev.Cancelled: "cancelled",
}


class State(msgspec.Struct, gc=False):
    """What is kept per task (its part of the marks, projections/rollups.py)."""

    queue: str
    type: str
    attempt_started_at: datetime | None
    last_seq: int


@dataclass
class _Bucket:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    last_seq: int = 0


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class _Minutes:
    """`minute_of` for a batch's events, whose times mostly fall in the minute of the one before."""

    __slots__ = ("start", "end")

    def __init__(self) -> None:
        self.start = self.end = datetime.min.replace(tzinfo=UTC)  # an empty minute: no time is in it

    def of(self, at: datetime) -> datetime:
        start = self.start
        if start <= at < self.end:
            return start
        self.start = start = minute_of(at)
        self.end = start + _MINUTE
        return start


_MINUTE = timedelta(minutes=1)


def fold(events: list[StoredEvent], tasks: dict[TaskKey, State]) -> Write | None:
    """Fold the batch into `tasks` (each task's kept state, in place) and return the writes of the
    minute counters and the finished attempts."""
    buckets: dict[tuple[str, datetime, str, str], _Bucket] = {}
    durations: list[tuple[int, str, str, str, datetime, str, float]] = []
    minutes = _Minutes()
    for stored in events:
        key = (stored.tenant, stored.task_id)
        event = stored.event
        task = tasks.get(key)
        if isinstance(event, ev.Submitted) and task is None:
            task = tasks[key] = State(stored.queue, event.task_type, None, 0)
        if task is None or stored.seq <= task.last_seq:
            continue  # never saw it submitted, or already applied
        task.last_seq = stored.seq
        minute = minutes.of(stored.stored_at)
        outcome = _CLOSES.get(type(event))
        if outcome is not None and task.attempt_started_at is not None:
            ms = (stored.stored_at - task.attempt_started_at).total_seconds() * 1000
            durations.append((stored.seq, stored.tenant, task.queue, task.type, minute, outcome, ms))
            task.attempt_started_at = None
        if isinstance(event, ev.AttemptStarted):
            task.attempt_started_at = stored.stored_at
        counter = _COUNTER_OF.get(type(event))
        if counter is not None:
            at = (stored.tenant, minute, task.queue, task.type)
            bucket = buckets.get(at)
            if bucket is None:  # (not setdefault: that builds a bucket for every event)
                bucket = buckets[at] = _Bucket()
            bucket.counts[counter] += 1
            bucket.last_seq = stored.seq
    if not buckets and not durations:
        return None
    return Write(_CTES, _args(buckets, durations))


_DURATION_COLS = "seq, tenant, queue, type, minute, outcome, duration_ms"
# The minute counters and the finished attempts moved by the batch.
_CTES = f"""
stats_minutely_counted AS (
    INSERT INTO stats_minutely AS s (tenant, minute, queue, type, {", ".join(COUNTERS)}, last_seq)
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[],
        $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[])
    ON CONFLICT (tenant, minute, queue, type) DO UPDATE SET
        {", ".join(f"{c} = s.{c} + EXCLUDED.{c}" for c in COUNTERS)}, last_seq = EXCLUDED.last_seq
),
stats_minutely_timed AS (
    INSERT INTO stats_durations ({_DURATION_COLS})
    SELECT * FROM unnest($12::bigint[], $13::text[], $14::text[], $15::text[], $16::timestamptz[],
                         $17::text[], $18::double precision[])
    ON CONFLICT (seq) DO NOTHING
)
"""  # noqa: S608 - column names are constants


def _args(
    buckets: dict[tuple[str, datetime, str, str], _Bucket],
    durations: list[tuple[int, str, str, str, datetime, str, float]],
) -> list[list[Any]]:
    rows = sorted(buckets.items())
    timed: list[list[Any]] = [list(col) for col in zip(*durations, strict=True)] or [[] for _ in range(7)]
    return [
        [k[0] for k, _ in rows],
        [k[1] for k, _ in rows],
        [k[2] for k, _ in rows],
        [k[3] for k, _ in rows],
        *[[b.counts[c] for _, b in rows] for c in COUNTERS],
        [b.last_seq for _, b in rows],
        *timed,
    ]


# ---- queries -------------------------------------------------------------------------------------


async def series(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    since: datetime,
    until: datetime,
    queue: str | None = None,
    task_type: str | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Per (minute, queue, type) in [since, until): the counters and attempt-duration percentiles (ms).

    Percentiles cover every finished attempt (succeeded, failed, timed out, cancelled while running)
    whose result was stored in that minute; None when there was none.
    """
    recs = await conn.fetch(
        f"""
        WITH d AS (
            SELECT minute, queue, type,
                   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms) AS p
            FROM stats_durations
            WHERE tenant=$1 AND minute >= $2 AND minute < $3
              AND ($4::text IS NULL OR queue=$4) AND ($5::text IS NULL OR type=$5)
            GROUP BY minute, queue, type
        )
        SELECT s.minute, s.queue, s.type, {", ".join("s." + c for c in COUNTERS)},
               d.p[1] AS p50_ms, d.p[2] AS p95_ms, d.p[3] AS p99_ms
        FROM stats_minutely s LEFT JOIN d USING (minute, queue, type)
        WHERE s.tenant=$1 AND s.minute >= $2 AND s.minute < $3
          AND ($4::text IS NULL OR s.queue=$4) AND ($5::text IS NULL OR s.type=$5)
        ORDER BY s.minute, s.queue, s.type
        LIMIT $6
        """,  # noqa: S608 - column names are constants
        tenant,
        since,
        until,
        queue,
        task_type,
        limit,
    )
    return [{k: (int(v) if k in COUNTERS else v) for k, v in dict(r).items()} for r in recs]


async def totals(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    since: datetime,
    until: datetime,
    queue: str | None = None,
    task_type: str | None = None,
) -> dict[str, Any]:
    """The counters summed over [since, until) and the percentiles over all its finished attempts."""
    where = (
        "tenant=$1 AND minute >= $2 AND minute < $3"
        " AND ($4::text IS NULL OR queue=$4) AND ($5::text IS NULL OR type=$5)"
    )
    counts = await conn.fetchrow(
        f"SELECT {', '.join(f'coalesce(sum({c}), 0)::bigint AS {c}' for c in COUNTERS)}"
        f" FROM stats_minutely WHERE {where}",
        tenant, since, until, queue, task_type,
    )  # fmt: skip
    p = await conn.fetchval(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms)"
        f" FROM stats_durations WHERE {where}",
        tenant, since, until, queue, task_type,
    )  # fmt: skip
    out: dict[str, Any] = {c: int(counts[c]) for c in COUNTERS} if counts else dict.fromkeys(COUNTERS, 0)
    out.update(dict(zip(("p50_ms", "p95_ms", "p99_ms"), p or (None, None, None), strict=True)))
    return out
