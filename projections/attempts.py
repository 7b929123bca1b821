"""The `attempts` read model: one row per attempt of a task (who ran it, when, how it ended).

Times are the event log's `stored_at` of the events that opened and closed the attempt, never a
clock. A row is keyed by (tenant, task_id, attempt) and remembers the sequence of the last event
folded into it, so an event at or below that sequence changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ordo.domain import events as ev
from ordo.infra.event_store import StoredEvent
from ordo.projections.batch_statement import Write, run
from ordo.projections.memory import Memory, first_events

NAME = "attempts"

DDL = """
CREATE TABLE IF NOT EXISTS attempts (
    tenant text NOT NULL,
    task_id text NOT NULL,
    attempt int NOT NULL,
    queue text NOT NULL,
    worker_id text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL,
    lease_until timestamptz,
    finished_at timestamptz,
    outcome text NOT NULL DEFAULT 'running',
    error json,
    lease_extensions int NOT NULL DEFAULT 0,
    progress double precision,
    last_seq bigint NOT NULL,
    PRIMARY KEY (tenant, task_id, attempt)
);
CREATE INDEX IF NOT EXISTS attempts_worker ON attempts (tenant, worker_id, started_at);
"""

# Outcomes: running (no result yet), succeeded, failed, timed_out, cancelled.
_CTES = """
attempts_upsert AS (
INSERT INTO attempts AS a (tenant, task_id, attempt, queue, worker_id, started_at, lease_until,
    finished_at, outcome, error, lease_extensions, progress, last_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::timestamptz[],
    $7::timestamptz[], $8::timestamptz[], $9::text[], $10::json[], $11::int[],
    $12::double precision[], $13::bigint[])
ON CONFLICT (tenant, task_id, attempt) DO UPDATE SET
    worker_id=EXCLUDED.worker_id, lease_until=EXCLUDED.lease_until, finished_at=EXCLUDED.finished_at,
    outcome=EXCLUDED.outcome, error=EXCLUDED.error, lease_extensions=EXCLUDED.lease_extensions,
    progress=EXCLUDED.progress, last_seq=EXCLUDED.last_seq
WHERE a.last_seq < EXCLUDED.last_seq
)
"""
_json = msgspec.json.Encoder()


@dataclass
class _Attempt:
    queue: str
    started_at: datetime
    worker_id: str = ""
    lease_until: datetime | None = None
    finished_at: datetime | None = None
    outcome: str = "running"
    error: str | None = None
    lease_extensions: int = 0
    progress: float | None = None
    last_seq: int = 0


def _error(error: ev.ErrorInfo) -> str:
    return _json.encode(error).decode()


def _close(row: _Attempt, stored: StoredEvent, outcome: str, error: str | None = None) -> None:
    if row.outcome != "running":
        return  # the first result closes an attempt; a `failed` after `attempt_failed` adds nothing
    row.outcome, row.finished_at, row.lease_until = outcome, stored.stored_at, None
    if error is not None:
        row.error = error


def _fold(row: _Attempt, stored: StoredEvent) -> None:
    event = stored.event
    match event:
        case ev.LeaseExtended():
            row.lease_extensions += 1
            row.lease_until = event.lease_until
        case ev.Progressed():
            row.progress = event.pct if event.pct is not None else row.progress
        case ev.Succeeded():
            _close(row, stored, "succeeded")
        case ev.AttemptFailed():
            _close(row, stored, "failed", _error(event.error))
        case ev.AttemptTimedOut():
            _close(row, stored, "timed_out", _error(event.error()))
        case ev.Failed():
            _close(row, stored, "failed", _error(ev.ErrorInfo(kind="failed", message=event.reason)))
        case ev.Cancelled():
            _close(row, stored, "cancelled")
    row.last_seq = stored.seq


_ATTEMPT_EVENTS = (
    ev.LeaseExtended,
    ev.Progressed,
    ev.Succeeded,
    ev.AttemptFailed,
    ev.AttemptTimedOut,
    ev.Failed,
    ev.Cancelled,
)


async def apply(conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
    """Open a row on `attempt_started`; fold the attempt's later events into it."""
    await run(conn, await plan(conn, events, None))


def _key(stored: StoredEvent) -> tuple[str, str, int]:
    return stored.tenant, stored.task_id, stored.event.attempt  # type: ignore[union-attr]


async def plan(conn: asyncpg.Connection, events: list[StoredEvent], memory: Memory | None) -> Write | None:
    """The batch's writes; with `memory`, the rows of earlier batches are taken from it (and this
    batch's left there)."""
    relevant = [
        e
        for e in events
        if isinstance(e.event, ev.AttemptStarted)
        or (isinstance(e.event, _ATTEMPT_EVENTS) and getattr(e.event, "attempt", 0) > 0)
    ]
    if not relevant:
        return None
    rows: dict[tuple[str, str, int], _Attempt] = {}
    unknown = []
    for key, first in first_events(relevant, _key).items():
        row = None if memory is None else memory.get(key)
        if row is not None:
            rows[key] = row
        elif not isinstance(first.event, ev.AttemptStarted):  # which opens the row afresh: no read
            unknown.append(key)
    if unknown:
        for rec in await conn.fetch(
            "SELECT * FROM attempts WHERE (tenant, task_id, attempt) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[], $3::int[]))",
            [k[0] for k in unknown],
            [k[1] for k in unknown],
            [k[2] for k in unknown],
        ):
            rows[(rec["tenant"], rec["task_id"], rec["attempt"])] = _from_record(rec)
    for stored in relevant:
        key = _key(stored)
        row = rows.get(key)
        if row is not None and stored.seq <= row.last_seq:
            continue
        if isinstance(stored.event, ev.AttemptStarted):
            rows[key] = _Attempt(
                queue=stored.queue,
                started_at=stored.stored_at,
                worker_id=stored.event.worker_id,
                lease_until=stored.event.lease_until,
                last_seq=stored.seq,
            )
        elif row is not None:
            _fold(row, stored)
    if not rows:
        return None

    write = Write(_CTES, _columns(rows))
    if memory is not None:
        for key, row in rows.items():
            memory.put(key, row)
    return write


def _from_record(rec: asyncpg.Record) -> _Attempt:
    error = rec["error"]
    return _Attempt(
        queue=rec["queue"],
        started_at=rec["started_at"],
        worker_id=rec["worker_id"],
        lease_until=rec["lease_until"],
        finished_at=rec["finished_at"],
        outcome=rec["outcome"],
        error=None if error is None else _json.encode(error).decode(),
        lease_extensions=rec["lease_extensions"],
        progress=rec["progress"],
        last_seq=rec["last_seq"],
    )


def _columns(rows: dict[tuple[str, str, int], _Attempt]) -> list[list[Any]]:
    items = list(rows.items())
    return [
        [k[0] for k, _ in items],
        [k[1] for k, _ in items],
        [k[2] for k, _ in items],
        [r.queue for _, r in items],
        [r.worker_id for _, r in items],
        [r.started_at for _, r in items],
        [r.lease_until for _, r in items],
        [r.finished_at for _, r in items],
        [r.outcome for _, r in items],
        [r.error for _, r in items],
        [r.lease_extensions for _, r in items],
        [r.progress for _, r in items],
        [r.last_seq for _, r in items],
    ]


# ---- queries -------------------------------------------------------------------------------------


def _to_resource(rec: asyncpg.Record) -> dict[str, Any]:
    out = dict(rec)
    out.pop("tenant", None)
    out["duration_ms"] = (
        None
        if rec["finished_at"] is None
        else round((rec["finished_at"] - rec["started_at"]).total_seconds() * 1000, 3)
    )
    return out


async def for_task(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, task_id: str
) -> list[dict[str, Any]]:
    """Every attempt of one task, first attempt first."""
    recs = await conn.fetch(
        "SELECT * FROM attempts WHERE tenant=$1 AND task_id=$2 ORDER BY attempt", tenant, task_id
    )
    return [_to_resource(r) for r in recs]
