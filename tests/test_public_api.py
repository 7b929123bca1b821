"""The public face: `ordo`'s exported names, the client against a running system, ordo.testing."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

import ordo
from ordo import (
    AsyncClient,
    Client,
    Conflict,
    Fail,
    InvalidPayload,
    InvalidRequest,
    NotFound,
    Registry,
    Retry,
    TaskContext,
    WaitTimeout,
)
from ordo.domain.commands import SubmitTask
from ordo.domain.state import TaskState
from ordo.domain.status import TaskStatus
from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from ordo.testing import run_handler
from ordo.workers.runtime import Worker
from tests.conftest import System
from tests.helpers import eventually

# fmt: off
DOCUMENTED = {
    "AsyncClient", "Client", "Conflict", "Fail", "InvalidPayload", "InvalidRequest", "NotFound", "OrdoError",
    "RateLimited", "Registry", "Retry", "Submitted", "Task", "TaskContext", "TaskEvent", "Unauthorized",
    "Unavailable", "WaitTimeout",
}
# fmt: on


def test_the_exported_names_are_exactly_the_documented_ones() -> None:
    assert set(ordo.__all__) == DOCUMENTED
    for name in ordo.__all__:
        assert getattr(ordo, name) is not None
    with pytest.raises(AttributeError):
        _ = ordo.Nope


async def test_run_handler_runs_a_handler_without_servers() -> None:
    registry = Registry()

    @registry.task("t.add")
    async def add(ctx: TaskContext) -> int:
        await ctx.progress(50, "half")
        await ctx.heartbeat()
        return int(ctx.payload["a"]) + int(ctx.payload["b"])

    @registry.task("t.flaky")
    async def flaky(ctx: TaskContext) -> None:
        if ctx.attempt < 2:
            raise Retry(after=1)
        raise Fail("gave up")

    run = await run_handler(registry, "t.add", {"a": 2, "b": 3})
    assert run.result == 5 and run.progress == [(50, "half")] and run.heartbeats == 1
    with pytest.raises(Retry):
        await run_handler(registry, "t.flaky")
    with pytest.raises(Fail):
        await run_handler(flaky, payload=None, attempt=2)
    with pytest.raises(LookupError):
        await run_handler(registry, "t.unknown")


async def test_async_client_submits_waits_and_reads(system: System) -> None:
    async with AsyncClient(system.base_url) as client:
        sub = await client.submit("demo.echo", {"hello": "world"}, tags=["api"], priority=2)
        assert sub.created and sub.status == "queued"
        task = await client.wait(sub.id, timeout=30)
        assert task.status == "succeeded" and task.result == {"hello": "world"} and task.done
        assert (await client.get(sub.id)).tags == ["api"]
        assert [e.type for e in await client.events(sub.id)] == ["submitted", "attempt_started", "succeeded"]
        paged = await client.events(sub.id, page_size=1)  # a page at a time, to the end
        assert [e.type for e in paged] == ["submitted", "attempt_started", "succeeded"]
        again = await client.submit("demo.echo", {"hello": "world"}, idempotency_key="k1")
        same = await client.submit("demo.echo", {"hello": "world"}, idempotency_key="k1")
        assert same.id == again.id and again.created and not same.created
        many = await client.submit_many([{"type": "demo.echo", "payload": i} for i in range(5)])
        assert len({s.id for s in many}) == 5
        results = [await client.wait(s.id, timeout=30) for s in many]
        assert [t.result for t in results] == list(range(5))
        together = await client.submit_many(
            [{"type": "demo.echo", "payload": i} for i in range(3)], atomic=True
        )
        assert [(await client.wait(s.id, timeout=30)).result for s in together] == [0, 1, 2]
        with pytest.raises(InvalidRequest):  # more than one atomic batch holds
            await client.submit_many([{"type": "demo.echo"}] * 1001, atomic=True)


async def test_async_client_errors_are_typed(system: System) -> None:
    async with AsyncClient(system.base_url) as client:
        with pytest.raises(NotFound):
            await client.get("0" * 32)
        with pytest.raises(InvalidRequest) as bad:
            await client.submit("demo.echo", None, priority=99)
        assert bad.value.status == 422
        with pytest.raises(TypeError):
            await client.submit("demo.echo", None, colour="red")
        later = await client.submit("demo.echo", None, delay=3600)
        # Read once without a time limit first: the 0.5 s below then bounds the wait itself, not the
        # read model catching up with the submit on a busy machine.
        assert (await client.get(later.id)).status == "scheduled"
        with pytest.raises(WaitTimeout) as waited:
            await client.wait(later.id, timeout=0.5)
        assert waited.value.last is not None and waited.value.last.status == "scheduled"
        await client.cancel(later.id)
        assert (await client.wait(later.id, timeout=30)).status == "cancelled"
        # The gateway's reasons come with the error: which batch items were refused, and why.
        with pytest.raises(InvalidRequest) as batch:
            await client.submit_many([{"type": "demo.echo"}, {"type": ""}], atomic=True)
        assert [e["index"] for e in batch.value.errors] == [1] and batch.value.problem["status"] == 422


async def test_the_client_pauses_resumes_retries_and_archives(system: System) -> None:
    async with AsyncClient(system.base_url) as client:
        sub = await client.submit("demo.echo", {"x": 1}, delay=3600)
        assert (await client.pause(sub.id)).status == "paused"
        assert (await client.resume(sub.id)).status == "scheduled"
        await client.cancel(sub.id)
        assert (await client.wait(sub.id, timeout=30)).status == "cancelled"
        with pytest.raises(Conflict):
            await client.pause(sub.id)  # a cancelled task cannot be paused
        await client.retry(sub.id)  # runs now, with a fresh attempt budget
        assert (await client.wait(sub.id, timeout=60)).result == {"x": 1}
        await client.archive(sub.id)
        assert (await client.get(sub.id)).archived
        await client.unarchive(sub.id)
        assert not (await client.get(sub.id)).archived


# Backticked words of the README's client section that are not client methods.
_NOT_METHODS = {
    "await",
    "errors",
    "problem",
    "retry_after",
    "delay",
    "timeout",
    "run_at",
    "datetime",
    "timedelta",
}


def test_both_clients_have_every_method_the_readme_lists(repo_root: Path) -> None:
    """README listed `unarchive`, which the sync `Client` lacked (the AsyncClient had it)."""
    readme = (repo_root / "README.md").read_text()
    section = readme.split("Submit and wait from Python with the client")[1]
    section = section.split("A handler may type its payload")[0]
    listed = set(re.findall(r"`([a-z][a-z_]+)[`(]", section)) | set(re.findall(r"ordo\.([a-z_]+)\(", section))
    listed -= _NOT_METHODS
    assert {"submit", "submit_many", "wait", "events", "unarchive", "stream"} <= listed, listed
    for cls in (AsyncClient, Client):
        missing = sorted(n for n in listed if not callable(getattr(cls, n, None)))
        assert missing == [], (cls.__name__, missing)
    async_public = {n for n in vars(AsyncClient) if not n.startswith("_")} - {"aclose"}
    assert sorted(async_public - set(vars(Client))) == []  # the sync client mirrors the async one


async def test_the_sync_client_archives_and_unarchives(gateway_only: System) -> None:
    def use() -> tuple[bool, bool]:
        with Client(gateway_only.base_url) as client:
            sub = client.submit("demo.echo", {"x": 1})
            client.cancel(sub.id)  # no worker: the queued task is cancelled at once, so finished
            client.archive(sub.id)
            archived = client.get(sub.id).archived
            client.unarchive(sub.id)
            return archived, client.get(sub.id).archived

    assert await asyncio.to_thread(use) == (True, False)


async def test_delay_takes_a_timedelta_and_run_at_an_aware_datetime(gateway_only: System) -> None:
    """`delay=timedelta(...)` raised `TypeError: Object of type timedelta is not JSON serializable`;
    a naive `run_at` went out without an offset. Both clients, and `submit_many`'s items."""
    at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5)))
    naive = datetime(2031, 1, 2, 3, 4, 5)

    async with AsyncClient(gateway_only.base_url) as client:
        before = datetime.now(UTC)
        sub = await client.submit("demo.echo", delay=timedelta(hours=1), timeout=timedelta(seconds=90))
        task = await client.get(sub.id)
        assert sub.status == "scheduled" and task.run_at is not None and task.timeout == 90
        assert before + timedelta(hours=1) <= task.run_at <= datetime.now(UTC) + timedelta(hours=1)
        subs = await client.submit_many(
            [{"type": "demo.echo", "run_at": at}, {"type": "demo.echo", "delay": timedelta(days=2)}]
        )
        assert [s.status for s in subs] == ["scheduled", "scheduled"]
        assert (await client.get(subs[0].id)).run_at == at
        with pytest.raises(ValueError, match="aware"):
            await client.submit("demo.echo", run_at=naive)
        with pytest.raises(ValueError, match="aware"):
            await client.submit_many([{"type": "demo.echo", "run_at": naive}])

    def use() -> list[datetime | None]:
        with Client(gateway_only.base_url) as sync:
            with pytest.raises(ValueError, match="aware"):
                sync.submit("demo.echo", run_at=naive)
            one = sync.submit("demo.echo", run_at=at)
            (two,) = sync.submit_many([{"type": "demo.echo", "delay": timedelta(minutes=5)}])
            return [sync.get(one.id).run_at, sync.get(two.id).run_at]

    got = await asyncio.to_thread(use)
    assert got[0] == at and got[1] is not None and got[1] > datetime.now(UTC) + timedelta(minutes=4)


async def test_a_task_id_is_one_path_segment_whatever_it_holds(system: System) -> None:
    """An id from an application's own user must not lead the client to another route with its key."""
    async with AsyncClient(system.base_url) as client:
        replays = len((await system.http.get("/v1/dead-letters")).json()["items"])
        for odd in ("../dead-letters:replay?x=", "../../v1/whoami", "a/b", "%2e%2e"):
            with pytest.raises((NotFound, InvalidRequest)):
                await client.cancel(odd)
            with pytest.raises((NotFound, InvalidRequest)):
                await client.get(odd)
            with pytest.raises((NotFound, InvalidRequest)):
                await client.events(odd)
        assert len((await system.http.get("/v1/dead-letters")).json()["items"]) == replays


async def test_the_client_task_shows_progress_and_the_worker(system: System) -> None:
    async with AsyncClient(system.base_url) as client:
        sub = await client.submit("demo.sleep", {"seconds": 30})

        async def running() -> ordo.Task | None:
            task = await client.get(sub.id)
            return task if task.status == "running" and task.worker_id else None

        task = await eventually(running, timeout=60, what="the sleep running")
        assert task.lease_until is not None and task.updated_at is not None and not task.archived
        await client.cancel(sub.id)
        assert (await client.wait(sub.id, timeout=60)).status == "cancelled"


async def test_stream_follows_a_task_and_resumes_from_an_id(system: System) -> None:
    async with AsyncClient(system.base_url) as client:
        sub = await client.submit("demo.echo", 1)
        seen: list[Any] = []
        async with asyncio.timeout(30):
            async for event in client.stream(task_id=sub.id):
                seen.append(event)
                if event.type == "succeeded":
                    break
        assert [e.type for e in seen] == ["submitted", "attempt_started", "succeeded"]
        resumed = []
        async with asyncio.timeout(30):
            async for event in client.stream(task_id=sub.id, last_event_id=seen[0].seq):
                resumed.append(event)
                if event.type == "succeeded":
                    break
        assert [e.seq for e in resumed] == [e.seq for e in seen[1:]]


async def test_the_client_lists_tasks_across_short_and_empty_pages(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tasks()` follows the cursors to the end, also past the short and empty pages a filter
    without an index gives (here a tag, checked on 2 rows per page)."""
    from ordo.projections import tasks as task_list

    tag = "list-" + uuid.uuid4().hex[:8]
    async with AsyncClient(system.base_url) as client:
        subs = [await client.submit("demo.echo", i, tags=[tag]) for i in range(5)]
        for sub in subs:
            await client.wait(sub.id, timeout=30)
        await client.submit("demo.echo", "untagged")
        monkeypatch.setattr(task_list, "SCAN_WINDOW", 2)
        newest_first = [t async for t in client.tasks(tag=tag, page_size=2)]
        assert [t.id for t in newest_first] == [s.id for s in reversed(subs)]
        assert {t.status for t in newest_first} == {"succeeded"} and newest_first[0].tags == [tag]
        oldest_first = [t.id async for t in client.tasks(tag=tag, sort="created_at", status=["succeeded"])]
        assert oldest_first == [s.id for s in subs]
        monkeypatch.setattr(task_list, "SCAN_WINDOW", 500)
        assert [t.id async for t in client.tasks(search=subs[2].id)] == [subs[2].id]

    def use() -> list[str]:
        with Client(system.base_url) as sync:
            return [t.id for t in sync.tasks(tag=tag, page_size=3)]

    assert await asyncio.to_thread(use) == [s.id for s in reversed(subs)]


async def test_sync_client_does_the_same_without_await(system: System) -> None:
    def use() -> tuple[str, Any]:
        with Client(system.base_url) as client:
            task = client.wait(client.submit("demo.echo", {"sync": True}).id, timeout=30)
            return task.status, task.result

    assert await asyncio.to_thread(use) == ("succeeded", {"sync": True})


class Order(msgspec.Struct, frozen=True):
    sku: str
    quantity: int


def typed_registry() -> Registry:
    registry = Registry()

    @registry.task("shop.order", payload=Order)
    async def order(ctx: TaskContext) -> dict[str, Any]:
        assert isinstance(ctx.payload, Order)
        return {"sku": ctx.payload.sku, "total": ctx.payload.quantity * 2}

    return registry


async def test_a_typed_payload_arrives_as_its_struct_in_run_handler() -> None:
    registry = typed_registry()
    assert registry.payload_type("shop.order") is Order
    run = await run_handler(registry, "shop.order", {"sku": "A1", "quantity": 3})
    assert run.result == {"sku": "A1", "total": 6}
    with pytest.raises(InvalidPayload):
        await run_handler(registry, "shop.order", {"sku": "A1", "quantity": "three"})


async def test_a_payload_that_does_not_fit_fails_the_task_without_retry(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    worker = Worker(nc, handler, typed_registry(), settings)
    running = asyncio.create_task(worker.run())
    try:
        ids = {}
        for name, payload in (("good", {"sku": "B2", "quantity": 2}), ("bad", {"sku": "B2"})):
            ids[name] = uuid.uuid4().hex
            await handler.execute(
                settings.tenant,
                SubmitTask(
                    task_id=ids[name],
                    tenant=settings.tenant,
                    queue="default",
                    task_type="shop.order",
                    now=datetime.now(UTC),
                    payload=msgspec.Raw(msgspec.json.encode(payload)),
                    max_attempts=3,
                ),
            )

        async def final(task_id: str) -> TaskState | None:
            state, _, _ = await handler.load(settings.tenant, task_id)
            return state if state.status.terminal else None

        good = await eventually(lambda: final(ids["good"]), timeout=30, what="good order done")
        bad = await eventually(lambda: final(ids["bad"]), timeout=30, what="bad order done")
        assert good.status is TaskStatus.SUCCEEDED
        assert good.result is not None and msgspec.json.decode(good.result) == {"sku": "B2", "total": 4}
        assert bad.status is TaskStatus.FAILED and bad.attempt == 1  # no retry
        assert bad.error is not None and bad.error.kind == "InvalidPayload"
    finally:
        await worker.shutdown()
        await asyncio.wait_for(running, 30)
