"""One running attempt: its lease, heartbeats, progress, and fencing.

The ack deadline is the lease. While the handler runs, the lease is extended every
`lease_extend_every_s`: `+WPI` is sent, then a `lease_extended` event is appended (the ticket's
deadline never waits on the event store: a slow append cannot let NATS redeliver a ticket whose
handler is still running). If any report
comes back as `zombie_rejected`, the attempt is fenced: from then on it sends no ack, nak, progress
or extension for its message, ever. An extension that finds the task `cancelling` raises the
attempt's cancel signal (a backstop for the at-most-once cancel subscription).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from nats.aio.msg import Msg

from ordo.domain.commands import ExtendLease, ReleaseAttempt, ReportProgress, TaskCommand
from ordo.domain.errors import DomainError
from ordo.domain.events import ZombieRejected
from ordo.domain.state import TaskState
from ordo.domain.status import TaskStatus
from ordo.infra.command_handler import CommandHandler, Outcome
from ordo.infra.event_store import EventStoreError
from ordo.infra.settings import Settings
from ordo.infra.tasks import cancel_and_wait
from ordo.workers import consumer


class Wake:
    """A flag with at most one waiter (the supervisor): `set` wakes it. Cheaper than an Event
    waited on by a task of its own, for every attempt."""

    __slots__ = ("_set", "waiter")

    def __init__(self) -> None:
        self._set = False
        self.waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


class Attempt:
    """The worker's handle on one attempt of one task (the fencing token is `number`)."""

    def __init__(
        self,
        *,
        msg: Msg,
        handler: CommandHandler,
        tenant: str,
        task_id: str,
        number: int,
        worker_id: str,
        settings: Settings,
        clock: Callable[[], datetime],
        logger: logging.LoggerAdapter[logging.Logger],
        known: tuple[TaskState, int] | None = None,
    ) -> None:
        self.msg = msg
        # The task's state and last sequence after this attempt's own last write: the next report
        # decides on it without loading the history again (a conflict reloads).
        self.known = known
        self.tenant = tenant
        self.task_id = task_id
        self.number = number
        self.worker_id = worker_id
        self.log = logger
        self.cancelled = asyncio.Event()
        # Set whenever the supervisor must look again: cancel, abandon or fence.
        self.wake = Wake()
        self.fenced = False
        self.abandoned = False
        self._handler = handler
        self._settings = settings
        self._clock = clock
        self._lock = asyncio.Lock()
        self._closed = False
        self._last_extended = asyncio.get_running_loop().time()

    # -- signals --------------------------------------------------------------------------------

    def request_cancel(self) -> None:
        if not self.cancelled.is_set():
            self.log.info("cancel requested")
            self.cancelled.set()
            self.wake.set()

    def abandon(self) -> None:
        """The worker is shutting down: stop the handler, release the lease, return the ticket."""
        self.abandoned = True
        self.wake.set()

    def fence(self, why: str) -> None:
        if not self.fenced:
            self.log.warning("attempt fenced (%s): it no longer reports for this ticket", why)
            self.fenced = True
            self.wake.set()

    def is_fenced(self) -> bool:
        # A method, not the attribute: `send` may fence between two reads of it.
        return self.fenced

    def close(self) -> None:
        """No more extensions, heartbeats or progress: the final report is being made."""
        self._closed = True

    # -- reports --------------------------------------------------------------------------------

    async def send(self, command: TaskCommand, *, final: bool = False) -> Outcome | None:
        """Execute a command for this attempt; None if it could not be stored. Fences on a zombie.

        A DomainError is logged and swallowed, except for the `final` report, where it propagates.
        """
        try:
            out = await self._handler.execute(self.tenant, command, known=self.known)
        except DomainError as exc:
            self.known = None
            if final:
                raise
            self.log.error("%s rejected: %s", type(command).__name__, exc)
            return None
        except EventStoreError as exc:
            self.known = None
            self.log.warning("%s not stored: %s", type(command).__name__, exc)
            return None
        self.known = (out.state, out.last_seq)
        if any(isinstance(e, ZombieRejected) for e in out.events):
            self.fence(f"{type(command).__name__} rejected as a zombie")
        elif out.state.status is TaskStatus.CANCELLING and out.state.attempt == self.number:
            self.request_cancel()
        return out

    async def extend(self, *, force: bool = True) -> None:
        """Extend the lease; unless `force`, only if the last one is a period old (coalesced)."""
        async with self._lock:
            if self.fenced or self._closed:
                return
            now = asyncio.get_running_loop().time()
            if not force and now - self._last_extended < self._settings.lease_extend_every_s:
                await consumer.in_progress(self.msg)
                return
            lease_until = self._clock() + timedelta(seconds=self._settings.ack_wait_s)
            command = ExtendLease(
                task_id=self.task_id,
                attempt=self.number,
                worker_id=self.worker_id,
                lease_until=lease_until,
            )
            # +WPI first (audit F17). Even when the store is slow or briefly unavailable the ticket
            # stays ours: the result of the current attempt is still accepted later. An attempt
            # learns it is a zombie only from this append's answer, so it may send this one +WPI.
            await consumer.in_progress(self.msg)
            self._last_extended = now
            await self.send(command)

    async def _extend_every(self, period: float) -> None:
        while not (self.fenced or self._closed):
            await self.extend()
            await asyncio.sleep(period)

    def start_lease_loop(self) -> LeaseLoop:
        """Extend the lease every `lease_extend_every_s` while the handler runs: a timer until the
        first extension, a task from then on (most handlers end before it: no task for them)."""
        period = self._settings.lease_extend_every_s
        return LeaseLoop(period, lambda: self._extend_every(period), f"lease-{self.task_id}")

    async def release(self, reason: str = "worker shutdown") -> None:
        """Give the ticket back now: store `attempt_released`, then nak for immediate redelivery.

        The task is `queued` again (the hand-back does not use up an attempt), so the next worker
        to take the nak'ed ticket starts a new attempt at once instead of waiting out the lease.
        If the release is not stored, the ticket still comes back after the ack deadline.
        """
        async with self._lock:
            self._closed = True
            if self.fenced:
                return
            command = ReleaseAttempt(
                task_id=self.task_id, attempt=self.number, worker_id=self.worker_id, reason=reason
            )
            out = await self.send(command)
            if out is not None and not self.is_fenced():
                await consumer.nak(self.msg)

    # -- the AttemptReporter protocol of TaskContext --------------------------------------------

    async def heartbeat(self) -> None:
        await self.extend(force=False)

    async def progress(self, pct: float | None, note: str) -> None:
        if self.fenced or self._closed:
            return
        command = ReportProgress(
            task_id=self.task_id, attempt=self.number, worker_id=self.worker_id, pct=pct, note=note
        )
        await self.send(command)


class LeaseLoop:
    """`run()` started as a task `delay_s` from now (a timer until then), stopped by `stop()`."""

    def __init__(self, delay_s: float, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._run = run
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._start)

    def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            await cancel_and_wait(self._task)
