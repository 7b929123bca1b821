"""The runnable event is its own dispatch, and a worker starts it without loading the task
(docs/decisions.md 27): no direct get on the happy path, one message per submit, and every race
or lost reply on the fast path still ends with exactly one start per dispatch and one completion."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ordo.domain.commands import CancelTask, PauseTask, ResumeTask, UpdateTask
from ordo.domain.events import Event, event_name
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.dispatch import read_dispatch
from ordo.infra.event_store import EventStore, EventStoreUnavailable, Metadata, Runnable
from ordo.infra.nats_conn import connect
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.workers import Worker
from ordo.workers.demo import registry as demo_registry
from tests.helpers import eventually
from tests.test_worker_points import history_of, names, running, submit, until


@pytest.fixture
def queue() -> str:
    return "q" + uuid.uuid4().hex[:10]


class _DirectGets:
    """Counts the direct-get requests (loads, last-by-subject reads) that name given tasks."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    async def on_request(self, msg: Msg) -> None:
        try:
            body = json.loads(msg.data)
        except ValueError:
            return
        self.requests.append(str(body.get("next_by_subj") or body.get("last_by_subj") or ""))

    def naming(self, task_ids: list[str]) -> list[str]:
        return [r for r in self.requests if any(t in r for t in task_ids)]


async def test_no_direct_get_names_a_task_between_submit_and_success(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    """The strict count: nothing reads the task while it is submitted, started and completed."""
    spy = _DirectGets()
    watcher = await connect(settings, name="direct-get-spy")
    done: list[str] = []

    async def on_event(msg: Msg) -> None:
        if msg.subject.endswith(".succeeded"):
            done.append(sj.parse_event_subject(msg.subject)[2])

    try:
        await watcher.subscribe(f"{sj.DIRECT_GET_API}.>", cb=spy.on_request)
        await watcher.subscribe(sj.events_named_filter("succeeded"), cb=on_event)
        await watcher.flush()
        async with running(Worker(nc, handler, demo_registry, settings, queues=(queue,))):
            task_ids = [await submit(handler, settings, queue, "demo.echo", i) for i in range(30)]

            async def all_done() -> bool:
                return set(task_ids) <= set(done)

            await eventually(all_done, timeout=30, what="30 tasks succeeded")
            await watcher.flush()
            assert spy.naming(task_ids) == []
    finally:
        await watcher.close()
    for task_id in task_ids:  # (loads from here on are the test's own)
        history = await history_of(handler, settings, task_id)
        assert names(history) == ["submitted", "attempt_started", "succeeded"]
        # the submit is one message, and it is the dispatch: band 1 holds priority 5
        assert history[0].subject == sj.event_subject(settings.tenant, queue, task_id, "submitted", 1)
        assert [sj.dispatch_band(e.subject) for e in history[1:]] == [None, None]


async def test_a_runnable_event_carries_what_the_worker_starts_from(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    task_id = await submit(handler, settings, queue, "demo.echo", {"x": 1}, priority=1)
    await handler.execute(settings.tenant, PauseTask(task_id=task_id))
    await handler.execute(settings.tenant, ResumeTask(task_id=task_id))
    history = await history_of(handler, settings, task_id)
    assert [(e.name, sj.dispatch_band(e.subject)) for e in history] == [
        ("submitted", 0),
        ("paused", None),
        ("resumed", 0),
    ]
    raw = await nc.jetstream().get_msg(sj.EVENTS_STREAM, history[-1].seq)
    dispatch = read_dispatch(raw.subject or "", raw.headers, raw.data or b"", history[-1].seq)
    assert dispatch.state is not None
    state, _, _ = await handler.load(settings.tenant, task_id)
    assert dispatch.state == state  # the snapshot is the state after the event, exactly


class _LosesReplies(EventStore):
    """Stores an append, then reports its reply lost, for the named event (once each)."""

    def __init__(self, nc: NATS, lose: set[str]) -> None:
        super().__init__(nc)
        self.lose = set(lose)
        self.lost: list[str] = []

    async def append(
        self,
        tenant: str,
        queue: str,
        task_id: str,
        events: list[Event],
        expected_seq: int,
        runnable: Runnable | None = None,
        meta: Metadata | None = None,
    ) -> list[int]:
        seqs = await super().append(tenant, queue, task_id, events, expected_seq, runnable, meta)
        name = event_name(events[0])
        if name in self.lose:
            self.lose.discard(name)
            self.lost.append(name)
            raise EventStoreUnavailable(f"reply of {name} lost (injected)")
        return seqs


@pytest.mark.parametrize("lost", ["attempt_started", "succeeded"])
async def test_a_lost_reply_on_the_fast_path_loses_nothing_and_completes_once(
    nc: NATS, settings: Settings, queue: str, lost: str
) -> None:
    store = _LosesReplies(nc, {lost})
    handler = CommandHandler(store, Timers(nc, settings.timer_lead_s))
    task_id = await submit(handler, settings, queue, "demo.echo", "once")
    async with running(Worker(nc, handler, demo_registry, settings, queues=(queue,))):
        history = await until(handler, settings, task_id, "succeeded", within=30)
    assert store.lost == [lost]
    got = names(history)
    assert got.count("succeeded") == 1, got
    assert got[-1] == "succeeded", got


async def _held(handler: CommandHandler, settings: Settings, queue: str, payload: Any) -> str:
    """A queued task whose runnable event no worker has taken yet."""
    return await submit(handler, settings, queue, "demo.echo", payload)


async def test_a_cancel_before_the_start_wins_and_the_dispatch_is_skipped(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    task_id = await _held(handler, settings, queue, 1)
    await handler.execute(settings.tenant, CancelTask(task_id=task_id))
    marker = await submit(handler, settings, queue, "demo.echo", "after")
    async with running(Worker(nc, handler, demo_registry, settings, queues=(queue,))):
        await until(handler, settings, marker, "succeeded")
        info = await nc.jetstream().consumer_info(sj.EVENTS_STREAM, sj.work_consumer(queue, 1))
    assert names(await history_of(handler, settings, task_id)) == ["submitted", "cancelled"]
    assert info.num_ack_pending == 0


async def test_an_update_before_the_start_runs_the_new_payload_once(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    task_id = await _held(handler, settings, queue, "old")
    new = msgspec.Raw(msgspec.json.encode("new"))
    await handler.execute(settings.tenant, UpdateTask(task_id=task_id, now=datetime.now(UTC), payload=new))
    async with running(Worker(nc, handler, demo_registry, settings, queues=(queue,))):
        history = await until(handler, settings, task_id, "succeeded")
    got = names(history)
    assert got == ["submitted", "updated", "attempt_started", "succeeded"], got
    state, _, _ = await handler.load(settings.tenant, task_id)
    assert state.result is not None and b"new" in bytes(state.result)


async def test_a_pause_before_the_start_holds_it_and_the_resume_runs_it_once(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    task_id = await _held(handler, settings, queue, 1)
    await handler.execute(settings.tenant, PauseTask(task_id=task_id))
    marker = await submit(handler, settings, queue, "demo.echo", "after")
    async with running(Worker(nc, handler, demo_registry, settings, queues=(queue,))):
        await until(handler, settings, marker, "succeeded")
        assert names(await history_of(handler, settings, task_id)) == ["submitted", "paused"]
        await handler.execute(settings.tenant, ResumeTask(task_id=task_id))
        history = await until(handler, settings, task_id, "succeeded")
    assert names(history) == ["submitted", "paused", "resumed", "attempt_started", "succeeded"]
