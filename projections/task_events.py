"""The `task_events` read model: every task event in sequence order (the timeline, and SSE's source)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ordo.infra.event_store import StoredEvent
from ordo.projections.batch_statement import Write, run
from ordo.projections.cursors import page_bounds
from ordo.projections.json_text import json_text, taken_apart
from ordo.projections.memory import Memory

DDL = """
CREATE TABLE IF NOT EXISTS task_events (
    seq bigint PRIMARY KEY,
    tenant text NOT NULL,
    task_id text NOT NULL,
    queue text NOT NULL,
    type text NOT NULL,
    attempt int,
    at timestamptz NOT NULL,
    data json NOT NULL,
    meta json NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS task_events_task ON task_events (tenant, task_id, seq);
"""

NAME = "task_events"

_CTES = """
task_events_inserted AS (
    INSERT INTO task_events (seq, tenant, task_id, queue, type, attempt, at, data, meta)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                         $7::timestamptz[], $8::json[], $9::json[])
    ON CONFLICT (seq) DO NOTHING
)
"""
# A batch with a long event sends its JSON apart from its row (projections/json_text.py
# `taken_apart`), the row naming its place instead.
_CTES_APART = """
task_events_inserted AS (
    INSERT INTO task_events (seq, tenant, task_id, queue, type, attempt, at, data, meta)
    SELECT r.seq, r.tenant, r.task_id, r.queue, r.type, r.attempt, r.at, COALESCE(d.value, r.data), r.meta
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                $7::timestamptz[], $8::json[], $9::json[], $10::int[])
         AS r(seq, tenant, task_id, queue, type, attempt, at, data, meta, data_at)
    LEFT JOIN json_array_elements($11::json) WITH ORDINALITY AS d(value, n) ON d.n = r.data_at
    ON CONFLICT (seq) DO NOTHING
)
"""
_json = msgspec.json.Encoder()


async def apply(conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
    await run(conn, await plan(conn, events, None))


async def plan(conn: asyncpg.Connection, events: list[StoredEvent], memory: Memory | None) -> Write | None:
    """The batch's rows, as a write the runner joins into the batch's statement (nothing to remember)."""
    if not events:
        return None
    args: list[Any] = [
        [e.seq for e in events],
        [e.tenant for e in events],
        [e.task_id for e in events],
        [e.queue for e in events],
        [e.name for e in events],
        [getattr(e.event, "attempt", None) for e in events],
        [e.stored_at for e in events],
    ]
    data: list[str | None] = [json_text(e.raw) for e in events]
    meta = [_json.encode(e.headers).decode() for e in events]
    long = taken_apart(data)
    if long is None:
        return Write(_CTES, [*args, data, meta])
    return Write(_CTES_APART, [*args, long.texts, meta, long.places, _json.encode(long.apart).decode()])


_COLUMNS = "seq, tenant, task_id, queue, type, attempt, at, data, meta"


def to_entry(rec: asyncpg.Record) -> dict[str, Any]:
    return entry(
        rec["seq"],
        rec["type"],
        rec["at"],
        rec["task_id"],
        rec["queue"],
        rec["attempt"],
        rec["data"],
        rec["meta"],
    )


def entry(
    seq: int,
    type_: str,
    at: datetime,
    task_id: str,
    queue: str,
    attempt: int | None,
    event: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """One task event as the API and SSE show it (`event`: the event's JSON, decoded)."""
    data = dict(event)
    data.pop("event", None)
    return {
        "seq": seq,
        "type": type_,
        "at": at,
        "task_id": task_id,
        "queue": queue,
        "attempt": attempt,
        "data": data,
        "meta": meta,
    }


async def timeline(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    task_id: str,
    limit: int = 10_000,
    after: int | None = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Up to `limit` of the task's events past `after` in the order read: oldest first (seq >
    `after`), or with `newest_first` newest first (seq < `after`); None starts at the beginning, or
    at the end."""
    where, order = page_bounds(after, newest_first, 4)
    recs = await conn.fetch(
        f"SELECT {_COLUMNS} FROM task_events WHERE tenant=$1 AND task_id=$2{where} ORDER BY {order} LIMIT $3",
        tenant,
        task_id,
        limit,
        *(() if after is None else (after,)),
    )
    return [to_entry(r) for r in recs]


async def events_after(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    after_seq: int,
    limit: int,
    task_id: str | None = None,
    *,
    queue: str | None = None,
    types: tuple[str, ...] | None = None,
    upto: int | None = None,
) -> list[dict[str, Any]]:
    """Events with seq > after_seq in order: the projector commits them in order, so no gaps.

    Optional filters (all bind parameters): one task, one queue, a set of event types, and an upper
    bound `upto` (inclusive: a catching-up SSE stream reads up to where the live feed takes over)."""
    where = ["tenant=$1", "seq>$2"]
    args: list[Any] = [tenant, after_seq]
    if upto is not None:
        args.append(upto)
        where.append(f"seq<=${len(args)}")
    for column, value in (("task_id", task_id), ("queue", queue)):
        if value is not None:
            args.append(value)
            where.append(f"{column}=${len(args)}")
    if types is not None:
        args.append(list(types))
        where.append(f"type = ANY(${len(args)}::text[])")
    args.append(limit)
    recs = await conn.fetch(
        f"SELECT {_COLUMNS} FROM task_events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ${len(args)}",
        *args,
    )
    return [to_entry(r) for r in recs]


async def committed_between(
    conn: asyncpg.Connection | asyncpg.Pool, after_seq: int, upto_seq: int, limit: int
) -> list[tuple[str, dict[str, Any]]]:
    """Every tenant's events with after_seq < seq <= upto_seq in order, as (tenant, entry).

    The gateway's live tail: one query per projector commit, whatever the number of SSE streams."""
    recs = await conn.fetch(
        f"SELECT {_COLUMNS} FROM task_events WHERE seq>$1 AND seq<=$2 ORDER BY seq LIMIT $3",
        after_seq,
        upto_seq,
        limit,
    )
    return [(r["tenant"], to_entry(r)) for r in recs]
