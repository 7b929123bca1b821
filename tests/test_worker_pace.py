"""Workers keep pace with the read side too (infra/read_gate.py, decision 60): a worker's handler
times every event it appends, and the worker takes new tickets only while the read model shows them
within `ORDO_WORKER_LAG_S`; it never waits on a read model that is silent or far behind, nor for
longer than its budget, and the attempts it has taken run on."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from ordo.infra import read_gate
from ordo.infra.command_handler import CommandHandler
from ordo.infra.read_gate import ReadGate
from ordo.infra.settings import Settings, SettingsError
from ordo.infra.wiring import command_handler
from ordo.projections import workers
from ordo.workers import Worker
from ordo.workers.demo import registry as demo_registry
from tests.helpers import eventually
from tests.test_worker_points import history_of, names, running, submit, until


@pytest.fixture
def queue() -> str:
    return "q" + uuid.uuid4().hex[:10]


async def _announce(nc: NATS, seq: int) -> None:
    await nc.publish(read_gate.SUBJECT, read_gate.announcement(seq))
    await nc.flush()


async def _heard(gate: ReadGate, seq: int) -> None:
    async def probe() -> bool:
        return gate.position == seq

    await eventually(probe, timeout=10, what=f"position {seq} heard")


async def test_keep_up_waits_while_an_event_of_this_process_is_unshown_for_longer_than_lag_s(
    nc: NATS,
) -> None:
    gate = ReadGate(nc, backlog=100, max_wait_s=30, fresh_s=30, lag_s=0.05)
    assert await gate.keep_up() == 0.0  # nothing stored: at once
    await _announce(nc, 10)
    await _heard(gate, 10)
    gate.stored(15)  # just now: within lag_s
    assert not gate.late()
    await _announce(nc, 15)
    await _heard(gate, 15)
    old = time.monotonic() - 1
    gate.stored(20, at=old)  # unshown for a second
    gate.stored(30, at=old)
    assert gate.late()
    waiting = asyncio.create_task(gate.keep_up())
    await eventually(lambda: _holding(gate), timeout=10, what="keep_up waiting")
    await _announce(nc, 20)
    await _heard(gate, 20)
    assert not waiting.done(), "the event at 30 is not shown yet"
    await _announce(nc, 30)
    waited = await asyncio.wait_for(waiting, 10)
    assert 0 < waited < 10
    assert gate.waits == 1 and gate.holding == 0


async def _holding(gate: ReadGate) -> bool:
    return gate.holding > 0


async def test_keep_up_does_not_wait_on_a_silent_or_far_behind_read_model_nor_beyond_its_budget(
    nc: NATS,
) -> None:
    old = time.monotonic() - 5
    silent = ReadGate(nc, backlog=100, max_wait_s=30, fresh_s=0.2, lag_s=0.05)
    silent.stored(10, at=old)
    assert not silent.late(), "no announcement heard: no pacing"
    assert await silent.keep_up() == 0.0

    far = ReadGate(nc, backlog=2, max_wait_s=30, fresh_s=30, lag_s=0.05)  # far behind: 100 events
    await far.keep_up()
    await _announce(nc, 1)
    await _heard(far, 1)
    far.stored(50, at=old)
    assert far.late()
    far.stored(200, at=old)  # 199 behind: catching up, not outrun
    assert not far.late()

    bounded = ReadGate(nc, backlog=100, max_wait_s=30, fresh_s=30, lag_s=0.05)
    await bounded.keep_up()
    await _announce(nc, 1)
    await _heard(bounded, 1)
    bounded.stored(50, at=old)
    waited = await asyncio.wait_for(bounded.keep_up(budget=0.3), 10)
    assert 0.3 <= waited < 5
    assert bounded.late(), "it gave up waiting, the event is still unshown"


@contextlib.asynccontextmanager
async def _read_model_at(nc: NATS, position: list[int]) -> AsyncIterator[None]:
    """A stand-in for the projector: announces `position[0]` every 0.1 s (so it is never silent)."""

    async def announce() -> None:
        while True:
            await _announce(nc, position[0])
            await asyncio.sleep(0.1)

    task = asyncio.create_task(announce())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_worker_takes_no_new_ticket_while_the_read_model_does_not_show_its_events(
    nc: NATS, handler: CommandHandler, settings: Settings, queue: str
) -> None:
    settings = settings.with_(worker_lag_s=0.05)
    own = command_handler(nc, settings, batch_submits=False, worker=True)
    pace = own.pace
    assert pace is not None and own.gate is None
    first = await submit(handler, settings, queue, "demo.echo", {"n": 1})
    shown = [(await history_of(handler, settings, first))[-1].seq]  # the submit, not the worker's
    async with _read_model_at(nc, shown):
        worker = Worker(nc, own, demo_registry, settings, queues=(queue,), fetch_wait_s=0.2)
        async with running(worker):
            started = await until(handler, settings, first, "succeeded")
            # Its events unshown for longer than 50 ms, the worker waits before its next take.
            await eventually(lambda: _holding(pace), timeout=10, what="the worker held")
            second = await submit(handler, settings, queue, "demo.echo", {"n": 2})
            assert pace.holding > 0

            async def taken() -> bool:
                return names(await history_of(handler, settings, second)) != ["submitted"]

            # Given half a second, an unheld worker takes it (its park is 0.2 s): this one does not.
            with pytest.raises(AssertionError, match="timed out"):
                await eventually(taken, timeout=0.5, what="the second task taken")
            shown[0] = started[-1].seq  # the read model shows the first task's events
            await until(handler, settings, second, "succeeded")
            # The registry's heartbeat carries the waits (`GET /v1/workers`, admins).
            hb = workers.view(worker._announcer.heartbeat(), datetime.now(UTC), datetime.now(UTC), "t")
            assert hb["paced_waits"] >= 1 and hb["paced_s"] > 0
    assert pace.waits >= 1


async def test_the_worker_pace_is_a_setting() -> None:
    assert Settings().worker_lag_s == 0.06
    assert Settings.from_env({"ORDO_WORKER_LAG_S": "0"}).worker_lag_s == 0
    for bad in ("abc", "-1", "61"):
        with pytest.raises(SettingsError, match="ORDO_WORKER_LAG_S"):
            Settings.from_env({"ORDO_WORKER_LAG_S": bad})


async def test_only_a_worker_handler_is_paced_and_0_switches_it_off(settings: Settings, nc: NATS) -> None:
    assert command_handler(nc, settings).pace is None  # a gateway's
    assert command_handler(nc, settings, batch_submits=False).pace is None  # the scheduler's
    assert command_handler(nc, settings, batch_submits=False, worker=True).pace is not None
    off = settings.with_(worker_lag_s=0)
    assert command_handler(nc, off, batch_submits=False, worker=True).pace is None
