"""The `dead_letters` read model: tasks that failed for good, with a summary of why.

A task enters on `dead_lettered` (which follows `failed`) and leaves on `replayed`: the list shows
what still needs an operator. The row keeps the task's type and its last attempt error, which this
projection remembers per task in `dead_letter_tasks` (a projection reads only its own tables, so a
rebuild of it alone yields the same rows).
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
from ordo.projections.batch_statement import Write, last_param, presumed, run
from ordo.projections.memory import Memory, copy_fields, fetch_tasks, sort_tasks

NAME = "dead_letters"

DDL = """
CREATE TABLE IF NOT EXISTS dead_letter_tasks (
    tenant text NOT NULL,
    task_id text NOT NULL,
    queue text NOT NULL,
    type text NOT NULL,
    attempts int NOT NULL DEFAULT 0,
    error json,
    last_seq bigint NOT NULL,
    PRIMARY KEY (tenant, task_id)
);
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


@dataclass
class _Task:
    queue: str
    type: str
    attempts: int = 0
    error: str | None = None
    last_seq: int = 0
    # What this batch does to the dead-letter row: None = nothing, "dead" = (re)insert, "gone" = delete.
    change: str | None = None
    __copy__ = copy_fields
    reason: str = ""
    dead_at: datetime | None = None
    dead_seq: int = 0


def _fold(task: _Task, stored: StoredEvent) -> None:
    event = stored.event
    match event:
        case ev.AttemptStarted():
            task.attempts = event.attempt
        case ev.AttemptFailed():
            task.error = _json.encode(event.error).decode()
        case ev.AttemptTimedOut():
            task.error = _json.encode(ev.ErrorInfo(kind="timed_out", message=event.reason)).decode()
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


async def apply(conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
    await run(conn, await plan(conn, events, None))


async def plan(conn: asyncpg.Connection, events: list[StoredEvent], memory: Memory | None) -> Write | None:
    """The batch's writes; with `memory`, what it keeps per task is taken from it (and this batch's
    left there) and new tasks are not looked up."""
    tasks: dict[tuple[str, str], _Task]
    tasks, new, unknown = sort_tasks(events, memory)
    if unknown:
        for rec in await fetch_tasks(conn, "SELECT * FROM dead_letter_tasks", unknown):
            error = rec["error"]
            tasks[(rec["tenant"], rec["task_id"])] = _Task(
                queue=rec["queue"],
                type=rec["type"],
                attempts=rec["attempts"],
                error=None if error is None else _json.encode(error).decode(),
                last_seq=rec["last_seq"],
            )
    for stored in events:
        key = (stored.tenant, stored.task_id)
        task = tasks.get(key)
        if isinstance(stored.event, ev.Submitted):
            if task is None:
                tasks[key] = _Task(queue=stored.queue, type=stored.event.task_type, last_seq=stored.seq)
            continue
        if task is None or stored.seq <= task.last_seq:
            continue  # not a task we saw submitted, or already applied
        _fold(task, stored)
    if not tasks:
        return None
    items = sorted(tasks.items(), key=lambda kt: kt[0])

    expected = sum(1 for k, _ in items if k in new)
    write = Write(_CTES, [*_args(items, new), expected], _CHECK)
    if memory is not None:
        for key, t in items:  # what reading the row back gives: no pending change
            memory.put(key, _Task(t.queue, t.type, t.attempts, t.error, t.last_seq))
    return write


_TASK_COLS = "tenant, task_id, queue, type, attempts, error, last_seq"
_DEAD_COLS = "tenant, task_id, queue, type, attempts, error_kind, error, reason, dead_at, seq"
# One statement: what this projection keeps per task (for tasks first seen in the batch only if
# absent: the count says whether that held), the dead letters that left, and those that came.
_CTES = f"""
dead_letters_rows AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::json[],
                         $7::bigint[], $8::bool[]) AS r({_TASK_COLS}, new)
),
dead_letters_fresh AS (
    INSERT INTO dead_letter_tasks ({_TASK_COLS}) SELECT {_TASK_COLS} FROM dead_letters_rows WHERE new
    ON CONFLICT (tenant, task_id) DO NOTHING RETURNING 1
),
dead_letters_known AS (
    INSERT INTO dead_letter_tasks AS d ({_TASK_COLS}) SELECT {_TASK_COLS} FROM dead_letters_rows WHERE NOT new
    ON CONFLICT (tenant, task_id) DO UPDATE SET attempts=EXCLUDED.attempts, error=EXCLUDED.error,
        last_seq=EXCLUDED.last_seq
    WHERE d.last_seq < EXCLUDED.last_seq
),
dead_letters_gone AS (
    DELETE FROM dead_letters WHERE (tenant, task_id) IN (SELECT * FROM unnest($9::text[], $10::text[]))
),
dead_letters_dead AS (
    INSERT INTO dead_letters ({_DEAD_COLS})
    SELECT * FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::int[], $16::text[],
                         $17::json[], $18::text[], $19::timestamptz[], $20::bigint[])
    ON CONFLICT (tenant, task_id) DO UPDATE SET attempts=EXCLUDED.attempts,
        error_kind=EXCLUDED.error_kind, error=EXCLUDED.error, reason=EXCLUDED.reason,
        dead_at=EXCLUDED.dead_at, seq=EXCLUDED.seq
)
"""
# The count of rows inserted for tasks presumed new, checked against the last parameter.
_CHECK = presumed("(SELECT count(*) FROM dead_letters_fresh)", last_param(_CTES) + 1, "dead-letter task")


def _args(items: list[tuple[tuple[str, str], _Task]], new: set[tuple[str, str]]) -> list[list[Any]]:
    gone = [k for k, t in items if t.change == "gone"]
    dead = [(k, t) for k, t in items if t.change == "dead"]
    return [
        [k[0] for k, _ in items],
        [k[1] for k, _ in items],
        [t.queue for _, t in items],
        [t.type for _, t in items],
        [t.attempts for _, t in items],
        [t.error for _, t in items],
        [t.last_seq for _, t in items],
        [k in new for k, _ in items],
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
    if not seq.isdigit():
        raise ValueError("malformed cursor")
    return int(seq)


async def list_dead_letters(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    limit: int,
    cursor: str | None = None,
    where: DeadLetterFilter = DeadLetterFilter(),
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest dead letter first; `next_cursor` is None on the last page."""
    clauses, args = where.where(tenant)
    if cursor is not None:
        args.append(decode_cursor(cursor))
        clauses.append(f"seq<${len(args)}")
    args.append(limit + 1)
    recs = await conn.fetch(
        f"SELECT {_COLUMNS} FROM dead_letters WHERE {' AND '.join(clauses)}"
        f" ORDER BY seq DESC LIMIT ${len(args)}",
        *args,
    )
    items = [dict(r) for r in recs[:limit]]
    return items, (encode_cursor(recs[limit - 1]["seq"]) if len(recs) > limit else None)


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
