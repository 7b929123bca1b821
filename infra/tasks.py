"""Stopping asyncio tasks for sure.

`task.cancel()` asks once, and a task can swallow the request. Python 3.11's `asyncio.wait_for`,
which nats-py awaits for every request and every PubAck, does so when the cancel lands in the same
loop turn as the result it waits for (CPython gh-86296, fixed in 3.12): it returns the result, and
a loop task goes on as if never cancelled. An `await task` after one cancel then waits as long as
the loop lives: for good for a loop with no flag of its own to see (the worker's queue-pause
refresh loop). `cancel_and_wait` cancels again until the task ends (docs/decisions.md, 42).
"""

from __future__ import annotations

import asyncio
from typing import Any

RETRY_S = 0.05  # how long a cancelled task has to end before it is cancelled again


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again any that is still
    running `RETRY_S` later. Their outcomes (result, exception, cancellation) are consumed, not
    raised. When the caller is cancelled meanwhile, the tasks are cancelled once more first."""
    pending = {task for task in tasks if not task.done()}
    try:
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=RETRY_S)
    except asyncio.CancelledError:
        for task in pending:
            task.cancel()
        raise
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at collection
