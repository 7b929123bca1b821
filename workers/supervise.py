"""Supervising one running handler: its timeout, the cancel grace period, shutdown and fencing.

The verdict says how the handler ended; the executor turns it into exactly one report.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from ordo.infra.settings import Settings
from ordo.workers.lease import Attempt

VerdictKind = Literal["returned", "cancelled", "timed_out", "abandoned", "fenced"]


@dataclass(frozen=True)
class Verdict:
    """How a handler ended. For "returned": `result`, or `error` if it raised."""

    kind: VerdictKind
    result: Any = None
    error: BaseException | None = None


async def supervise(
    attempt: Attempt, call: Coroutine[Any, Any, Any], timeout_s: float, settings: Settings
) -> Verdict:
    """Run the handler until it ends, times out, is cancelled past its grace, or must stop.

    Once a cancel was requested, any ending counts as "cancelled" (the handler may return or raise
    to acknowledge it). A handler that raises CancelledError on its own is an ordinary failure.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(call, name=f"handler-{attempt.task_id}-{attempt.number}")
    deadline = loop.time() + timeout_s
    cancel_deadline: float | None = None
    try:
        while True:
            if attempt.fenced:
                await _stop(task, settings.cancel_grace_s)
                return Verdict("fenced")
            if attempt.abandoned:
                await _stop(task, settings.cancel_grace_s)
                return Verdict("abandoned")
            if attempt.cancelled.is_set() and cancel_deadline is None:
                cancel_deadline = loop.time() + settings.cancel_grace_s
            if task.done():
                return _ended(task, cancel_requested=attempt.cancelled.is_set())
            now = loop.time()
            if cancel_deadline is not None and now >= cancel_deadline:
                attempt.log.warning(
                    "handler ignored the cancel for %gs: cancelling it", settings.cancel_grace_s
                )
                await _stop(task, settings.cancel_grace_s)
                return Verdict("cancelled")
            if now >= deadline:
                attempt.log.warning("handler timed out after %gs", timeout_s)
                await _stop(task, settings.cancel_grace_s)
                return Verdict("timed_out")
            attempt.wake.clear()
            limit = min(deadline, cancel_deadline if cancel_deadline is not None else deadline)
            await _until(task, attempt, limit)
    finally:
        if not task.done():  # the executor itself was cancelled
            task.cancel()
        task.add_done_callback(_consume_outcome)


async def _until(task: asyncio.Task[Any], attempt: Attempt, at: float) -> None:
    """Return when the handler ends, the attempt's `wake` is set, or the loop's clock reaches `at`:
    one future, a callback and a timer (no task per wait)."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    task.add_done_callback(wake)
    timer = loop.call_at(at, wake)
    attempt.wake.waiter = woken
    try:
        await woken
    finally:
        attempt.wake.waiter = None
        timer.cancel()
        task.remove_done_callback(wake)


def _ended(task: asyncio.Task[Any], *, cancel_requested: bool) -> Verdict:
    if cancel_requested:
        return Verdict("cancelled")
    if task.cancelled():
        return Verdict("returned", error=asyncio.CancelledError("the handler cancelled itself"))
    error = task.exception()
    if error is not None:
        return Verdict("returned", error=error)
    return Verdict("returned", result=task.result())


async def _stop(task: asyncio.Task[Any], grace_s: float) -> None:
    """Cancel the handler and give it `grace_s` to unwind; one that refuses is left behind."""
    task.cancel()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait({task}, timeout=grace_s)


def _consume_outcome(task: asyncio.Task[Any]) -> None:
    # Reading the exception keeps asyncio from logging "exception was never retrieved".
    if not task.cancelled():
        task.exception()
