"""The `schedules` and `schedule_events` read models, and their queries.

`schedules`: one row per schedule, folded by the domain's own `evolve` (the next fire time is the one
recorded in the events, never recomputed here: nothing reads the clock). `schedule_events`: every
schedule event in sequence order, the schedule's timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from ordo.domain import schedule_events as se
from ordo.domain.schedule_state import ScheduleState, evolve, initial
from ordo.infra import subjects as sj
from ordo.projections.cursors import cursor_time, decode_cursor, encode_cursor, page_bounds
from ordo.projections.json_text import json_text

NAME = "schedules"

DDL = """
CREATE TABLE IF NOT EXISTS schedules (
    tenant text NOT NULL,
    id text NOT NULL,
    status text NOT NULL,
    cron text NOT NULL,
    timezone text NOT NULL,
    spec json NOT NULL,
    next_fire_at timestamptz,
    last_tick_at timestamptz,
    last_task_id text,
    fired int NOT NULL DEFAULT 0,
    skipped int NOT NULL DEFAULT 0,
    missed int NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    last_seq bigint NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (tenant, id)
);
-- Added after the first release: a row folded before it shows no reason until the schedule's next
-- pause (or a rebuild).
ALTER TABLE schedules ADD COLUMN IF NOT EXISTS paused_reason text;
CREATE INDEX IF NOT EXISTS schedules_list ON schedules (tenant, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS schedule_events (
    seq bigint PRIMARY KEY,
    tenant text NOT NULL,
    schedule_id text NOT NULL,
    type text NOT NULL,
    at timestamptz NOT NULL,
    data json NOT NULL
);
CREATE INDEX IF NOT EXISTS schedule_events_by_schedule ON schedule_events (tenant, schedule_id, seq);
-- Rows written before `ended` existed said `active` past their end: nothing left to fire.
UPDATE schedules SET status = 'ended' WHERE status = 'active' AND next_fire_at IS NULL;
"""


@dataclass(frozen=True)
class ScheduleRecord:
    seq: int
    tenant: str
    schedule_id: str
    name: str
    event: se.AnyScheduleEvent
    data: bytes
    stored_at: datetime


def decode(
    subject: str, data: bytes, headers: dict[str, str], seq: int, stored_at: datetime
) -> ScheduleRecord:
    """The runner's decoder for the `schedule` family (raises on a foreign payload: poison)."""
    tenant, schedule_id, name = sj.parse_schedule_subject(subject)
    return ScheduleRecord(seq, tenant, schedule_id, name, se.decode_schedule_event(data), data, stored_at)


_state_enc = msgspec.json.Encoder()
_state_dec = msgspec.json.Decoder(ScheduleState)

_UPSERT = """
INSERT INTO schedules (tenant, id, status, cron, timezone, spec, next_fire_at, last_tick_at,
    last_task_id, fired, skipped, missed, created_at, updated_at, last_seq, state, paused_reason)
VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
ON CONFLICT (tenant, id) DO UPDATE SET
    status=EXCLUDED.status, cron=EXCLUDED.cron, timezone=EXCLUDED.timezone, spec=EXCLUDED.spec,
    next_fire_at=EXCLUDED.next_fire_at, last_tick_at=EXCLUDED.last_tick_at,
    last_task_id=EXCLUDED.last_task_id, fired=EXCLUDED.fired, skipped=EXCLUDED.skipped,
    missed=EXCLUDED.missed, updated_at=EXCLUDED.updated_at, last_seq=EXCLUDED.last_seq,
    state=EXCLUDED.state, paused_reason=EXCLUDED.paused_reason
"""
_INSERT_EVENTS = """
INSERT INTO schedule_events (seq, tenant, schedule_id, type, at, data)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::json[])
ON CONFLICT (seq) DO NOTHING
"""


async def apply(conn: asyncpg.Connection, records: list[ScheduleRecord]) -> None:
    """Fold a batch into the schedules' rows and append it to the timeline."""
    if not records:
        return
    await conn.execute(
        _INSERT_EVENTS,
        [r.seq for r in records],
        [r.tenant for r in records],
        [r.schedule_id for r in records],
        [r.name for r in records],
        [r.stored_at for r in records],
        [json_text(r.data) for r in records],
    )
    keys = sorted({(r.tenant, r.schedule_id) for r in records})
    existing = await conn.fetch(
        "SELECT tenant, id, state, created_at FROM schedules"
        " WHERE (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    rows: dict[tuple[str, str], list[Any]] = {
        (r["tenant"], r["id"]): [_state_dec.decode(r["state"]), r["created_at"], None, 0] for r in existing
    }
    for rec in records:
        row = rows.setdefault(
            (rec.tenant, rec.schedule_id), [initial(rec.schedule_id), rec.stored_at, None, 0]
        )
        row[0] = evolve(row[0], rec.event)
        row[2], row[3] = rec.stored_at, rec.seq
    args = []
    for (tenant, sid), (state, created_at, updated_at, last_seq) in rows.items():
        if state.spec is None:
            continue
        args.append(
            (
                tenant, sid, state.status, state.spec.cron, state.spec.timezone,
                json_text(msgspec.json.encode(state.spec)), state.next_at, state.last_tick_at,
                state.last_task_id, state.fired, state.skipped, state.missed, created_at,
                updated_at, last_seq, _state_enc.encode(state), state.paused_reason or None,
            )
        )  # fmt: skip
    if args:
        await conn.executemany(_UPSERT, args)


# ---- queries -------------------------------------------------------------------------------------

_COLUMNS = (
    "id, status, cron, timezone, spec, next_fire_at, last_tick_at, last_task_id, fired, skipped,"
    " missed, created_at, updated_at, last_seq, paused_reason"
)


def to_resource(rec: asyncpg.Record) -> dict[str, Any]:
    out = dict(rec)
    out["spec"] = utc_spec(msgspec.json.decode(out["spec"]) if isinstance(out["spec"], str) else out["spec"])
    return out


def utc_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as JSON with `start_at`/`end_at` in UTC with a `Z`, as every other time the API answers.
    The events (and so the stored spec) keep the offset they were written in."""
    for key in ("start_at", "end_at"):
        value = spec.get(key)
        if isinstance(value, str):
            spec[key] = datetime.fromisoformat(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
    return spec


async def get_schedule(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, schedule_id: str
) -> dict[str, Any] | None:
    rec = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM schedules WHERE tenant=$1 AND id=$2", tenant, schedule_id
    )
    return None if rec is None else to_resource(rec)


def _cursor(created_at: datetime, sid: str) -> str:
    return encode_cursor("schedules", created_at.isoformat(), sid)


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    at, sid = decode_cursor(cursor, "schedules", 2)
    return cursor_time(at), sid


async def list_schedules(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    limit: int,
    cursor: str | None = None,
    include_deleted: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """Schedules, newest first, and the cursor of the next page (None: last page)."""
    where: list[str] = ["tenant=$1"]
    args: list[Any] = [tenant]
    if not include_deleted:
        where.append("status <> 'deleted'")
    if cursor is not None:
        at, sid = _parse_cursor(cursor)
        args += [at, sid]
        where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    recs = await conn.fetch(
        f"SELECT {_COLUMNS} FROM schedules WHERE {' AND '.join(where)}"
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    items = [to_resource(r) for r in recs[:limit]]
    nxt = _cursor(recs[limit - 1]["created_at"], recs[limit - 1]["id"]) if len(recs) > limit else None
    return items, nxt


async def timeline(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    schedule_id: str,
    limit: int = 10_000,
    after: int | None = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Up to `limit` of the schedule's events past `after`, oldest or newest first (as a task's:
    projections/task_events.py `timeline`)."""
    where, order = page_bounds(after, newest_first, 4)
    recs = await conn.fetch(
        f"SELECT seq, type, at, data FROM schedule_events WHERE tenant=$1 AND schedule_id=$2{where}"
        f" ORDER BY {order} LIMIT $3",
        tenant,
        schedule_id,
        limit,
        *(() if after is None else (after,)),
    )
    out = []
    for r in recs:
        data = msgspec.json.decode(r["data"]) if isinstance(r["data"], str) else dict(r["data"])
        data.pop("event", None)
        if isinstance(data.get("spec"), dict):  # created, updated
            data["spec"] = utc_spec(data["spec"])
        out.append({"seq": r["seq"], "type": r["type"], "at": r["at"], "data": data})
    return out


async def overdue(
    conn: asyncpg.Connection | asyncpg.Pool, before: datetime, limit: int
) -> list[tuple[str, str]]:
    """(tenant, id) of active schedules whose next tick is before `before`, oldest first: the timer
    sweep's candidates (workers/timer_sweep.py), checked against the log before anything is done.
    None before the projector first created the table."""
    try:
        rows = await conn.fetch(
            "SELECT tenant, id FROM schedules WHERE status = 'active' AND next_fire_at < $1"
            " ORDER BY next_fire_at LIMIT $2",
            before,
            limit,
        )
    except asyncpg.UndefinedTableError:
        return []
    return [(r["tenant"], r["id"]) for r in rows]
