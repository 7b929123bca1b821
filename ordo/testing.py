"""Run a handler in-process for unit tests: no NATS, no PostgreSQL, no worker.

    from ordo.testing import run_handler
    from myapp.tasks import registry

    async def test_send() -> None:
        run = await run_handler(registry, "emails.send", {"to": "a@example.com"})
        assert run.result == {"sent": True}

The handler gets a real `TaskContext` whose heartbeats and progress reports are recorded on the
returned `HandlerRun` instead of being sent. `Retry` and `Fail` propagate to the test as raised.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ordo.workers.context import TaskContext
from ordo.workers.handlers import HandlerFn, Registry, awaitable
from ordo.workers.results import UnstorableResult, stored_result


@dataclass
class HandlerRun:
    """What one in-process run of a handler did."""

    result: Any = None
    heartbeats: int = 0
    progress: list[tuple[float | None, str]] = field(default_factory=list)


class _Recorder:
    def __init__(self, run: HandlerRun) -> None:
        self._run = run

    async def heartbeat(self) -> None:
        self._run.heartbeats += 1

    async def progress(self, pct: float | None, note: str) -> None:
        self._run.progress.append((pct, note))


def make_context(
    payload: Any = None,
    *,
    task_type: str = "test.task",
    task_id: str = "test-task",
    tenant: str = "default",
    queue: str = "default",
    attempt: int = 1,
    timeout: float = 300.0,
    run: HandlerRun | None = None,
) -> TaskContext:
    """A TaskContext as the worker would build it, reporting into `run`."""
    logger = logging.LoggerAdapter(logging.getLogger(f"ordo.task.{task_type}"), {"task_id": task_id})
    return TaskContext(
        task_id=task_id,
        tenant=tenant,
        queue=queue,
        task_type=task_type,
        attempt=attempt,
        deadline=datetime.now(UTC) + timedelta(seconds=timeout),
        payload=payload,
        logger=logger,
        cancelled=asyncio.Event(),
        _reporter=_Recorder(run if run is not None else HandlerRun()),
    )


async def run_handler(
    handler: Registry | HandlerFn,
    task_type: str | None = None,
    payload: Any = None,
    *,
    attempt: int = 1,
    timeout: float = 300.0,
    task_id: str = "test-task",
    max_result_message: int | None = None,
) -> HandlerRun:
    """Run one attempt of a handler (a registry plus a task type, or the handler function itself)
    with `payload`, bounded by `timeout` seconds, and return what it did. A result the worker could
    not store raises `UnstorableResult`: one that is not JSON, or one too large for an event of
    `max_result_message` bytes (your NATS server's max_payload; None: not checked)."""
    if isinstance(handler, Registry):
        if task_type is None:
            raise TypeError("run_handler(registry, task_type, payload): the task type is missing")
        fn = handler.get(task_type)
        if fn is None:
            raise LookupError(f"no handler registered for {task_type!r}; registered: {handler.names()}")
        payload = handler.convert_payload(task_type, payload)  # as the worker does: InvalidPayload
    else:
        fn = handler
    run = HandlerRun()
    ctx = make_context(
        payload,
        task_type=task_type or str(getattr(fn, "__name__", "test.task")),
        task_id=task_id,
        attempt=attempt,
        timeout=timeout,
        run=run,
    )
    result = await asyncio.wait_for(awaitable(fn(ctx), ctx.task_type), timeout)
    stored_result(result, max_result_message)  # as the worker stores it: JSON, and within the limit
    run.result = result
    return run


__all__ = ["HandlerRun", "UnstorableResult", "make_context", "run_handler"]
