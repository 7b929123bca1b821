"""What a handler may give back, found by writing handlers as a new user (2026-12-06): a plain `def`
is refused when it is registered; a result that is not JSON, or too large for one event of the log,
fails the task at once, without a retry (a result too large used to sit out its lease, run again and
end `lease_expired`); `run_handler` checks results the way the worker stores them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from ordo import Fail, Registry, TaskContext
from ordo.domain.state import TaskState
from ordo.domain.status import TaskStatus
from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from ordo.testing import UnstorableResult, run_handler
from ordo.workers.runtime import Worker
from tests.helpers import eventually
from tests.test_handler_outcomes import submit_null


class _SyncCallable:
    """A callable that is no async function and that `register` cannot tell from one."""

    def __call__(self, ctx: TaskContext) -> Any:
        return {"ran": True}


def test_a_plain_def_handler_is_refused_when_registered() -> None:
    registry = Registry()
    with pytest.raises(TypeError, match="async def build"):

        @registry.task("t.sync")  # type: ignore[type-var]
        def build(ctx: TaskContext) -> dict[str, bool]:
            return {"ok": True}

    assert registry.names() == ()


async def test_run_handler_refuses_what_the_worker_could_not_store() -> None:
    async def not_json(ctx: TaskContext) -> Any:
        return {"handle": object()}

    async def big(ctx: TaskContext) -> str:
        return "x" * 2_000_000

    with pytest.raises(UnstorableResult) as refused:
        await run_handler(not_json)
    assert refused.value.kind == "ResultNotSerialisable"
    with pytest.raises(UnstorableResult) as too_large:
        await run_handler(big, max_result_message=1024 * 1024)
    assert too_large.value.kind == "ResultTooLarge" and "2,000,002 bytes" in str(too_large.value)
    assert (await run_handler(big)).result == "x" * 2_000_000  # no limit given: not checked
    with pytest.raises(Fail, match="not an awaitable"):
        await run_handler(_SyncCallable())


def _registry(size: int) -> Registry:
    registry = Registry()

    @registry.task("r.big")
    async def big(ctx: TaskContext) -> str:
        return "x" * size

    registry.register("r.sync", _SyncCallable())
    return registry


async def test_a_result_too_large_or_no_awaitable_fails_the_task_at_once(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    # Past the server's max_payload: it could never be stored, whatever the attempt.
    worker = Worker(nc, handler, _registry(nc.max_payload + 1), settings.with_(ack_wait_s=60.0))
    running = asyncio.create_task(worker.run())
    try:
        ids = {t: await submit_null(handler, settings, t, max_attempts=3) for t in ("r.big", "r.sync")}

        async def final(task_id: str) -> TaskState | None:
            state, _, _ = await handler.load(settings.tenant, task_id)
            return state if state.status.terminal else None

        # Well within the 60 s lease: no attempt waits it out.
        big = await eventually(lambda: final(ids["r.big"]), timeout=30, what="the big result refused")
        assert big.status is TaskStatus.FAILED and big.attempt == 1, big
        assert big.error is not None and big.error.kind == "ResultTooLarge", big.error
        sync = await eventually(lambda: final(ids["r.sync"]), timeout=30, what="the sync handler failed")
        assert sync.status is TaskStatus.FAILED and sync.attempt == 1, sync
        assert sync.error is not None and "not an awaitable" in sync.error.message, sync.error
    finally:
        await worker.shutdown()
        await asyncio.wait_for(running, 30)
