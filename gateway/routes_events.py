"""Server-sent events from the read model: `id:` is the event-log sequence; Last-Event-ID resumes.

The projector commits task events in sequence order, so "every event after N" read from the table is
the filtered log after N: no gap, no duplicate, from any gateway. A stream catches up from the table,
then joins the gateway's tail reader (gateway/live.py), which reads each commit once and fans it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Send

from ordo.domain.errors import TaskNotFound
from ordo.domain.events import EVENT_NAMES
from ordo.gateway import live
from ordo.gateway.auth import Principal, Role, require
from ordo.gateway.metrics import SSE_CLIENTS, http_registry
from ordo.gateway.problems import Problem, known
from ordo.gateway.resources import problems
from ordo.gateway.services import Services, services
from ordo.gateway.task_service import check_id
from ordo.infra import subjects as sj
from ordo.projections.runner import checkpoint, last_log_seq

router = APIRouter(prefix="/v1", tags=["events"])
log = logging.getLogger("ordo.gateway.events")
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
live.METRICS.export(http_registry)
_MAX_SEQ = 2**63 - 1


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    """The sequence to resume after: the header wins over `after` (it is what a reconnecting
    EventSource sends). A header that is not a log sequence is the client's error, never "from now"
    (that would hide a gap)."""
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= _MAX_SEQ):
            raise Problem(
                400, "invalid-last-event-id", "Last-Event-ID must be a log sequence (an integer, 0 to 2^63-1)"
            )
        return int(text)
    return after


async def _check_within_log(svc: Services, start: int | None) -> None:
    """A resume point beyond the newest event in the log is refused (422, as `min_seq` beyond the
    log is): a client parked there would wait silently for sequences that may never be its own."""
    if start is None or start == 0:
        return
    newest = max((await last_log_seq(svc.nc)).values(), default=0)
    if start > newest:
        raise Problem(
            422, "invalid-resume-point", f"resume point {start} is beyond the end of the event log ({newest})"
        )


# `status=X` selects the events that move a task INTO status X (see docs/nats-api.md, "SSE filters").
STATUS_EVENTS: dict[str, tuple[str, ...]] = {
    "scheduled": ("scheduled",),
    "queued": ("submitted", "queued", "replayed", "attempt_released"),
    "paused": ("paused",),
    "running": ("attempt_started",),
    "retrying": ("retry_scheduled",),
    "cancelling": ("cancel_requested",),
    "succeeded": ("succeeded",),
    "failed": ("failed",),
    "cancelled": ("cancelled",),
}
_KEY_RECHECK_S = 5.0
EventTypes = Annotated[str | None, Query(pattern=r"^[a-z_]{1,40}(,[a-z_]{1,40}){0,30}$")]


@dataclass(frozen=True)
class StreamFilter:
    task_id: str | None = None
    queue: str | None = None
    types: tuple[str, ...] | None = None  # None: every type; (): nothing can match


def _types(type_: str | None, status: str | None) -> tuple[str, ...] | None:
    """The event types a stream's `type` and `status` filters select; a name that is neither an
    event type nor a status is a 422 (a misspelt filter would select nothing, and the stream stay
    silent)."""
    wanted: set[str] | None = None
    if type_ is not None:
        wanted = set(type_.split(","))
        known("event type", wanted, EVENT_NAMES)
    if status is not None:
        statuses = set(status.split(","))
        known("status", statuses, STATUS_EVENTS)
        by_status = {e for s in statuses for e in STATUS_EVENTS[s]}
        wanted = by_status if wanted is None else wanted & by_status
    return None if wanted is None else tuple(sorted(wanted))


# Sent when a stream ends because its client fell behind: EventSource reconnects with its last id.
_CUT = b": behind: this stream ends here; reconnect with Last-Event-ID to catch up\r\n\r\n"


async def _stream(svc: Services, who: Principal, after: int, flt: StreamFilter) -> AsyncIterator[bytes]:
    checked = time.monotonic()
    SSE_CLIENTS.inc(by=1)
    try:
        # The stream's starting point, as an event and as the reconnection id: a client that opened
        # "from now" and saw no event before a disconnect still resumes exactly where it began.
        yield b"id: %d\r\nevent: position\r\ndata: %d\r\n\r\n" % (after, after)
        sub = live.Subscriber(who.tenant, task_id=flt.task_id, queue=flt.queue, types=flt.types)
        async with contextlib.aclosing(svc.hub.follow(sub, after)) as frames:
            async for chunk in frames:
                if chunk:
                    yield chunk
                if who.key_id is not None and time.monotonic() - checked > _KEY_RECHECK_S:
                    checked = time.monotonic()
                    if await svc.keys.by_id(who.key_id) is None:  # the gateway's key table
                        return  # the key was revoked: end its streams
                    if who.session_id is not None and _session_over(svc, who):
                        return  # the browser signed out (or its session expired): end its streams
        if sub.cut:
            yield _CUT
    finally:
        SSE_CLIENTS.inc(by=-1)
        svc.limits.release_stream(who.key_id)


def _session_over(svc: Services, who: Principal) -> bool:
    expired = who.session_expires is not None and who.session_expires < time.time()
    return expired or (who.session_id is not None and svc.keys.session_ended(who.session_id))


class _SendGuard:
    """The send timeout of one response without a timer per send: `since` is when the send in
    progress began (None between sends). One timer runs per `timeout` at most: when it fires it
    cancels `scope` if the current send is older than `timeout`, else waits for that send's
    deadline, or stops until the next send when none is in progress."""

    def __init__(self, timeout: float | None, scope: anyio.CancelScope) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._scope = scope
        self._timer: asyncio.TimerHandle | None = None
        self.since: float | None = None
        self.fired = False

    def start(self) -> None:
        self.since = now = self._loop.time()
        if self._timer is None and self._timeout is not None:
            self._timer = self._loop.call_at(now + self._timeout, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.since is None or self._timeout is None:
            return
        due = self.since + self._timeout
        if self._loop.time() >= due:
            self.fired = True
            self._scope.cancel()
        else:
            self._timer = self._loop.call_at(due, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class StreamResponse(EventSourceResponse):
    """sse-starlette's response for a body of ready SSE bytes (the hub encodes each frame once and
    joins a commit's frames per filter): each chunk is sent as it is, in one ASGI send, with no
    per-chunk encoding, logging or timer. The send timeout still holds (`_SendGuard`: a stalled
    send ends the response with SendTimeoutError, as sse-starlette's does); pings, disconnect
    handling and shutdown are sse-starlette's own."""

    async def _stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self._response_started = True
        with anyio.CancelScope() as scope:
            guard = _SendGuard(self.send_timeout, scope)
            try:
                async for chunk in self.body_iterator:
                    guard.start()
                    try:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    except BaseException:
                        self._send_interrupted = True
                        await self._close_body()
                        raise
                    guard.since = None
            finally:
                guard.close()
        if guard.fired:
            raise SendTimeoutError()
        async with self._send_lock:  # as sse-starlette: `active` flips after the closing send
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except BaseException:
                self._send_interrupted = True
                raise
            self._response_complete = True
            self.active = False

    async def _close_body(self) -> None:
        """Run the body's cleanup (the stream's `finally`) before the error escapes, shielded and
        bounded as sse-starlette does."""
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is None:
            return
        with anyio.move_on_after(self._cleanup_timeout, shield=True):
            try:
                await aclose()
            except Exception:
                log.exception("closing an SSE stream after a failed send")


def _response(svc: Services, who: Principal, start: int, flt: StreamFilter) -> StreamResponse:
    svc.limits.acquire_stream(who.key_id)  # the cap is per API key (none with auth off)
    return StreamResponse(
        _stream(svc, who, start, flt),
        ping=int(max(1, svc.settings.sse_ping_s)),
        send_timeout=svc.settings.sse_send_timeout_s,
    )


async def _known_task(svc: Services, who: Principal, task_id: str) -> str:
    """Another tenant's task (or none) is 404 before the stream opens; read from the log, so a task
    submitted a moment ago is found even while the projection lags."""
    check_id(task_id)
    if await svc.handler.store.last_seq(sj.task_events_filter(who.tenant, task_id)) == 0:
        raise TaskNotFound(task_id)
    return task_id


_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "SSE"},
    **problems(400, 401, 403, 404, 422, 429),
}


@router.get("/events/stream", response_class=StreamResponse, responses=_SSE_DOC)
async def events_stream(
    svc: Svc,
    who: Viewer,
    task_id: Annotated[str | None, Query(max_length=64)] = None,
    queue: Annotated[str | None, Query(pattern=r"^[a-z0-9_-]{1,64}$")] = None,
    type: EventTypes = None,  # noqa: A002 - the API's name
    status: EventTypes = None,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamResponse:
    """Task events of the caller's tenant as SSE, `id:` = log sequence, filtered server-side by
    task, queue, event type(s) and status(es) entered. Without a resume point: from now on."""
    if task_id is not None:
        await _known_task(svc, who, task_id)
    start = _resume_point(last_event_id, after)
    await _check_within_log(svc, start)
    if start is None:
        start = 0 if task_id is not None else await checkpoint(svc.pool)
    flt = StreamFilter(task_id=task_id, queue=queue, types=_types(type, status))
    return _response(svc, who, start, flt)


@router.get("/tasks/{task_id}/stream", response_class=StreamResponse, responses=_SSE_DOC)
async def task_stream(
    task_id: str,
    svc: Svc,
    who: Viewer,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamResponse:
    """One task's events as SSE, from its first event unless resumed."""
    await _known_task(svc, who, task_id)
    start = _resume_point(last_event_id, None) or 0
    await _check_within_log(svc, start)
    return _response(svc, who, start, StreamFilter(task_id=task_id))
