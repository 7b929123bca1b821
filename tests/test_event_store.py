"""The event store's optimistic concurrency and the projection's idempotence, on real servers."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from ordo.domain import events as ev
from ordo.domain.commands import SubmitTask
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import ConcurrencyError, EventStore
from ordo.infra.ids import new_task_id
from ordo.infra.settings import Settings
from ordo.projections.runner import ProjectionRunner
from tests.helpers import eventually


async def _submit(handler: CommandHandler, settings: Settings) -> str:
    task_id = new_task_id()
    await handler.execute(
        settings.tenant,
        SubmitTask(
            task_id=task_id,
            tenant=settings.tenant,
            queue="default",
            task_type="demo.echo",
            now=datetime.now(UTC),
            payload=msgspec.Raw(b'{"x":1}'),
        ),
    )
    return task_id


async def test_stale_expected_sequence_is_a_conflict_even_for_another_event_type(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    store = EventStore(nc)
    task_id = await _submit(handler, settings)
    history, last = await store.load(settings.tenant, task_id)
    assert [h.name for h in history] == ["submitted"]
    # A first writer moves the task on.
    await store.append(settings.tenant, "default", task_id, [ev.Paused()], last)
    # Same event type, stale expectation.
    with pytest.raises(ConcurrencyError):
        await store.append(settings.tenant, "default", task_id, [ev.Paused()], last)
    # A different event type (another subject token) with the stale expectation conflicts too.
    with pytest.raises(ConcurrencyError):
        await store.append(settings.tenant, "default", task_id, [ev.Cancelled(reason="x")], last)
    # Expecting "no events yet" for an existing task conflicts.
    with pytest.raises(ConcurrencyError):
        await store.append(settings.tenant, "default", task_id, [ev.Resumed()], 0)
    history, _ = await store.load(settings.tenant, task_id)
    assert [h.name for h in history] == ["submitted", "paused"]


async def test_an_atomic_batch_with_a_stale_expectation_stores_nothing(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    store = EventStore(nc)
    task_id = await _submit(handler, settings)
    before = (await nc.jetstream().stream_info("ORDO_EVENTS")).state.last_seq
    with pytest.raises(ConcurrencyError):
        await store.append(settings.tenant, "default", task_id, [ev.Paused(), ev.Resumed()], 0)
    after = (await nc.jetstream().stream_info("ORDO_EVENTS")).state.last_seq
    assert after == before


async def test_projection_skips_an_already_applied_event(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    task_id = await _submit(handler, settings)
    runner = ProjectionRunner(nc, settings.database_url)
    import asyncio

    run = asyncio.create_task(runner.run())
    conn = await asyncpg.connect(settings.database_url)
    try:

        async def projected() -> asyncpg.Record | None:
            try:
                return await conn.fetchrow(
                    "SELECT status, last_seq, updated_at FROM tasks WHERE tenant=$1 AND id=$2",
                    settings.tenant,
                    task_id,
                )
            except asyncpg.UndefinedTableError:
                return None

        row = await eventually(projected, what="task projected")
        events_before = await conn.fetch("SELECT * FROM task_events WHERE task_id=$1", task_id)
        # Redeliver the same stored events to the projection: nothing changes.
        history, _ = await EventStore(nc).load(settings.tenant, task_id)
        await runner._apply(conn, [("task", h) for h in history])  # noqa: SLF001 - the redelivery path under test
        assert await projected() == row
        events_after = await conn.fetch("SELECT * FROM task_events WHERE task_id=$1", task_id)
        assert events_after == events_before
    finally:
        await conn.close()
        await runner.shutdown()
        await run
