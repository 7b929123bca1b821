"""Acceptance points 3, 4, 6, 8 and 9 of the worker runtime, plus poison messages and the registry.

In-process workers (Worker objects in the test loop) unless the point asks for processes (8).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from ordo.domain.commands import (
    CancelTask,
    CompleteAttempt,
    ConfirmCancelled,
    ReplayTask,
    StartAttempt,
    SubmitTask,
)
from ordo.domain.errors import DomainError
from ordo.domain.events import AttemptFailed, AttemptStarted, AttemptTimedOut, RetryScheduled
from ordo.domain.status import TaskStatus
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import StoredEvent
from ordo.infra.ids import new_task_id
from ordo.infra.settings import Settings
from ordo.workers import Worker
from ordo.workers.demo import registry as demo_registry
from ordo.workers.scheduler import Scheduler
from tests.conftest import System
from tests.helpers import eventually
from tests.worker_procs import WorkerProc


@pytest.fixture
def queue() -> str:
    return "q" + uuid.uuid4().hex[:10]


@contextlib.asynccontextmanager
async def running(*services: Worker | Scheduler) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.run()) for s in services]
    try:
        yield
    finally:
        for s in services:
            await asyncio.wait_for(s.shutdown(), 30)  # a hang fails here, named, not at the test's limit
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def submit(
    handler: CommandHandler, settings: Settings, queue: str, task_type: str, payload: Any = None, **kw: Any
) -> str:
    task_id = new_task_id()
    await handler.execute(
        settings.tenant,
        SubmitTask(
            task_id=task_id,
            tenant=settings.tenant,
            queue=queue,
            task_type=task_type,
            now=datetime.now(UTC),
            payload=msgspec.Raw(msgspec.json.encode(payload)),
            **kw,
        ),
    )
    return task_id


async def history_of(handler: CommandHandler, settings: Settings, task_id: str) -> list[StoredEvent]:
    _, history, _ = await handler.load(settings.tenant, task_id)
    return history


async def until(
    handler: CommandHandler, settings: Settings, task_id: str, *names: str, within: float = 30
) -> list[StoredEvent]:
    async def probe() -> list[StoredEvent] | None:
        h = await history_of(handler, settings, task_id)
        got = [e.name for e in h]
        return h if all(n in got for n in names) else None

    found = await eventually(probe, timeout=within, what=f"{task_id}: {names}")
    assert found is not None
    return found


def names(history: list[StoredEvent]) -> list[str]:
    return [e.name for e in history]


@pytest.mark.timeout(60)
async def test_a_task_five_times_longer_than_the_ack_deadline_is_never_redelivered(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    """Point 3."""
    seconds = 5 * settings.ack_wait_s
    task_id = await submit(handler, settings, queue, "demo.sleep", {"seconds": seconds})
    async with running(Worker(nc, handler, demo_registry, settings, queues=(queue,))):
        history = await until(handler, settings, task_id, "succeeded", within=seconds + 20)
        info = await nc.jetstream().consumer_info(sj.EVENTS_STREAM, sj.work_consumer(queue, 1))
    got = names(history)
    assert got.count("attempt_started") == 1 and "attempt_timed_out" not in got
    assert got.count("lease_extended") >= seconds / settings.lease_extend_every_s * 0.6
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


@pytest.mark.timeout(90)
async def test_demo_fail_three_attempts_with_backoff_then_dead_letter_and_replay(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    """Point 4: 3 attempts with backoff gaps, failed + dead_lettered, replay, no message held."""
    settings = settings.with_(backoff_base_s=1.0, backoff_max_s=4.0)
    worker = Worker(nc, handler, demo_registry, settings, queues=(queue,))
    js = nc.jetstream()
    held: list[int] = []
    async with running(worker, Scheduler(nc, handler)):
        others = [await submit(handler, settings, queue, "demo.echo", i) for i in range(10)]
        for t in others:
            await until(handler, settings, t, "succeeded")
        failing = await submit(handler, settings, queue, "demo.fail", max_attempts=3)
        # While the task waits in backoff, no work message is held for it: sample the work
        # consumer through every backoff wait until the task is dead-lettered.

        async def sampled_until_dead() -> bool:
            s, _, _ = await handler.load(settings.tenant, failing)
            if s.status is TaskStatus.RETRYING:
                info = await js.consumer_info(sj.EVENTS_STREAM, sj.work_consumer(queue, 1))
                held.append(info.num_ack_pending)
            return s.status is TaskStatus.FAILED

        await eventually(sampled_until_dead, timeout=30, interval=0.1, what="failed after backoff")
        history = await until(handler, settings, failing, "dead_lettered", within=30)
        for t in others:
            assert names(await until(handler, settings, t, "succeeded"))[-1] == "succeeded"
        # Replay: same id, `replayed`, a fresh budget, attempt numbers continue (4, 5, 6).
        await handler.execute(settings.tenant, ReplayTask(task_id=failing, reason="test"))

        async def restarted() -> list[StoredEvent] | None:
            h = await history_of(handler, settings, failing)
            return h if names(h).count("attempt_started") >= 4 else None

        replayed = await eventually(restarted, timeout=30, what="replayed task runs again")
        assert replayed is not None
        after = replayed[len(history) :]
        assert after[0].name == "replayed"
        started = [e.event.attempt for e in after if isinstance(e.event, AttemptStarted)]
        assert started[:1] == [4]
    got = names(history)
    assert got.count("attempt_started") == 3 and got.count("attempt_failed") == 3
    assert got[-2:] == ["failed", "dead_lettered"]
    # Each failure records the error and the time of the next attempt; the next attempt starts
    # no earlier than that, and the delays follow the backoff (base * 2**(n-1), +/-20% jitter).
    fails = [e for e in history if isinstance(e.event, AttemptFailed)]
    assert all(f.event.error.kind == "RuntimeError" for f in fails)  # type: ignore[union-attr]
    retries = [e for e in history if isinstance(e.event, RetryScheduled)]
    starts = [e for e in history if isinstance(e.event, AttemptStarted)]
    gaps = []
    for n, (retry, nxt) in enumerate(zip(retries, starts[1:], strict=True), start=1):
        assert isinstance(retry.event, RetryScheduled)
        planned = (retry.event.retry_at - retry.stored_at).total_seconds()
        expected = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (n - 1))
        assert expected * 0.75 <= planned <= expected * 1.25, (n, planned)
        actual = (nxt.stored_at - retry.stored_at).total_seconds()
        assert actual >= planned - 0.05, (n, actual, planned)
        gaps.append(actual)
    gaps_s = [round(g, 2) for g in gaps]
    print(f"\nbackoff gaps: {gaps_s} s; ack pending in backoff: max {max(held)} of {len(held)} samples")
    assert len(held) >= 5 and max(held) <= 1  # near 0: nothing is held on a timer


async def _not(probe: Any) -> bool:
    return not await probe


async def test_twenty_concurrent_cancel_and_complete_give_one_terminal_event(
    handler: CommandHandler, settings: Settings, queue: str
) -> None:
    """Point 6."""
    terminal = {"succeeded", "failed", "cancelled"}
    outcomes: list[str] = []
    for _ in range(5):
        task_id = await submit(handler, settings, queue, "demo.echo")
        state, _, _ = await handler.load(settings.tenant, task_id)
        now = datetime.now(UTC)
        await handler.execute(
            settings.tenant,
            StartAttempt(
                task_id=task_id,
                dispatch=state.dispatch,
                worker_id="w",
                now=now,
                lease_until=now + timedelta(seconds=60),
            ),
        )
        commands: list[Any] = []
        for i in range(20):
            if i % 3 == 0:
                commands.append(CancelTask(task_id=task_id, reason=f"c{i}"))
            elif i % 3 == 1:
                commands.append(CompleteAttempt(task_id=task_id, attempt=1, worker_id="w"))
            else:
                commands.append(ConfirmCancelled(task_id=task_id, attempt=1, worker_id="w"))
        results = await asyncio.gather(
            *(handler.execute(settings.tenant, c) for c in commands), return_exceptions=True
        )
        assert all(not isinstance(r, Exception) or isinstance(r, DomainError) for r in results), results
        got = names(await history_of(handler, settings, task_id))
        ends = [n for n in got if n in terminal]
        assert len(ends) == 1, got
        outcomes.append(ends[0])
    print(f"\nwinners of 5 races of 20 concurrent cancel/complete/confirm: {outcomes}")


@pytest.mark.timeout(60)
async def test_handler_timeout_fails_the_attempt_as_timed_out(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    """Point 9: timeout."""
    task_id = await submit(
        handler, settings, queue, "demo.sleep", {"seconds": 30}, timeout_s=0.5, max_attempts=1
    )
    async with running(Worker(nc, handler, demo_registry, settings, queues=(queue,))):
        history = await until(handler, settings, task_id, "dead_lettered", within=20)
    timed_out = [e.event for e in history if isinstance(e.event, AttemptTimedOut)]
    assert [(t.attempt, t.reason) for t in timed_out] == [(1, "handler_timeout")]
    got = [n for n in names(history) if n != "lease_extended"]
    assert got == ["submitted", "attempt_started", "attempt_timed_out", "failed", "dead_lettered"]


@pytest.mark.timeout(60)
async def test_cancel_a_queued_and_a_scheduled_task_they_never_run(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    """Point 9: cancel queued (the running case is test_worker_runtime's cancel tests)."""
    queued = await submit(handler, settings, queue, "demo.echo", 1)
    later = await submit(
        handler, settings, queue, "demo.echo", 2, run_at=datetime.now(UTC) + timedelta(seconds=1)
    )
    for t in (queued, later):
        await handler.execute(settings.tenant, CancelTask(task_id=t, reason="test"))
    marker = await submit(handler, settings, queue, "demo.echo", 3)
    async with running(Worker(nc, handler, demo_registry, settings, queues=(queue,)), Scheduler(nc, handler)):
        await until(handler, settings, marker, "succeeded")
        await asyncio.sleep(1.5)  # let the scheduled one's timer come due: it must do nothing
    for t in (queued, later):
        got = names(await history_of(handler, settings, t))
        assert "attempt_started" not in got and got[-1] == "cancelled", got


@pytest.mark.timeout(90)
async def test_per_type_limit_holds_across_workers(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    """Point 9: at most 2 demo.sleep at once across two workers of 8 slots; others unaffected."""
    limits = {"demo.sleep": 2}
    workers = [
        Worker(
            nc,
            handler,
            demo_registry,
            settings.with_(worker_concurrency=8),
            queues=(queue,),
            type_limits=limits,
        )
        for _ in range(2)
    ]
    sleeps = [await submit(handler, settings, queue, "demo.sleep", {"seconds": 0.6}) for _ in range(8)]
    echoes = [await submit(handler, settings, queue, "demo.echo", i) for i in range(4)]
    async with running(*workers):
        done = {t: await until(handler, settings, t, "succeeded", within=40) for t in sleeps + echoes}
    spans = []
    for t in sleeps:
        h = done[t]
        start = next(e.stored_at for e in h if e.name == "attempt_started")
        end = next(e.stored_at for e in h if e.name == "succeeded")
        spans.append((start, end))
    peak = max(sum(1 for s, e in spans if s <= at < e) for at, _ in spans)
    used = {next(e.event.worker_id for e in done[t] if isinstance(e.event, AttemptStarted)) for t in sleeps}
    print(f"\nper-type limit 2: peak concurrent demo.sleep = {peak}, workers used = {len(used)}")
    assert peak == 2
    # Echoes were not held behind the limited type: each finished before the last sleep did.
    last_sleep = max(e for _, e in spans)
    assert all(done[t][-1].stored_at < last_sleep for t in echoes)
    info = await nc.jetstream().consumer_info(
        sj.EVENTS_STREAM, sj.limited_work_consumer(queue, _lane("demo.sleep"))
    )
    assert info.config.max_ack_pending == 2 and info.num_ack_pending == 0


def _lane(task_type: str) -> str:
    from ordo.workers.limits import lane_for

    return lane_for(task_type)


async def test_poison_work_message_is_terminated_without_blocking_the_queue(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    js = nc.jetstream()
    # Anything on a band subject that is not a runnable event: undecodable, or no event at all.
    await js.publish(sj.event_subject(settings.tenant, queue, "p1", "submitted", 1), b"\x00 not a ticket")
    await js.publish(sj.event_subject(settings.tenant, queue, "p2", "queued", 1), b'{"tenant": "x"}')
    task_id = await submit(handler, settings, queue, "demo.echo", 1)
    worker = Worker(nc, handler, demo_registry, settings, queues=(queue,))
    async with running(worker):
        await until(handler, settings, task_id, "succeeded")
        await eventually(lambda: _true(worker.stats.poison == 2), timeout=10, what="poison counted")
        info = await js.consumer_info(sj.EVENTS_STREAM, sj.work_consumer(queue, 1))
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def _true(value: bool) -> bool:
    return value


@pytest.mark.timeout(120)
async def test_priorities_with_two_worker_processes_and_a_backlog(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str, tmp_path: Path
) -> None:
    """Point 8: backlog 90 > fetch size 5 x 2 processes; higher priority starts first, and the
    lowest priority still starts within the first third of the backlog (no starvation)."""
    settings = settings.with_(fetch_batch=5)
    ids: dict[int, list[str]] = {}
    for prio in (9, 5, 1):  # lowest first, so submission order cannot explain the result
        ids[prio] = [
            await submit(handler, settings, queue, "demo.sleep", {"seconds": 0.1}, priority=prio)
            for _ in range(30)
        ]
    procs = [WorkerProc(settings, queue, f"p{i}", tmp_path, concurrency=2) for i in range(2)]
    try:
        for p in procs:
            await p.ready(nc)
        every = [t for group in ids.values() for t in group]

        async def all_done() -> list[tuple[int, str]] | None:
            starts: list[tuple[int, str]] = []
            for t in every:
                h = await history_of(handler, settings, t)
                if "succeeded" not in names(h):
                    return None
                starts.append((next(e.seq for e in h if e.name == "attempt_started"), t))
            return starts

        starts = await eventually(all_done, timeout=90, interval=0.5, what="backlog drained")
    finally:
        for p in procs:
            p.stop()
    assert starts is not None
    prio_of = {t: p for p, group in ids.items() for t in group}
    order = [prio_of[t] for _, t in sorted(starts)]
    rank = {p: sum(i for i, q in enumerate(order) if q == p) / len(ids[p]) for p in ids}
    first_low = order.index(9)
    means = {p: round(r, 1) for p, r in sorted(rank.items())}
    print(f"\npriority start order: {''.join(str(p) for p in order)}")
    print(f"mean start position by priority: {means}; first priority-9 start: #{first_low + 1}")
    assert rank[1] < rank[5] < rank[9]
    assert order[:10].count(1) >= 6
    # Stated bound: the lowest priority starts within the first third of the backlog (band 2 gets
    # every 10th fetch; measured #21-#23 of 90).
    assert first_low < 30


@pytest.mark.timeout(180)
async def test_registry_lists_workers_and_drain_stops_taking_work(
    gateway_only: System, nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    """Point 9 (graceful drain) and the worker registry through the gateway."""
    http = gateway_only.http
    worker = Worker(
        nc, handler, demo_registry, settings, queues=(queue,), worker_id="drainme", heartbeat_every_s=0.3
    )
    async with running(worker):

        async def listed() -> dict[str, Any] | None:
            rows = (await http.get("/v1/workers")).json()["items"]
            return next((w for w in rows if w["id"] == "drainme" and w["status"] == "online"), None)

        row = await eventually(listed, timeout=20, what="worker listed")
        assert row is not None and "demo.sleep" in row["handlers"] and row["queues"] == [queue]
        assert row["concurrency"] == settings.worker_concurrency and row["rss_bytes"] > 0
        # Running long enough to be seen in flight by a heartbeat and a read on a loaded machine.
        sleep = {"type": "demo.sleep", "payload": {"seconds": 4}, "queue": queue}
        r = await http.post("/v1/tasks", json=sleep)
        first = r.json()["id"]
        await until(handler, settings, first, "attempt_started")

        async def in_flight() -> bool:
            w = (await http.get("/v1/workers/drainme")).json()
            return bool(w["in_flight"] == 1 and w["tasks"] == [{"task_id": first, "attempt": 1}])

        await eventually(in_flight, timeout=10, what="in-flight shown")
        r = await http.post("/v1/workers/drainme:drain")
        assert r.status_code == 202 and r.json()["status"] == "draining", r.text
        echo = {"type": "demo.echo", "payload": 1, "queue": queue}
        second = (await http.post("/v1/tasks", json=echo)).json()["id"]
        await until(handler, settings, first, "succeeded")  # running work finishes

        async def drained() -> dict[str, Any] | None:
            w = (await http.get("/v1/workers/drainme")).json()
            return w if w["status"] == "draining" and w["in_flight"] == 0 and w["processed"] == 1 else None

        last: list[Any] = []

        async def drained_probe() -> dict[str, Any] | None:
            w = await drained()
            last[:] = [(await http.get("/v1/workers/drainme")).json()]
            return w

        try:
            await eventually(drained_probe, timeout=10, what="drained")
        except AssertionError:
            raise AssertionError(f"not drained: {last}") from None
        assert "attempt_started" not in names(await history_of(handler, settings, second))
    w = (await http.get("/v1/workers/drainme")).json()
    assert w["status"] == "offline"
    assert (await http.post("/v1/workers/nobody:drain")).status_code == 404
    # Without `ordo up`'s pool, scale and kill say so.
    r = await http.post("/v1/workers:scale", json={"count": 2})
    assert r.status_code == 409 and r.json()["type"].endswith("not-local-mode")
    assert (await http.post("/v1/workers:scale", json={"count": -1})).status_code == 422
    for body in (b'{"count": 1, "count": 2}', b'{"count": 1, "workers": 2}', b"[1]", b"{}"):
        r = await http.post("/v1/workers:scale", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.text)  # ambiguous or not {"count": N}: nothing started
    await handler.execute(settings.tenant, CancelTask(task_id=second))
