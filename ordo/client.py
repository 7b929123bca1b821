"""A Python client for Ordo's HTTP API: submit tasks, wait for their results, follow their events.

    async with AsyncClient("http://127.0.0.1:8000", api_key=key) as ordo:
        sub = await ordo.submit("reports.render", {"month": "2026-11"})
        task = await ordo.wait(sub.id, timeout=60)
        print(task.status, task.result)

`Client` is the same API without `await`. Reads after a write are read-your-writes: the client
sends the highest log sequence it has written (`Ordo-Min-Seq`), so a task it just submitted is
never "not found". Errors are typed (ordo.client_types: NotFound, Conflict, InvalidRequest,
Unavailable with `retry_after`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

import httpx
import msgspec

from ordo.client_types import (
    NotFound,
    OrdoError,
    Submitted,
    Task,
    TaskEvent,
    Unavailable,
    WaitTimeout,
    error_from_response,
)
from ordo.infra.ids import could_be_task_id

T = TypeVar("T")
_STREAM_RETRY_S = 0.5


def _task_body(type_: str, payload: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {"queue", "priority", "run_at", "delay", "max_attempts", "timeout", "idempotency_key", "tags"}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unknown submit option(s): {', '.join(sorted(unknown))}")
    body: dict[str, Any] = {"type": type_, "payload": payload}
    for name, value in options.items():
        if value is not None:
            body[name] = _option(name, value)
    return body


def _option(name: str, value: Any) -> Any:
    """A submit option as JSON: a timedelta (`delay`, `timeout`) as its seconds, an aware datetime
    (`run_at`) as RFC 3339; a naive datetime is refused here, before any request (which instant
    it means depends on a zone it does not name)."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime (with a tzinfo), not {value.isoformat()!r}")
        return value.isoformat()
    return value


class AsyncClient:
    """Ordo's HTTP API for asyncio code. One client holds one connection pool: reuse it."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self._written = 0  # highest log sequence this client wrote: reads wait for it

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------------------------ writes
    async def submit(self, type: str, payload: Any = None, **options: Any) -> Submitted:  # noqa: A002
        """Submit one task. Options: queue, priority, run_at (an aware datetime, or RFC 3339 text
        with an offset; a naive datetime is a ValueError), delay (seconds or a timedelta),
        max_attempts, timeout (seconds or a timedelta), idempotency_key, tags."""
        response = await self._request("POST", "/v1/tasks", json=_task_body(type, payload, options))
        doc = msgspec.json.decode(response.content)
        sub = Submitted(
            id=doc["id"], status=doc["status"], seq=doc["seq"], created=response.status_code == 202
        )
        self._written = max(self._written, sub.seq)
        return sub

    async def submit_many(
        self, tasks: Iterable[Mapping[str, Any]], *, atomic: bool = False
    ) -> list[Submitted]:
        """Submit many tasks in one request: each item is a dict with `type`, `payload` and the
        options of `submit` (a timedelta `delay`, an aware datetime `run_at`).
        All are validated first; an invalid item rejects the whole request (InvalidRequest). Each
        task is then stored by itself; `atomic=True` stores all of them or none (at most 1,000
        events, a delayed task being two)."""
        items = [
            _task_body(
                t["type"], t.get("payload"), {k: v for k, v in t.items() if k not in ("type", "payload")}
            )
            for t in tasks
        ]
        body: dict[str, Any] = {"tasks": items, "atomic": True} if atomic else {"tasks": items}
        response = await self._request("POST", "/v1/tasks:batch", json=body)
        doc = msgspec.json.decode(response.content)
        self._written = max(self._written, int(doc.get("seq", 0)))
        return [
            Submitted(id=i["id"], status=i["status"], seq=i["seq"], created=i["created"])
            for i in doc["items"]
        ]

    async def cancel(self, task_id: str) -> Submitted:
        """Ask to cancel a task (a running one is told through its context and stops soon)."""
        return await self._command(task_id, "cancel")

    async def retry(self, task_id: str) -> Submitted:
        """Run a failed (dead-lettered) or cancelled task again, with a fresh attempt budget."""
        return await self._command(task_id, "retry")

    async def pause(self, task_id: str) -> Submitted:
        """Hold a scheduled, queued or retrying task until `resume`."""
        return await self._command(task_id, "pause")

    async def resume(self, task_id: str) -> Submitted:
        return await self._command(task_id, "resume")

    async def archive(self, task_id: str) -> Submitted:
        """Hide a finished task from the task list (it stays readable by id)."""
        return await self._command(task_id, "archive")

    async def unarchive(self, task_id: str) -> Submitted:
        """List an archived task again."""
        return await self._command(task_id, "unarchive")

    async def _command(self, task_id: str, verb: str) -> Submitted:
        """A task command; Conflict when the task's status refuses it."""
        response = await self._request("POST", f"/v1/tasks/{_path(task_id)}:{verb}")
        doc = msgspec.json.decode(response.content)
        self._written = max(self._written, int(doc["seq"]))
        return Submitted(id=doc["id"], status=doc["status"], seq=doc["seq"], created=False)

    # ------------------------------------------------------------------------------------- reads
    async def get(self, task_id: str) -> Task:
        """The task as the read model shows it, at least as new as this client's last write."""
        response = await self._request("GET", f"/v1/tasks/{_path(task_id)}", headers=self._min_seq())
        return msgspec.json.decode(response.content, type=Task)

    async def events(self, task_id: str, page_size: int | None = None) -> list[TaskEvent]:
        """The task's whole history, oldest first, read `page_size` events at a time (default: the
        gateway's page, `ORDO_TIMELINE_PAGE`)."""
        out: list[TaskEvent] = []
        after: int | None = 0
        size = {} if page_size is None else {"limit": str(page_size)}
        while after is not None:
            response = await self._request(
                "GET",
                f"/v1/tasks/{_path(task_id)}/events",
                params={"after": str(after), **size},
                headers=self._min_seq(),
            )
            page = msgspec.json.decode(response.content, type=_Timeline)
            out.extend(page.events)
            after = page.next_after
        return out

    async def tasks(
        self,
        *,
        status: str | Sequence[str] | None = None,
        type: str | None = None,  # noqa: A002 - the API's name
        queue: str | None = None,
        tag: str | None = None,
        search: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        archived: bool = False,
        sort: str = "-created_at",
        page_size: int = 100,
    ) -> AsyncGenerator[Task, None]:
        """The caller's tasks that match, newest first by default (`sort`: `±created_at`,
        `±updated_at`), read a page at a time (GET /v1/tasks). `search` is text in the id or type;
        `status` one status or several. The times need a time zone (a naive datetime is an
        `InvalidRequest`, as a `run_at` is). The iterator follows the pages' cursors to the end of
        the list, also past pages that a filter without an index left short or empty."""
        params: dict[str, str] = {"limit": str(page_size), "sort": sort}
        if status is not None:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        for name, value in (("type", type), ("queue", queue), ("tag", tag), ("q", search)):
            if value is not None:
                params[name] = value
        for name, moment in (
            ("created_after", created_after),
            ("created_before", created_before),
            ("updated_after", updated_after),
            ("updated_before", updated_before),
        ):
            if moment is not None:
                params[name] = moment.isoformat()
        if archived:
            params["archived"] = "true"
        cursor: str | None = None
        while True:
            query = {**params, "cursor": cursor} if cursor is not None else params
            response = await self._request("GET", "/v1/tasks", params=query, headers=self._min_seq())
            page = msgspec.json.decode(response.content, type=_TaskPage)
            for task in page.items:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """Wait until the task is succeeded, failed or cancelled and return it (WaitTimeout if not).

        Follows the task's live event stream, so the answer comes as soon as the projector stored the
        final event; a dropped stream is resumed where it stopped."""
        last: Task | None = None
        try:
            async with asyncio.timeout(timeout):
                last = await self.get(task_id)
                if last.done:
                    return last
                events = self.stream(task_id=task_id, last_event_id=last.last_seq)
                async with contextlib.aclosing(events):  # the stream's connection ends with the wait
                    async for event in events:
                        if event.type in ("succeeded", "failed", "cancelled"):
                            self._written = max(self._written, event.seq)
                            last = await self.get(task_id)
                            if last.done:
                                return last
        except TimeoutError:
            pass
        raise WaitTimeout(task_id, timeout, last)

    async def stream(
        self,
        *,
        task_id: str | None = None,
        queue: str | None = None,
        types: Sequence[str] | None = None,
        last_event_id: int | None = None,
    ) -> AsyncGenerator[TaskEvent, None]:
        """Live task events of the caller's tenant (one task's from its first event when `task_id`
        is given, otherwise from now, or after `last_event_id`). The iterator never ends by itself:
        a dropped connection is reopened with Last-Event-ID, so no event is missed or repeated."""
        params: dict[str, str] = {}
        if task_id is not None:
            params["task_id"] = task_id
        if queue is not None:
            params["queue"] = queue
        if types:
            params["type"] = ",".join(types)
        resume = last_event_id
        while True:
            headers = {"Last-Event-ID": str(resume)} if resume is not None else {}
            try:
                async with self._http.stream(
                    "GET", "/v1/events/stream", params=params, headers=headers, timeout=httpx.Timeout(None)
                ) as response:
                    if response.status_code >= 400:
                        body = await response.aread()
                        raise error_from_response(
                            response.status_code, body, response.headers.get("retry-after")
                        )
                    async for event_id, name, data in _sse_frames(response.aiter_lines()):
                        if event_id is not None:
                            resume = int(event_id)
                        if name == "task_event":
                            yield msgspec.json.decode(data, type=TaskEvent)
            except (httpx.TransportError, Unavailable):
                pass  # reconnect below, from the last id seen
            await asyncio.sleep(_STREAM_RETRY_S)

    # --------------------------------------------------------------------------------- plumbing
    def _min_seq(self) -> dict[str, str]:
        return {"Ordo-Min-Seq": str(self._written)} if self._written else {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=json, headers=headers, params=params)
        except httpx.TransportError as exc:
            raise Unavailable(0, "connection-failed", "gateway unreachable", str(exc), None) from exc
        if response.status_code >= 400:
            raise error_from_response(
                response.status_code, response.content, response.headers.get("retry-after")
            )
        return response


def _path(task_id: str) -> str:
    """A task id as one path segment. The gateway makes every id of 1-64 letters, digits, `_` and
    `-`, none of which a URL path quotes; anything else (`../dead-letters:replay`, an id with a `/`,
    which the server would read as two segments even quoted) is no task, answered here as the
    gateway would, without a request."""
    if not could_be_task_id(task_id):
        detail = f"task {task_id[:64]!r} does not exist"
        raise NotFound(404, "https://ordo.dev/problems/not-found", "not found", detail)
    return task_id


class _Timeline(msgspec.Struct, frozen=True):
    events: list[TaskEvent]
    next_after: int | None = None


class _TaskPage(msgspec.Struct, frozen=True):
    items: list[Task]
    next_cursor: str | None = None


async def _sse_frames(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, str, str]]:
    """(id, event, data) for each server-sent event of a line stream."""
    event_id: str | None = None
    name = "message"
    data: list[str] = []
    async for line in lines:
        if not line:
            if data or event_id is not None:
                yield event_id, name, "\n".join(data)
            event_id, name, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            name = value
        elif field == "data":
            data.append(value)


class Client:
    """The same API as AsyncClient for code without an event loop (scripts, Django, Flask).

    It runs an AsyncClient on a private event loop in a background thread; close it (or use it as a
    context manager) to stop that thread."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ordo-client", daemon=True)
        self._thread.start()
        self._async = self._call(self._make(base_url, api_key, timeout))

    @staticmethod
    async def _make(base_url: str, api_key: str | None, timeout: float) -> AsyncClient:
        return AsyncClient(base_url, api_key, timeout=timeout)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._async.aclose())
        self._call(self._loop.shutdown_asyncgens())  # a stream left unfinished ends here, quietly
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def submit(self, type: str, payload: Any = None, **options: Any) -> Submitted:  # noqa: A002
        """See AsyncClient.submit."""
        return self._call(self._async.submit(type, payload, **options))

    def submit_many(self, tasks: Iterable[Mapping[str, Any]], *, atomic: bool = False) -> list[Submitted]:
        """See AsyncClient.submit_many."""
        return self._call(self._async.submit_many(list(tasks), atomic=atomic))

    def cancel(self, task_id: str) -> Submitted:
        return self._call(self._async.cancel(task_id))

    def retry(self, task_id: str) -> Submitted:
        return self._call(self._async.retry(task_id))

    def pause(self, task_id: str) -> Submitted:
        return self._call(self._async.pause(task_id))

    def resume(self, task_id: str) -> Submitted:
        return self._call(self._async.resume(task_id))

    def archive(self, task_id: str) -> Submitted:
        return self._call(self._async.archive(task_id))

    def unarchive(self, task_id: str) -> Submitted:
        return self._call(self._async.unarchive(task_id))

    def get(self, task_id: str) -> Task:
        return self._call(self._async.get(task_id))

    def events(self, task_id: str, page_size: int | None = None) -> list[TaskEvent]:
        return self._call(self._async.events(task_id, page_size))

    def tasks(self, **filters: Any) -> Iterator[Task]:
        """See AsyncClient.tasks (the same keyword filters); pages are read as the loop goes."""
        return self._iterate(self._async.tasks(**filters))

    def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """See AsyncClient.wait."""
        return self._call(self._async.wait(task_id, timeout))

    def stream(
        self,
        *,
        task_id: str | None = None,
        queue: str | None = None,
        types: Sequence[str] | None = None,
        last_event_id: int | None = None,
    ) -> Iterator[TaskEvent]:
        """See AsyncClient.stream; closing the iterator (or leaving the for loop) ends the stream."""
        return self._iterate(
            self._async.stream(task_id=task_id, queue=queue, types=types, last_event_id=last_event_id)
        )

    def _iterate(self, items: AsyncGenerator[T, None]) -> Iterator[T]:
        """An async generator of the private loop as a plain iterator; closing it closes that one."""
        try:
            while True:
                yield self._call(_next(items))
        except StopAsyncIteration:
            return
        finally:
            with contextlib.suppress(Exception):
                self._call(items.aclose())


async def _next(items: AsyncIterator[T]) -> T:
    return await items.__anext__()


__all__ = ["AsyncClient", "Client", "OrdoError"]
