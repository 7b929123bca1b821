"""Command paths under faults (audit F6): a submit whose JetStream reply was lost, a batch submit
that fails for one of its tasks.

The event store under test is the real one on a real nats-server; only the reply is lost: the
message (or atomic batch) is stored, then its reply is dropped as if it had timed out, so the store
retries with the same messages exactly as it would after a real lost reply.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import nats.errors
import pytest
from nats.aio.client import Client as NATS

from ordo.domain.commands import SubmitTask
from ordo.domain.events import Scheduled, Submitted
from ordo.domain.status import TaskStatus
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore, EventStoreUnavailable
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers


class _LostReplies(EventStore):
    """Stores every append for real (one message or an atomic batch); the first `lose` replies are lost."""

    def __init__(self, nc: NATS, lose: int) -> None:
        super().__init__(nc)
        self.lose = lose

    async def _publish_batch(self, msgs: list[tuple[str, bytes, dict[str, str]]]) -> int:
        seq = await super()._publish_batch(msgs)
        if self.lose > 0:
            self.lose -= 1
            raise nats.errors.TimeoutError
        return seq

    async def _publish_one(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        seq = await super()._publish_one(subject, data, headers)
        if self.lose > 0:
            self.lose -= 1
            raise nats.errors.TimeoutError
        return seq

    async def _publish_singles(
        self, msgs: list[tuple[str, bytes, dict[str, str]]]
    ) -> list[bytes | nats.errors.Error]:
        replies = await super()._publish_singles(msgs)  # every message stored
        out: list[bytes | nats.errors.Error] = []
        for reply in replies:
            if self.lose > 0 and isinstance(reply, bytes):
                self.lose -= 1
                out.append(nats.errors.TimeoutError())
            else:
                out.append(reply)
        return out


def _submit(tenant: str, **changes: object) -> SubmitTask:
    fields: dict[str, object] = {
        "task_id": uuid.uuid4().hex,
        "tenant": tenant,
        "queue": "default",
        "task_type": "demo.echo",
        "now": datetime.now(UTC),
        **changes,
    }
    return SubmitTask(**fields)  # type: ignore[arg-type]


async def _submitted(store: EventStore, tenant: str, task_id: str) -> list[str]:
    history, _ = await store.load(tenant, task_id)
    return [e.name for e in history]


async def test_a_submit_whose_reply_was_lost_answers_created(nc: NATS, settings: Settings) -> None:
    tenant = settings.tenant
    store = _LostReplies(nc, lose=1)
    handler = CommandHandler(store, Timers(nc, settings.timer_lead_s))
    command = _submit(tenant)
    out = await handler.execute(tenant, command)
    assert store.lose == 0, "the reply was lost once"
    assert [type(e) for e in out.events] == [Submitted], "answered as created (202), not 409"
    assert out.state.status is TaskStatus.QUEUED and out.seqs and out.last_seq >= out.seqs[-1]
    assert await _submitted(store, tenant, command.task_id) == ["submitted"], "stored once"


async def test_a_delayed_submit_whose_reply_was_lost_answers_created(nc: NATS, settings: Settings) -> None:
    tenant = settings.tenant
    store = _LostReplies(nc, lose=1)
    handler = CommandHandler(store, Timers(nc, settings.timer_lead_s))
    command = _submit(tenant, run_at=datetime.now(UTC) + timedelta(hours=1))
    out = await handler.execute(tenant, command)
    assert [type(e) for e in out.events] == [Submitted, Scheduled]
    assert out.state.status is TaskStatus.SCHEDULED
    assert await _submitted(store, tenant, command.task_id) == ["submitted", "scheduled"]


async def test_a_batch_whose_reply_was_lost_reports_every_task_created(nc: NATS, settings: Settings) -> None:
    tenant = settings.tenant
    store = _LostReplies(nc, lose=1)
    handler = CommandHandler(store, Timers(nc, settings.timer_lead_s))
    commands = [_submit(tenant) for _ in range(3)]
    outcomes = await handler.submit_many(tenant, commands)
    assert store.lose == 0
    assert [bool(o.events) for o in outcomes] == [True] * 3
    for command in commands:
        assert await _submitted(store, tenant, command.task_id) == ["submitted"]


async def test_another_task_with_the_same_id_is_still_a_conflict(nc: NATS, settings: Settings) -> None:
    """Only the command's own write counts as created: other content under the id stays a 409."""
    from ordo.domain.errors import TaskAlreadyExists

    tenant = settings.tenant
    handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
    first = _submit(tenant)
    await handler.execute(tenant, first)
    other = _submit(tenant, task_id=first.task_id, task_type="demo.other")
    try:
        await handler.execute(tenant, other)
    except TaskAlreadyExists:
        return
    raise AssertionError("a different task under an existing id must be refused")


def _plain(nc: NATS, settings: Settings) -> tuple[EventStore, CommandHandler]:
    store = EventStore(nc)
    return store, CommandHandler(store, Timers(nc, settings.timer_lead_s))


class _FailsFor(EventStore):
    """Refuses (as an outage would) the one-message appends of the tasks named, storing nothing."""

    def __init__(self, nc: NATS, task_ids: set[str]) -> None:
        super().__init__(nc)
        self.task_ids = task_ids

    def _failing(self, subject: str) -> bool:
        return any(subject.endswith(f".{task_id}.submitted") for task_id in self.task_ids)

    async def _publish_one(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        if self._failing(subject):
            raise EventStoreUnavailable("injected: no reply from JetStream")
        return await super()._publish_one(subject, data, headers)

    async def _publish_singles(
        self, msgs: list[tuple[str, bytes, dict[str, str]]]
    ) -> list[bytes | nats.errors.Error]:
        # The named tasks' messages are not sent (as if no server answered); they are retried one by
        # one through _publish_one, which refuses them.
        sent = [m for m in msgs if not self._failing(m[0])]
        replies = iter(await super()._publish_singles(sent))
        return [nats.errors.NoRespondersError() if self._failing(m[0]) else next(replies) for m in msgs]


async def test_a_batch_that_fails_for_one_task_keeps_the_others_and_a_retry_reports_all(
    nc: NATS, settings: Settings
) -> None:
    tenant = settings.tenant
    commands = [_submit(tenant) for _ in range(6)]
    failing = _FailsFor(nc, {commands[4].task_id})
    with pytest.raises(EventStoreUnavailable):  # the caller hears of it (a 503, not a silent loss)
        await CommandHandler(failing, Timers(nc, settings.timer_lead_s)).submit_many(tenant, commands)
    stored = [await _submitted(failing, tenant, c.task_id) for c in commands]
    assert stored == [["submitted"]] * 4 + [[]] + [["submitted"]], "the others are stored, each by itself"
    retry = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
    outcomes = await retry.submit_many(tenant, commands)  # the client sends the same request again
    assert [bool(o.events) for o in outcomes] == [True] * 6, "every task reported, as created"
    for command in commands:
        assert await _submitted(failing, tenant, command.task_id) == ["submitted"], "none twice"


async def test_a_batch_with_a_delayed_task_is_one_atomic_batch(nc: NATS, settings: Settings) -> None:
    """A delayed submit is two events that land together: its chunk stays one atomic batch."""
    tenant = settings.tenant
    commands = [
        _submit(tenant),
        _submit(tenant, run_at=datetime.now(UTC) + timedelta(hours=1)),
        _submit(tenant),
    ]
    failing = _FailsFor(nc, {commands[0].task_id})  # single publishes fail: a batch does not use them
    outcomes = await CommandHandler(failing, Timers(nc, settings.timer_lead_s)).submit_many(tenant, commands)
    assert [o.state.status for o in outcomes] == [TaskStatus.QUEUED, TaskStatus.SCHEDULED, TaskStatus.QUEUED]
    assert await _submitted(failing, tenant, commands[1].task_id) == ["submitted", "scheduled"]


@pytest.mark.parametrize("atomic", [False, True])
async def test_a_batch_meeting_a_stored_task_stores_every_other_once(
    nc: NATS, settings: Settings, atomic: bool
) -> None:
    """Plain: each task is its own message, the one that exists conflicts alone. Atomic: the server
    refuses the whole batch, the task that exists is answered as it is (our own, as after a lost
    answer) and the others go out again as one atomic batch (consecutive sequences)."""
    tenant = settings.tenant
    store, handler = _plain(nc, settings)
    commands = [_submit(tenant) for _ in range(4)]
    await handler.execute(tenant, commands[1])
    outcomes = await handler.submit_many(tenant, commands, atomic=atomic)
    assert [o.state.status for o in outcomes] == [TaskStatus.QUEUED] * 4
    assert all(o.events and o.last_seq >= o.seqs[-1] for o in outcomes)
    if atomic:
        fresh = sorted(o.seqs[0] for i, o in enumerate(outcomes) if i != 1)
        assert fresh == list(range(fresh[0], fresh[0] + 3)), "the three others in one batch"
    for command in commands:
        assert await _submitted(store, tenant, command.task_id) == ["submitted"], "stored once"


async def test_an_atomic_batch_that_clashes_with_another_task_stores_nothing(
    nc: NATS, settings: Settings
) -> None:
    from ordo.domain.errors import TaskAlreadyExists

    tenant = settings.tenant
    store, handler = _plain(nc, settings)
    commands = [_submit(tenant) for _ in range(3)]
    await handler.execute(tenant, _submit(tenant, task_id=commands[2].task_id, task_type="demo.other"))
    with pytest.raises(TaskAlreadyExists):  # another task under one of the ids refuses the batch
        await handler.submit_many(tenant, commands, atomic=True)
    assert [await _submitted(store, tenant, c.task_id) for c in commands[:2]] == [[], []], "none stored"


async def test_an_atomic_batch_beyond_one_atomic_batch_is_refused_before_any_append(
    nc: NATS, settings: Settings
) -> None:
    from ordo.infra.command_handler import AtomicBatchTooLarge
    from ordo.infra.event_store import MAX_ATOMIC_BATCH

    tenant = settings.tenant
    store, handler = _plain(nc, settings)
    later = datetime.now(UTC) + timedelta(hours=1)
    commands = [_submit(tenant, run_at=later) for _ in range(MAX_ATOMIC_BATCH // 2)] + [_submit(tenant)]
    with pytest.raises(AtomicBatchTooLarge) as refused:  # 1,001 events cannot be one atomic batch
        await handler.submit_many(tenant, commands, atomic=True)
    assert refused.value.messages == MAX_ATOMIC_BATCH + 1
    assert await _submitted(store, tenant, commands[0].task_id) == []


async def test_where_every_write_is_fsynced_a_plain_batch_is_one_atomic_batch(
    nc: NATS, settings: Settings
) -> None:
    """With `sync_interval: always` each single message is an fsync of its own: `ORDO_SYNC_ALWAYS`
    makes the processes send a batch submit as one atomic batch (one fsync) instead."""
    from ordo.infra import wiring

    assert wiring.command_handler(nc, Settings(sync_always=True)).pipelined_batches is False
    assert wiring.command_handler(nc, Settings()).pipelined_batches is True
    tenant = settings.tenant
    commands = [_submit(tenant) for _ in range(3)]
    failing = _FailsFor(nc, {c.task_id for c in commands})  # a single publish of any of them fails
    handler = CommandHandler(failing, Timers(nc, settings.timer_lead_s), pipelined_batches=False)
    seqs = [o.seqs[0] for o in await handler.submit_many(tenant, commands)]
    assert seqs == list(range(seqs[0], seqs[0] + 3)), "one batch, in order"
