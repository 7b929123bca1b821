"""The `tasks` read model: one row per task, its status folded by the domain's own `evolve`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ordo.domain import events as ev
from ordo.domain.state import TaskState, evolve, initial
from ordo.domain.status import TERMINAL, TaskStatus
from ordo.infra.event_store import StoredEvent
from ordo.infra.json_depth import MAX_DEPTH, depth
from ordo.projections import cursors, poison
from ordo.projections.batch_statement import Write, last_param, presumed, run
from ordo.projections.json_text import json_text, taken_apart
from ordo.projections.memory import Memory, fetch_tasks, sort_tasks
from ordo.projections.scan_window import SCAN_WINDOW, windowed_page

DDL = """
CREATE TABLE IF NOT EXISTS tasks (
    tenant text NOT NULL,
    id text NOT NULL,
    type text NOT NULL,
    queue text NOT NULL,
    priority int NOT NULL,
    status text NOT NULL,
    attempts int NOT NULL DEFAULT 0,
    max_attempts int NOT NULL,
    timeout_s double precision NOT NULL,
    payload json,
    result json,
    error json,
    tags text[] NOT NULL DEFAULT '{}',
    run_at timestamptz,
    worker_id text,
    lease_until timestamptz,
    progress double precision,
    archived boolean NOT NULL DEFAULT false,
    idempotency_key text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    last_seq bigint NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (tenant, id)
);
-- The list's indexes (measured by bench/read_1m.py): each serves a filter in the list's order, so a page
-- reads about `limit` rows whatever the tenant's size. A status list is one scan per status, merged.
CREATE INDEX IF NOT EXISTS tasks_newest ON tasks (tenant, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_status_newest ON tasks (tenant, status, created_at DESC, id DESC);
DROP INDEX IF EXISTS tasks_status;  -- (tenant, status): a prefix of tasks_status_newest
CREATE INDEX IF NOT EXISTS tasks_type_newest ON tasks (tenant, type, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_queue_newest ON tasks (tenant, queue, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_changed ON tasks (tenant, updated_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_archived ON tasks (tenant, created_at DESC, id DESC) WHERE archived;
"""

NAME = "tasks"
_json = msgspec.json.Encoder()


class _Rest(msgspec.Struct, array_like=True, frozen=True):
    """What of a task's folded state no other column of its row holds: the `state` column.

    The row's columns hold the rest, so a task the projector does not remember is read back from
    them and this. The whole state was kept there before (decision 44): encoding, sending and
    storing it again for every row version was about a tenth of the projector's CPU and 7 % of
    PostgreSQL's under W1. A row written then (a JSON object) is still read as it was written."""

    tenant: str
    body_hash: str | None
    paused_from: TaskStatus | None
    budget_base: int
    dispatch: int
    due_at: datetime | None
    version: int


_rest_enc = msgspec.msgpack.Encoder()
_rest_dec = msgspec.msgpack.Decoder(_Rest)
_whole_state_dec = msgspec.json.Decoder(TaskState)  # rows written before decision 44
_error_dec = msgspec.json.Decoder(ev.ErrorInfo)

_COLS = (
    "tenant, id, type, queue, priority, status, attempts, max_attempts, timeout_s, payload, result,"
    " error, tags, run_at, worker_id, lease_until, progress, archived, idempotency_key, created_at,"
    " updated_at, started_at, finished_at, last_seq, state"
)
_TYPES = (
    "text[], text[], text[], text[], int[], text[], int[], int[], double precision[], json[], json[],"
    " json[], json[], timestamptz[], text[], timestamptz[], double precision[], bool[], text[],"
    " timestamptz[], timestamptz[], timestamptz[], timestamptz[], bigint[], bytea[], bool[]"
)
# `tags` travels as a JSON array (unnest cannot carry an array per row).
_FROM_ROWS = _COLS.replace("tags", "ARRAY(SELECT json_array_elements_text(r.tags))")
# A row version keeps the payload it had when the batch sends none (NULL: a task's payload is never
# NULL): the stored value, out of line when large, is carried over instead of encoded, parsed and
# stored again with every version.
_KEPT = {"payload": "COALESCE(EXCLUDED.payload, tasks.payload)"}
_UPDATE = ", ".join(
    f"{c}={_KEPT.get(c, f'EXCLUDED.{c}')}"
    for c in _COLS.split(", ")
    if c not in ("tenant", "id", "created_at")
)
_PARAMS = ", ".join(f"${i}::{t}" for i, t in enumerate(_TYPES.split(", "), 1))
# A batch with a long payload or result sends it apart from its row (projections/json_text.py
# `taken_apart`), the row naming its place in the batch's payloads (results) instead.
_ROW_TYPES = _TYPES.split(", ")[:-1]  # the columns'; then the places apart and `new`
_PAYLOAD, _RESULT = _COLS.split(", ").index("payload"), _COLS.split(", ").index("result")
_APART_PARAMS = ", ".join(f"${i}::{t}" for i, t in enumerate([*_ROW_TYPES, "int[]", "int[]", "bool[]"], 1))
_PAYLOADS, _RESULTS = len(_ROW_TYPES) + 4, len(_ROW_TYPES) + 5
_APART = {"payload": "p", "result": "q"}
_APART_ROWS = ", ".join(
    f"COALESCE({_APART[c]}.value, r.{c}) AS {c}" if c in _APART else f"r.{c}" for c in _COLS.split(", ")
)
_ROWS = f"tasks_rows AS (SELECT * FROM unnest({_PARAMS}) AS r({_COLS}, new)),"
_ROWS_APART = f"""tasks_rows AS (
    SELECT {_APART_ROWS}, r.new
    FROM unnest({_APART_PARAMS}) AS r({_COLS}, payload_at, result_at, new)
    LEFT JOIN json_array_elements(${_PAYLOADS}::json) WITH ORDINALITY AS p(value, n) ON p.n = r.payload_at
    LEFT JOIN json_array_elements(${_RESULTS}::json) WITH ORDINALITY AS q(value, n) ON q.n = r.result_at
),"""
# Rows of tasks first seen in this batch are inserted only if absent; the count of those inserted
# tells whether the presumption held (memory.NotNew otherwise).
_WRITES = f"""
tasks_fresh AS (
    INSERT INTO tasks ({_COLS}) SELECT {_FROM_ROWS} FROM tasks_rows r WHERE new
    ON CONFLICT (tenant, id) DO NOTHING RETURNING 1
),
tasks_known AS (
    INSERT INTO tasks ({_COLS}) SELECT {_FROM_ROWS} FROM tasks_rows r WHERE NOT new
    ON CONFLICT (tenant, id) DO UPDATE SET {_UPDATE}
)
"""
_CTES = f"{_ROWS}{_WRITES}"
_CTES_APART = f"{_ROWS_APART}{_WRITES}"
# The count of rows inserted for tasks presumed new, checked against the last parameter.
_CHECK = presumed("(SELECT count(*) FROM tasks_fresh)", last_param(_CTES) + 1, "task")
_CHECK_APART = presumed("(SELECT count(*) FROM tasks_fresh)", last_param(_CTES_APART) + 1, "task")


class _Row(msgspec.Struct, gc=False):
    """A task's row as the batch folds it; remembered between batches. Not tracked by the garbage
    collector (it can hold no reference cycle): the projector remembers tens of thousands of them,
    and the collector's young collections walked every one they found (6-8 % of the projector's CPU
    once its memory was full; docs/benchmarks.md). The same holds for the rollups' marks."""

    state: TaskState
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_seq: int = 0


def _apply_one(row: _Row, stored: StoredEvent) -> None:
    event = stored.event
    existed = row.state.exists
    row.state = evolve(row.state, event)
    row.updated_at = stored.stored_at
    row.last_seq = stored.seq
    if isinstance(event, ev.Submitted):
        if not existed:  # a second `submitted` (forged) changes nothing, wherever a batch was cut
            row.created_at = stored.stored_at
    elif isinstance(event, ev.AttemptStarted):
        row.started_at = stored.stored_at
        row.finished_at = None
    elif isinstance(event, (ev.Succeeded, ev.Failed, ev.Cancelled)):
        row.finished_at = stored.stored_at
    elif isinstance(event, ev.Replayed):
        row.finished_at = None


async def apply(conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
    """Fold a batch of events into the rows of their tasks (the caller holds the transaction)."""
    await run(conn, await plan(conn, events, None))


async def plan(conn: asyncpg.Connection, events: list[StoredEvent], memory: Memory | None) -> Write | None:
    """The batch's writes; with `memory`, the rows of earlier batches are taken from it (and this
    batch's left there) and new tasks are not looked up."""
    rows: dict[tuple[str, str], _Row]
    rows, new, unknown = sort_tasks(events, memory)
    if unknown:
        for rec in await fetch_tasks(conn, SELECT_STATE, unknown, id_column="id"):
            loaded = _Row(state_of(rec), rec["created_at"])
            loaded.started_at, loaded.finished_at = rec["started_at"], rec["finished_at"]
            rows[(rec["tenant"], rec["id"])] = loaded
    in_table = {key: row.state.payload for key, row in rows.items()}  # the payloads the table holds
    for stored in events:
        key = (stored.tenant, stored.task_id)
        row = rows.get(key)
        if row is None:
            row = rows[key] = _Row(initial(stored.task_id))
        _apply_one(row, stored)
    written = sorted(((k, r) for k, r in rows.items() if r.state.exists), key=lambda kr: kr[0])
    if not written:
        return None
    params = [_params(key[0], row, in_table.get(key)) for key, row in written]
    columns = [list(col) for col in zip(*params, strict=True)]
    flags = [key in new for key, _ in written]

    if memory is not None:
        for key, row in written:
            if _remembered_size(row.state) <= _REMEMBER_MAX_BYTES:
                memory.put(key, row)
            else:
                memory.forget(key)
    payloads, results = taken_apart(columns[_PAYLOAD]), taken_apart(columns[_RESULT])
    if payloads is None and results is None:
        return Write(_CTES, [*columns, flags, sum(flags)], _CHECK)
    places: list[list[Any]] = []
    apart: list[str] = []
    for column, long in ((_PAYLOAD, payloads), (_RESULT, results)):
        if long is None:
            places.append([None] * len(written))
            apart.append("[]")
        else:
            columns[column] = long.texts
            places.append(long.places)
            apart.append(_json.encode(long.apart).decode())
    return Write(_CTES_APART, [*columns, *places, flags, *apart, sum(flags)], _CHECK_APART)


# A task with a large payload or result is read back from its row rather than held in memory: the
# memory's bound is a number of tasks, and this keeps it a bound on bytes too.
_REMEMBER_MAX_BYTES = 4096


SELECT_STATE = (
    "SELECT tenant, id, type, queue, priority, status, attempts, max_attempts, timeout_s,"
    " payload::text AS payload, result::text AS result, error::text AS error, tags, run_at, worker_id,"
    " lease_until, progress, archived, idempotency_key, created_at, started_at, finished_at, state"
    " FROM tasks"
)


def state_of(rec: asyncpg.Record) -> TaskState:
    """The folded state of the task in a row of `SELECT_STATE` (what the projector folded last)."""
    blob = bytes(rec["state"])
    if blob[:1] == b"{":
        return _whole_state_dec.decode(blob)
    rest = _rest_dec.decode(blob)
    result, error = rec["result"], rec["error"]
    return TaskState(
        task_id=rec["id"],
        exists=True,
        tenant=rest.tenant,
        queue=rec["queue"],
        task_type=rec["type"],
        priority=rec["priority"],
        payload=msgspec.Raw(rec["payload"].encode()),
        tags=tuple(rec["tags"]),
        max_attempts=rec["max_attempts"],
        timeout_s=rec["timeout_s"],
        idempotency_key=rec["idempotency_key"],
        body_hash=rest.body_hash,
        status=TaskStatus(rec["status"]),
        paused_from=rest.paused_from,
        attempt=rec["attempts"],
        budget_base=rest.budget_base,
        dispatch=rest.dispatch,
        run_at=rec["run_at"],
        due_at=rest.due_at,
        lease_until=rec["lease_until"],
        worker_id=rec["worker_id"],
        progress=rec["progress"],
        result=None if result is None else msgspec.Raw(result.encode()),
        error=None if error is None else _error_dec.decode(error),
        archived=rec["archived"],
        version=rest.version,
    )


def _rest(s: TaskState) -> bytes:
    return _rest_enc.encode(
        _Rest(s.tenant, s.body_hash, s.paused_from, s.budget_base, s.dispatch, s.due_at, s.version)
    )


def _remembered_size(state: TaskState) -> int:
    return len(state.payload) + (0 if state.result is None else len(state.result))


def _params(tenant: str, row: _Row, stored: msgspec.Raw | None) -> tuple[Any, ...]:
    """The row's columns; no payload when it is the one the table holds (`stored`)."""
    s = row.state
    return (
        tenant, s.task_id, s.task_type, s.queue, s.priority, str(s.status), s.attempt,
        s.max_attempts, s.timeout_s, None if s.payload is stored else json_text(s.payload),
        None if s.result is None else json_text(s.result),
        None if s.error is None else _json.encode(s.error).decode(), _json.encode(s.tags).decode(), s.run_at,
        s.worker_id, s.lease_until, s.progress, s.archived, s.idempotency_key,
        row.created_at, row.updated_at, row.started_at, row.finished_at, row.last_seq,
        _rest(s),
    )  # fmt: skip


# ---- queries -------------------------------------------------------------------------------------

_COLUMNS = (
    "id, type, queue, priority, status, attempts, max_attempts, timeout_s, payload, result, error,"
    " tags, run_at, worker_id, lease_until, progress, archived, created_at, updated_at, started_at,"
    " finished_at, last_seq"
)


def to_resource(rec: asyncpg.Record) -> dict[str, Any]:
    out = dict(rec)
    for name in ("payload", "result"):
        value = out[name]
        if isinstance(value, (dict, list)) and depth(value) > MAX_DEPTH:
            # Stored by a worker before results were bounded (or not by Ordo's): the API's encoder
            # stops at 255 levels, and one such task would fail every page it is on.
            out[name] = {"ordo_not_shown": f"the {name} nests deeper than {MAX_DEPTH} levels"}
    out["timeout"] = out.pop("timeout_s")
    out["tags"] = list(out["tags"])
    out.setdefault("projection_errors", [])
    return out


async def get_task(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, task_id: str
) -> dict[str, Any] | None:
    rec = await conn.fetchrow(f"SELECT {_COLUMNS} FROM tasks WHERE tenant=$1 AND id=$2", tenant, task_id)
    if rec is None:
        return None
    out = to_resource(rec)
    out["projection_errors"] = await poison.for_aggregate(conn, tenant, task_id)
    return out


async def scheduled_before(
    conn: asyncpg.Connection | asyncpg.Pool, before: datetime, limit: int
) -> list[tuple[str, str]]:
    """(tenant, id) of scheduled tasks whose run_at is before `before`, oldest first: the timer
    sweep's candidates (workers/timer_sweep.py), checked against the log before anything is done.
    None before the projector first created the table (a fresh install starting up)."""
    try:
        rows = await conn.fetch(
            "SELECT tenant, id FROM tasks WHERE status = 'scheduled' AND run_at < $1"
            " ORDER BY run_at LIMIT $2",
            before,
            limit,
        )
    except asyncpg.UndefinedTableError:
        return []
    return [(r["tenant"], r["id"]) for r in rows]


async def _mark_skipped(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, items: list[dict[str, Any]]
) -> None:
    """Attach to each task of a page the events a read model skipped for it (usually none)."""
    if not items:
        return
    recs = await conn.fetch(
        "SELECT aggregate_id, projection, seq, event, error, at FROM projection_errors"
        " WHERE tenant=$1 AND family='task' AND aggregate_id = ANY($2::text[]) ORDER BY seq, projection",
        tenant,
        [item["id"] for item in items],
    )
    by_id = {item["id"]: item for item in items}
    for r in recs:
        entry = {k: r[k] for k in ("projection", "seq", "event", "error", "at")}
        by_id[r["aggregate_id"]]["projection_errors"].append(entry)


SORTS: dict[str, tuple[str, str]] = {
    # API name -> (column, direction): an allow-list, never a column name from the request.
    "-created_at": ("created_at", "DESC"),
    "created_at": ("created_at", "ASC"),
    "-updated_at": ("updated_at", "DESC"),
    "updated_at": ("updated_at", "ASC"),
}


def encode_cursor(created_at: datetime, task_id: str, sort: str = "-created_at") -> str:
    return cursors.encode_cursor(sort, created_at.isoformat(), task_id)


def decode_cursor(cursor: str, sort: str = "-created_at") -> tuple[datetime, str]:
    """Raises ValueError for a cursor this server did not issue (or issued for another sort)."""
    at, task_id = cursors.decode_cursor(cursor, sort, 2)
    return cursors.cursor_time(at), task_id


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_TERMINAL = frozenset(s.value for s in TERMINAL)


async def list_tasks(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
    task_type: str | None = None,
    queue: str | None = None,
    *,
    statuses: tuple[str, ...] = (),
    tag: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    updated_after: datetime | None = None,
    updated_before: datetime | None = None,
    search: str | None = None,
    archived: bool = False,
    sort: str = "-created_at",
    window: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page (`next_cursor` is None on the last). Every value is a bind parameter; `sort` is
    looked up in SORTS (KeyError for an unknown one). `search` matches id or type, case-insensitive.

    The conditions an index serves in the list's order (the tenant, the sort column's range and
    cursor, and one of status, type or queue when sorting by creation: an active status, else the
    type, the queue, a terminal status) drive the scan; any other condition is checked on at most
    `window` (default SCAN_WINDOW) rows of that scan per page. Such a page may hold fewer than
    `limit` tasks (none, even) and still have a `next_cursor`: the pages together are exactly the
    matching tasks in order."""
    column, direction = SORTS[sort]
    window = window or SCAN_WINDOW
    where = ["tenant=$1", "archived" if archived else "NOT archived"]
    checks: list[str] = []  # conditions no index of the scan serves: checked within the window
    args: list[Any] = [tenant]

    def bind(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if cursor is not None:
        at, task_id = decode_cursor(cursor, sort)
        op = "<" if direction == "DESC" else ">"
        where.append(f"({column}, id) {op} ({bind(at)}, {bind(task_id)})")
    all_statuses = sorted(set(statuses) | ({status} if status is not None else set()))
    # The scan is driven by the equality likely to match the fewest tasks: an active status (a small
    # set at any time), else the type, the queue, and last a terminal status (the bulk of a table).
    single = all_statuses[0] if len(all_statuses) == 1 else None
    active = single is not None and single not in _TERMINAL
    equalities: list[str] = []
    for col, value in (
        ("status", single if active else None),
        ("type", task_type),
        ("queue", queue),
        ("status", single if not active else None),
    ):
        if value is not None:
            equalities.append(f"{col} = {bind(value)}")
    # Each of status, type and queue has an index in creation order; by update time none has.
    indexed = 1 if column == "created_at" else 0
    where += equalities[:indexed]
    checks += equalities[indexed:]
    if tag is not None:
        checks.append(f"{bind(tag)} = ANY(tags)")
    ranges: tuple[tuple[str, str, datetime | None], ...] = (
        ("created_at", ">=", created_after),
        ("created_at", "<", created_before),
        ("updated_at", ">=", updated_after),
        ("updated_at", "<", updated_before),
    )
    for col, op, moment in ranges:
        if moment is not None:
            (where if col == column else checks).append(f"{col} {op} {bind(moment)}")
    if search:
        pattern = bind(_like(search))
        checks.append(f"(id ILIKE {pattern} OR type ILIKE {pattern})")
    merged = len(all_statuses) > 1 and column == "created_at" and not checks and not equalities
    if len(all_statuses) > 1 and not merged:
        checks.append(f"status = ANY({bind(all_statuses)}::text[])")
    order = f"ORDER BY {column} {direction}, id {direction}"
    end = None
    if checks:
        rows = f"FROM tasks WHERE {' AND '.join(where)}"
        recs, end = await windowed_page(
            conn, _COLUMNS, rows, order, checks, args, limit, window, f"{column}, id"
        )
    elif merged:
        # Several statuses: one index scan per status (tasks_status_newest), each stopping after a
        # page, merged here; `status = ANY(...)` would read every task of the statuses and sort them.
        page = f"{order} LIMIT {bind(limit + 1)}"
        wanted = bind(all_statuses)
        recs = await conn.fetch(
            f"SELECT {_COLUMNS} FROM unnest({wanted}::text[]) AS s(wanted) CROSS JOIN LATERAL"
            f" (SELECT {_COLUMNS} FROM tasks WHERE {' AND '.join(where)} AND status = s.wanted {page}) t"
            f" {page}",
            *args,
        )
    else:
        recs = await conn.fetch(
            f"SELECT {_COLUMNS} FROM tasks WHERE {' AND '.join(where)} {order} LIMIT {bind(limit + 1)}", *args
        )
    items = [to_resource(r) for r in recs[:limit]]
    await _mark_skipped(conn, tenant, items)
    last = recs[limit - 1] if len(recs) > limit else end
    return items, (encode_cursor(last[column], last["id"], sort) if last is not None else None)
