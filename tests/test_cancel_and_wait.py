"""Stopping a task that swallows its cancel (Python 3.11's wait_for does, CPython gh-86296).

Before `cancel_and_wait`, one cancel and an `await` of the task waited as long as the task lived
when the cancel was swallowed: for good for a loop with no flag of its own (the worker's queue-pause
refresh loop, whose log read may be answered in the same turn as the worker's shutdown stops it).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from ordo.infra.tasks import cancel_and_wait
from ordo.workers.lease import LeaseLoop
from ordo.workers.queue_pause import QueuePauses


async def stubborn(running: asyncio.Event | None = None) -> None:
    """A loop that swallows the first cancel it gets, as a library's wait_for may."""
    swallowed = False
    while True:
        if running is not None:
            running.set()
        try:
            await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True


async def test_a_task_that_swallows_one_cancel_still_ends() -> None:
    running = asyncio.Event()
    task = asyncio.create_task(stubborn(running))
    await running.wait()
    await asyncio.wait_for(cancel_and_wait(task), 2)
    assert task.cancelled()


async def test_the_wait_for_of_python_3_11_swallowing_a_cancel_does_not_hang_the_stop() -> None:
    """The real mechanism: the awaited result and the cancel land in the same loop turn."""
    replies: list[asyncio.Future[int]] = []

    async def requests() -> None:
        while True:
            reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            replies.append(reply)
            await asyncio.wait_for(reply, 5)

    task = asyncio.create_task(requests())
    await asyncio.sleep(0)
    replies[-1].set_result(1)  # the reply arrives ...
    await asyncio.wait_for(cancel_and_wait(task), 2)  # ... and the stop cancels in the same turn
    assert task.done()


async def test_a_lease_loop_stops_even_when_its_append_swallowed_the_cancel() -> None:
    running = asyncio.Event()
    loop = LeaseLoop(0.0, lambda: stubborn(running), "lease-test")
    await running.wait()
    await asyncio.wait_for(loop.stop(), 2)


async def test_outcomes_are_consumed_and_a_cancelled_caller_cancels_the_tasks_again() -> None:
    async def boom() -> None:
        raise ValueError("consumed, not raised")

    failed = asyncio.create_task(boom())
    await asyncio.sleep(0)
    await cancel_and_wait(failed)  # already ended with an exception: nothing raised

    task = asyncio.create_task(stubborn())
    event = asyncio.Event()

    async def stopper() -> Any:
        event.set()
        await cancel_and_wait(task)

    outer = asyncio.create_task(stopper())
    await event.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.wait_for(cancel_and_wait(task), 2)
    assert task.cancelled()


async def test_the_queue_pause_loop_stops_when_a_refresh_swallows_the_cancel(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    """A worker's queue-pause loop (real NATS) whose log read swallows the cancel of its stop."""
    pauses = QueuePauses(nc, handler.store, ["q" + uuid.uuid4().hex[:8]], settings, refresh_s=0.01)
    await pauses.start()
    reading = asyncio.Event()
    swallowed: list[bool] = []
    real_refresh = pauses.refresh

    async def refresh() -> None:
        reading.set()
        try:
            await real_refresh()
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(True)  # the read's answer and the stop's cancel in one turn

    pauses.refresh = refresh  # type: ignore[method-assign]
    await reading.wait()
    # asyncio.wait, not wait_for: the old stop() suppressed the cancel of a wait_for's timeout too.
    stop = asyncio.create_task(pauses.stop())
    done, _ = await asyncio.wait({stop}, timeout=5)
    await cancel_and_wait(stop)
    assert stop in done, "stop() hung on the swallowed cancel"
    assert swallowed == [True]
