"""A task the projector does not remember is read back from its row (decision 44): the row's columns
and the few fields only the `state` column keeps give back exactly the state the projector folded.

Each event below is applied on its own, without the projector's memory, so every step reads the task
back from its row before it folds the next event; after every step the row must give the state that
folding the events in Python gives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from ordo.domain import events as ev
from ordo.domain.state import TaskState, evolve, initial
from ordo.infra.event_store import StoredEvent
from ordo.infra.pg import connect
from ordo.projections import tasks
from ordo.projections.schema import migrate

T0 = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


LIVES: dict[str, list[ev.Event]] = {
    "rich": [
        ev.Submitted(
            task_type="report.build",
            queue="reports",
            tenant="acme",
            priority=7,
            payload=msgspec.Raw(b'{"a": [1, "\\u00e9", null], "b": {"c": 2.5}}'),
            max_attempts=4,
            timeout_s=12.5,
            tags=("x", "with space", "ünï"),
            idempotency_key="key-1",
            body_hash="abc123",
        ),
        ev.Scheduled(run_at=_at(60)),
        ev.Queued(),
        ev.Paused(reason="ops"),
        ev.Resumed(),
        ev.AttemptStarted(attempt=1, worker_id="w-1", lease_until=_at(90), dispatch=1),
        ev.Progressed(attempt=1, pct=0.5, note="half"),
        ev.LeaseExtended(attempt=1, lease_until=_at(120)),
        ev.AttemptFailed(
            attempt=1, error=ev.ErrorInfo(kind="ValueError", message="bad\nline", traceback="tb")
        ),
        ev.RetryScheduled(attempt=1, retry_at=_at(130.000001)),
        ev.Queued(reason="retry"),
        ev.AttemptStarted(attempt=2, worker_id="w-2", lease_until=_at(200), dispatch=2),
        ev.Succeeded(attempt=2, result=msgspec.Raw(b'{"ok": true, "n": 1e-7}')),
        ev.Replayed(reason="again"),
        ev.Archived(),
    ],
    # The tenant in the event is not the subject's: the row keeps the event's.
    "forged-tenant": [
        ev.Submitted(task_type="demo.echo", queue="default", tenant="someone-else"),
        ev.Paused(),
        ev.Updated(payload=msgspec.Raw(b"[1, 2]"), priority=1, run_at=_at(5)),
        ev.Resumed(),
        ev.CancelRequested(),
        ev.Cancelled(reason="by hand"),
    ],
    "dead": [
        ev.Submitted(task_type="demo.fail", queue="default", tenant="acme", max_attempts=1),
        ev.AttemptStarted(attempt=1, worker_id="w-9", lease_until=_at(30), dispatch=1),
        ev.AttemptTimedOut(attempt=1, reason="lease_expired"),
        ev.Failed(attempt=1, reason="no attempts left"),
        ev.DeadLettered(reason="no attempts left"),
    ],
}


def _stored(seq: int, task_id: str, event: ev.Event, at: datetime) -> StoredEvent:
    name = ev.event_name(event)
    subject = f"ordo.evt.acme.default.n.{task_id}.{name}"
    return StoredEvent(seq, subject, "acme", "default", task_id, name, event, at)  # type: ignore[arg-type]


async def _row_state(conn: asyncpg.Connection, task_id: str) -> TaskState:
    rec = await conn.fetchrow(tasks.SELECT_STATE + " WHERE tenant='acme' AND id=$1", task_id)
    assert rec is not None
    return tasks.state_of(rec)


async def test_every_state_the_projector_folds_comes_back_from_the_row(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        await migrate(conn)
        seq = 0
        for task_id, life in LIVES.items():
            folded = initial(task_id)
            for i, event in enumerate(life):
                seq += 1
                async with conn.transaction():  # no memory: the row is read back first
                    await tasks.apply(conn, [_stored(seq, task_id, event, _at(i))])
                folded = evolve(folded, event)
                assert await _row_state(conn, task_id) == folded, (task_id, ev.event_name(event))
    finally:
        await conn.close()


async def test_a_row_written_with_the_whole_state_is_read_as_written(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        await migrate(conn)
        submitted = LIVES["rich"][0]
        async with conn.transaction():
            await tasks.apply(conn, [_stored(1, "old", submitted, T0)])
        whole = evolve(initial("old"), submitted)
        await conn.execute("UPDATE tasks SET state=$1 WHERE id='old'", msgspec.json.encode(whole))
        assert await _row_state(conn, "old") == whole
    finally:
        await conn.close()
