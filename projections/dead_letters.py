"""The `dead_letters` read model: tasks that failed for good, with a summary of why.

A task enters on `dead_lettered` (which follows `failed`) and leaves on `replayed`: the list shows
what still needs an operator. The row keeps the task's type and its last attempt error, which are kept
per task in the `rollups` projection's marks (projections/rollups.py applies this fold with the
other rollups').
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ordo.domain import events as ev
from ordo.infra.event_store import StoredEvent
from ordo.projections import cursors
from ordo.projections.batch_statement import Write
from ordo.projections.memory import TaskKey
from ordo.projections.scan_window import SCAN_WINDOW, windowed_page

DDL = """
CREATE TABLE IF NOT EXISTS dead_letters (
    tenant text NOT NULL,
    task_id text NOT NULL,
    queue text NOT NULL,
    type text NOT NULL,
    attempts int NOT NULL,
    error_kind text NOT NULL DEFAULT '',
    error json,
    reason text NOT NULL DEFAULT '',
    dead_at timestamptz NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (tenant, task_id)
);
CREATE INDEX IF NOT EXISTS dead_letters_newest ON dead_letters (tenant, seq DESC);
"""

_json = msgspec.json.Encoder()


class State(msgspec.Struct, gc=False):
    """What is kept per task (its part of the marks, projections/rollups.py)."""

    queue: str
    type: str
    attempts: int = 0
    error: str | None = None
    last_seq: int = 0
    # What this batch does to the dead-letter row: None = nothing, "dead" = (re)insert, "gone" = delete.
    change: str | None = None
    reason: str = ""
    dead_at: datetime | None = None
    dead_seq: int = 0


def _fold(task: State, stored: StoredEvent) -> None:
    event = stored.event
    match event:
        case ev.AttemptStarted():
            task.attempts = event.attempt
        case ev.AttemptFailed():
            task.error = _json.encode(event.error).decode()
        case ev.AttemptTimedOut():
            task.error = _json.encode(event.error()).decode()
        case ev.Succeeded():
            task.error = None
        case ev.DeadLettered():
            task.change, task.reason, task.dead_at, task.dead_seq = (
                "dead",
                event.reason,
                stored.stored_at,
                stored.seq,
            )
        case ev.Replayed():
            task.change, task.error = "gone", None
    task.last_seq = stored.seq


def fold(events: list[StoredEvent], tasks: dict[TaskKey, State]) -> Write | None:
    """Fold the batch into `tasks` (each task's kept state, in place: what reading it back gives) and
    return the writes of the dead letters that left and those that came."""
    for stored in events:
        key = (stored.tenant, stored.task_id)
        task = tasks.get(key)
        if isinstance(stored.event, ev.Submitted):
            if task is None:
                tasks[key] = State(queue=stored.queue, type=stored.event.task_type, last_seq=stored.seq)
            continue
        if task is None or stored.seq <= task.last_seq:
            continue  # not a task we saw submitted, or already applied
        _fold(task, stored)
    changed = sorted((k, t) for k, t in tasks.items() if t.change is not None)
    for key, t in changed:  # what reading the row back gives: no pending change
        tasks[key] = State(t.queue, t.type, t.attempts, t.error, t.last_seq)
    if not changed:
        return None
    return Write(_CTES, _args(changed))


_DEAD_COLS = "tenant, task_id, queue, type, attempts, error_kind, error, reason, dead_at, seq"
# The dead letters that left, and those that came.
_CTES = f"""
dead_letters_gone AS (
    DELETE FROM dead_letters WHERE (tenant, task_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
),
dead_letters_dead AS (
    INSERT INTO dead_letters ({_DEAD_COLS})
    SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::text[],
                         $9::json[], $10::text[], $11::timestamptz[], $12::bigint[])
    ON CONFLICT (tenant, task_id) DO UPDATE SET attempts=EXCLUDED.attempts,
        error_kind=EXCLUDED.error_kind, error=EXCLUDED.error, reason=EXCLUDED.reason,
        dead_at=EXCLUDED.dead_at, seq=EXCLUDED.seq
)
"""


def _args(changed: list[tuple[TaskKey, State]]) -> list[list[Any]]:
    gone = [k for k, t in changed if t.change == "gone"]
    dead = [(k, t) for k, t in changed if t.change == "dead"]
    return [
        [k[0] for k in gone],
        [k[1] for k in gone],
        [k[0] for k, _ in dead],
        [k[1] for k, _ in dead],
        [t.queue for _, t in dead],
        [t.type for _, t in dead],
        [t.attempts for _, t in dead],
        [_kind(t.error) for _, t in dead],
        [t.error for _, t in dead],
        [t.reason for _, t in dead],
        [t.dead_at for _, t in dead],
        [t.dead_seq for _, t in dead],
    ]


def _kind(error: str | None) -> str:
    if error is None:
        return ""
    return str(msgspec.json.decode(error).get("kind", ""))


# ---- queries -------------------------------------------------------------------------------------

_COLUMNS = "task_id, queue, type, attempts, error_kind, error, reason, dead_at, seq"


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters: every field optional; all given fields must match."""

    queue: str | None = None
    task_type: str | None = None
    error_kind: str | None = None
    dead_after: datetime | None = None
    dead_before: datetime | None = None

    def where(self, tenant: str) -> tuple[list[str], list[Any]]:
        clauses: list[str] = ["tenant=$1"]
        args: list[Any] = [tenant]
        for sql, value in (
            ("queue=${}", self.queue),
            ("type=${}", self.task_type),
            ("error_kind=${}", self.error_kind),
            ("dead_at>=${}", self.dead_after),
            ("dead_at<${}", self.dead_before),
        ):
            if value is not None:
                args.append(value)
                clauses.append(sql.format(len(args)))
        return clauses, args


def encode_cursor(seq: int) -> str:
    return cursors.encode_cursor("dead_letters", str(seq))


def decode_cursor(cursor: str) -> int:
    """Raises ValueError for a cursor this server did not issue."""
    (seq,) = cursors.decode_cursor(cursor, "dead_letters", 1)
    return cursors.cursor_seq(seq)


async def list_dead_letters(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    limit: int,
    cursor: str | None = None,
    where: DeadLetterFilter = DeadLetterFilter(),
    window: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest dead letter first; `next_cursor` is None on the last page. A filter is checked on at
    most `window` (default SCAN_WINDOW) dead letters per page, so a filtered page may hold fewer
    than `limit`, or none, and still have a `next_cursor` (as the task list, decision 47)."""
    clauses, args = where.where(tenant)
    scan = ["tenant=$1"]
    if cursor is not None:
        args.append(decode_cursor(cursor))
        scan.append(f"seq<${len(args)}")
    checks = clauses[1:]  # past the tenant's
    rows, order = f"FROM dead_letters WHERE {' AND '.join(scan)}", "ORDER BY seq DESC"
    end = None
    if checks:
        recs, end = await windowed_page(
            conn, _COLUMNS, rows, order, checks, args, limit, window or SCAN_WINDOW, "seq"
        )
    else:
        recs = await conn.fetch(f"SELECT {_COLUMNS} {rows} {order} LIMIT ${len(args) + 1}", *args, limit + 1)
    items = [dict(r) for r in recs[:limit]]
    if len(recs) > limit:
        return items, encode_cursor(recs[limit - 1]["seq"])
    return items, (encode_cursor(end["seq"]) if end is not None else None)


async def get_dead_letter(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, task_id: str
) -> dict[str, Any] | None:
    rec = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM dead_letters WHERE tenant=$1 AND task_id=$2", tenant, task_id
    )
    return None if rec is None else dict(rec)


async def matching_ids(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, where: DeadLetterFilter, limit: int
) -> list[str]:
    """Task ids of up to `limit` dead letters matching `where`, oldest first (bulk replay)."""
    clauses, args = where.where(tenant)
    args.append(limit)
    recs = await conn.fetch(
        f"SELECT task_id FROM dead_letters WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ${len(args)}",
        *args,
    )
    return [r["task_id"] for r in recs]


async def count(conn: asyncpg.Connection | asyncpg.Pool, tenant: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM dead_letters WHERE tenant=$1", tenant) or 0)
