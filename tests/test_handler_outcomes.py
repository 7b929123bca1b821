"""Whatever a handler returns or raises, its attempt ends with one stored report, at once: found by a
new user's handlers (2026-12-06). A `Fail` of a number used to append an event nobody could read back
(the task stuck `running`, every command on it a 500); a result or error the log could not store
(a lone surrogate, a circular list, a 3 MB message, a `__str__` that raises, `Retry(after=1e12)`) left
the attempt to sit out its lease and run again; a result nested 500 deep broke the task list; a
`SystemExit` in a handler stopped the whole worker. The lease here is 60 s: a report that is not
stored shows as a wait for it, and the handlers run once each."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from ordo import Fail, Registry, Retry, TaskContext
from ordo.domain.commands import SubmitTask
from ordo.domain.events import AttemptFailed, ErrorInfo
from ordo.domain.state import TaskState
from ordo.domain.status import TaskStatus
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from ordo.testing import UnstorableResult, run_handler
from ordo.workers.runtime import Worker
from tests.conftest import System
from tests.helpers import eventually


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of me explodes")


def _nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _circular() -> list[Any]:
    items: list[Any] = []
    items.append(items)
    return items


RAISED: dict[str, BaseException] = {
    "fail-number": Fail(12345),
    "fail-exception": Fail(ValueError("inner")),
    "raise-surrogate": RuntimeError("bad \udcff text"),
    "raise-huge": RuntimeError("x" * 3_000_000),
    "raise-bad-str": _BadStr(),
    "raise-exit": SystemExit(3),
    "raise-interrupt": KeyboardInterrupt(),
}
RETURNED: dict[str, Any] = {
    "return-surrogate": "bad \udcff",
    "return-circular": _circular(),
    "return-deep": _nested(500),
}
RAN: list[str] = []


def _registry() -> Registry:
    registry = Registry()
    for name, exc in RAISED.items():

        async def raising(ctx: TaskContext, exc: BaseException = exc) -> None:
            RAN.append(ctx.task_type)
            raise exc

        registry.register(f"o.{name}", raising)
    for name, value in RETURNED.items():

        async def returning(ctx: TaskContext, value: Any = value) -> Any:
            RAN.append(ctx.task_type)
            return value

        registry.register(f"o.{name}", returning)

    @registry.task("o.retry-far")
    async def retry_far(ctx: TaskContext) -> None:
        RAN.append(ctx.task_type)
        raise Retry(after=1e12)

    @registry.task("o.ok")
    async def ok(ctx: TaskContext) -> str:
        return "fine"

    return registry


async def submit_null(
    handler: CommandHandler, settings: Settings, task_type: str, max_attempts: int = 1
) -> str:
    """A task of `task_type` with a `null` payload on the default queue; its id."""
    task_id = uuid.uuid4().hex
    command = SubmitTask(
        task_id=task_id,
        tenant=settings.tenant,
        queue="default",
        task_type=task_type,
        now=datetime.now(UTC),
        payload=msgspec.Raw(b"null"),
        max_attempts=max_attempts,
    )
    await handler.execute(settings.tenant, command)
    return task_id


async def test_every_outcome_is_stored_at_once_and_readable(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    RAN.clear()
    worker = Worker(nc, handler, _registry(), settings.with_(ack_wait_s=60.0, lease_extend_every_s=20.0))
    running = asyncio.create_task(worker.run())
    kinds = [*RAISED, *RETURNED, "retry-far"]
    try:
        ids = {kind: await submit_null(handler, settings, f"o.{kind}") for kind in kinds}

        async def final(task_id: str) -> TaskState | None:
            state, _, _ = await handler.load(settings.tenant, task_id)  # the events decode
            return state if state.status.terminal else None

        got: dict[str, TaskState] = {}
        for kind in kinds:  # well within the 60 s lease: no attempt waits it out

            async def done(k: str = kind) -> TaskState | None:
                return await final(ids[k])

            got[kind] = await eventually(done, timeout=30, what=f"o.{kind} finished")
        assert not running.done(), "a handler stopped the worker"
        ok_id = await submit_null(handler, settings, "o.ok")
        assert (await eventually(lambda: final(ok_id), timeout=30)).status is TaskStatus.SUCCEEDED
    finally:
        await worker.shutdown()
        await asyncio.wait_for(running, 30)

    errors = {}
    for kind, state in got.items():
        assert state.status is TaskStatus.FAILED and state.attempt == 1, (kind, state)
        assert state.error is not None
        errors[kind] = state.error
    assert sorted(RAN) == sorted(f"o.{k}" for k in kinds), "a handler ran twice"
    assert (errors["fail-number"].kind, errors["fail-number"].message) == ("Fail", "12345")
    assert errors["fail-exception"].message == "ValueError: inner"
    assert errors["raise-surrogate"].kind == "RuntimeError" and "\\udcff" in errors["raise-surrogate"].message
    huge = errors["raise-huge"]
    assert huge.kind == "RuntimeError" and len(huge.message) < 10_000 and "more characters" in huge.message
    assert errors["raise-bad-str"].kind == "_BadStr" and "str() failed" in errors["raise-bad-str"].message
    assert errors["raise-exit"].kind == "SystemExit" and errors["raise-interrupt"].kind == "KeyboardInterrupt"
    for kind in RETURNED:
        assert errors[kind].kind == "ResultNotSerialisable", (kind, errors[kind])
    assert "deeper than 64" in errors["return-deep"].message
    assert errors["retry-far"].kind == "Fail" and "from 0 to 30 days" in errors["retry-far"].message


async def test_run_handler_refuses_a_result_nested_deeper_than_a_payload_may() -> None:
    async def deep(ctx: TaskContext) -> Any:
        return _nested(65)

    async def deep_enough(ctx: TaskContext) -> Any:
        return _nested(64)

    with pytest.raises(UnstorableResult, match="deeper than 64"):
        await run_handler(deep)
    assert (await run_handler(deep_enough)).result == _nested(64)


def test_a_registry_refuses_names_no_task_can_have_and_async_generators() -> None:
    registry = Registry()

    async def handler(ctx: TaskContext) -> None:
        return None

    for bad in ("", "bad name with space", "x" * 201, "ü"):
        with pytest.raises(ValueError, match="letters, digits"):
            registry.register(bad, handler)

    async def gen(ctx: TaskContext) -> Any:
        yield 1

    with pytest.raises(TypeError, match="async generator"):
        registry.register("t.gen", gen)
    assert registry.names() == ()


def test_a_queue_or_tenant_named_lim_is_no_type_limited_lane() -> None:
    band = "ordo.evt.lim.lim.b1.0190abc.submitted"  # tenant `lim`, queue `lim`
    assert not sj.is_limited_work_subject(band)
    assert not sj.is_limited_work_subject("ordo.work.lim.lim.copy")
    assert sj.is_limited_work_subject(sj.limited_work_subject("lim", "lim", "a1b2"))


async def test_a_result_too_deep_for_the_api_does_not_break_the_task_list(system: System) -> None:
    """A result stored before results were bounded (or by another writer of the log): the task list
    and the task still answer, the result replaced by a note."""
    r = await system.http.post("/v1/tasks", json={"type": "demo.echo"})
    task_id = r.json()["id"]

    async def succeeded() -> bool:
        got = await system.http.get(f"/v1/tasks/{task_id}")
        return got.status_code == 200 and got.json()["status"] == "succeeded"

    await eventually(succeeded, timeout=30, what="the task succeeded")
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        deep = "[" * 300 + "]" * 300
        await conn.execute("UPDATE tasks SET result = $1::json WHERE id = $2", deep, task_id)
    finally:
        await conn.close()
    listed = await system.http.get("/v1/tasks")
    assert listed.status_code == 200, listed.text
    [item] = [t for t in listed.json()["items"] if t["id"] == task_id]
    assert item["result"] == {"ordo_not_shown": "the result nests deeper than 64 levels"}
    assert (await system.http.get(f"/v1/tasks/{task_id}")).status_code == 200


async def test_an_unreadable_event_in_a_history_does_not_stop_replaying_dead_letters(system: System) -> None:
    """A task whose log holds an event written by an older worker (a `Fail` of a number, before
    reasons were made text): that message is left out of the task's history, as the projections
    leave it out (decision 56), so "replay all matching" replays that task with the others (it was
    skipped as unreadable, and every command on it answered 500)."""
    ids = []
    for _ in range(2):
        r = await system.http.post("/v1/tasks", json={"type": "demo.fail", "max_attempts": 1})
        ids.append(r.json()["id"])

    async def both_dead() -> bool:
        page = (await system.http.get("/v1/dead-letters", params={"type": "demo.fail"})).json()
        return len(page["items"]) == 2

    await eventually(both_dead, timeout=30, what="two dead letters")
    bad, good = ids
    state, _, last_seq = await system.handler.load(system.settings.tenant, bad)
    unreadable = AttemptFailed(attempt=1, error=ErrorInfo(kind="Fail", message=12345))  # type: ignore[arg-type]
    await system.handler.store.append(system.settings.tenant, state.queue, bad, [unreadable], last_seq)
    r = await system.http.post("/v1/dead-letters:replay", json={"type": "demo.fail"})
    assert r.status_code == 202, r.text
    assert sorted(t["id"] for t in r.json()["replayed"]) == sorted([bad, good])
    assert r.json()["skipped"] == []
