"""The executor of one dispatch: start the attempt, run the handler, make one ack decision.

A dispatch is the runnable event itself (or a copy of it, infra/dispatch.py). Its first delivery
starts without loading the task: `attempt_started` is decided on the state the event carries and
appended expecting the task's last sequence to be the event's own; a conflict (the task changed
since) or a redelivery loads the task and decides again.

Order of effects, always: the event is stored, then the message is acked. `attempt_started` is
stored before the handler runs; the result (or failure, or cancellation) is stored before the ack.
A ticket whose start appends no `attempt_started` (stale, finished, cancelled) is acked and skipped;
one whose lease is still held elsewhere is nak'ed until the lease ends. A fenced attempt (its
report came back `zombie_rejected`) never touches its message again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from ordo.domain.backoff import backoff_seconds
from ordo.domain.commands import (
    CompleteAttempt,
    ConfirmCancelled,
    FailAttempt,
    StartAttempt,
    TaskCommand,
)
from ordo.domain.errors import DomainError, LeaseHeld, TaskNotFound
from ordo.domain.events import AttemptStarted, ErrorInfo
from ordo.domain.state import TaskState
from ordo.domain.status import TaskStatus
from ordo.infra import telemetry
from ordo.infra.command_handler import CommandHandler
from ordo.infra.dispatch import Dispatch, read_dispatch
from ordo.infra.event_store import EventStoreError
from ordo.infra.settings import Settings
from ordo.infra.tasks import cancel_and_wait
from ordo.workers import consumer, handover
from ordo.workers.context import TaskContext
from ordo.workers.handlers import Fail, HandlerFn, InvalidPayload, Registry, Retry, awaitable, str_of, text_of
from ordo.workers.lease import Attempt
from ordo.workers.limits import TypeLimits, is_lane_message
from ordo.workers.results import UnstorableResult, stored_result
from ordo.workers.stats import WorkerStats
from ordo.workers.supervise import Verdict, supervise

# A nak for a held lease lands this long after the lease ends, so the next start finds it expired.
_LEASE_SLACK_S = 0.05
# The last word is retried this often, backing off up to a third of the ack wait, the ticket kept in
# progress meanwhile (with the defaults about a minute before the ticket is left to come back).
_REPORT_TRIES = 10
# A ticket whose task has no history yet is retried this often, this far apart, before it is poison.
_UNKNOWN_TASK_TRIES = 20
_UNKNOWN_TASK_DELAY_S = 1.0
# A ticket of a type with no handler here comes back at most this far apart, and a worker holds at
# most this many such tasks at once (Executor._deferred).
_UNKNOWN_TYPE_STEP_MAX_S = 5.0
_PARKED_MAX = 1000
# Handover notices (workers/handover.py) go out at most this often per queue and type; the copies
# stored are remembered for at most this many tasks.
_NOTICE_EVERY_S = 0.5
_OFFERED_MAX = 10_000
# A ticket whose task is in one of these with its dispatch number may still start an attempt.
_STARTABLE = (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.CANCELLING)
# An attempt's error as stored: the message's first characters, the traceback's last.
_MESSAGE_CHARS = 8_000
_TRACEBACK_CHARS = 32_000
# The error kind of an attempt whose own report could not be stored, and what says it cannot be
# (the report's encoding, or its size against the server's max_payload; not a connection's trouble).
_UNSTORABLE = "UnstorableOutcome"
_UNSTORABLE_ERRORS = (
    msgspec.EncodeError,
    UnicodeEncodeError,
    OverflowError,
    RecursionError,
    nats.errors.MaxPayloadError,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Started:
    state: TaskState
    event: AttemptStarted
    last_seq: int


class Executor:
    """Runs dispatch tickets for one worker; tracks running attempts for cancel and shutdown."""

    def __init__(
        self,
        handler: CommandHandler,
        registry: Registry,
        settings: Settings,
        worker_id: str,
        logger: logging.Logger,
        clock: Callable[[], datetime] = utc_now,
        jitter: Callable[[], float] = random.random,
        *,
        stats: WorkerStats | None = None,
        limits: TypeLimits | None = None,
        nc: NATS | None = None,
    ) -> None:
        if limits and nc is None:
            raise ValueError("type limits need the NATS connection to forward tickets")
        self.stats = stats or WorkerStats()
        self._limits = limits
        self._nc = nc
        self._handler = handler
        self._registry = registry
        self._settings = settings
        self._worker_id = worker_id
        self._log = logger
        self._clock = clock
        self._jitter = jitter
        self._running: dict[tuple[str, str], Attempt] = {}
        # Tasks of a type with no handler here, handed back for another worker: when first.
        self._parked: dict[str, float] = {}
        # Tasks whose ticket's copy is stored for the workers with the handler (workers/handover.py):
        # the origin sequence of that dispatch; and when a notice last went out, per (queue, type).
        self._offered: dict[str, int] = {}
        self._noticed: dict[tuple[str, str], float] = {}

    @property
    def running(self) -> int:
        return len(self._running)

    def attempts(self) -> list[tuple[str, str, int]]:
        """(tenant, task id, attempt) of every attempt running here."""
        return [(a.tenant, a.task_id, a.number) for a in self._running.values()]

    def request_cancel(self, tenant: str, task_id: str) -> bool:
        """Raise the cancel signal of the task's running attempt here, if there is one."""
        attempt = self._running.get((tenant, task_id))
        if attempt is None:
            return False
        attempt.request_cancel()
        return True

    def abandon_all(self) -> int:
        """Shutdown: every running attempt stops its handler and hands its ticket back."""
        for attempt in self._running.values():
            attempt.abandon()
        return len(self._running)

    async def execute(self, msg: Msg) -> None:
        seq = _stream_seq(msg)
        try:
            if seq is None:
                raise ValueError("not a JetStream message")
            dispatch = read_dispatch(msg.subject, msg.headers, msg.data, seq)
        except ValueError as exc:
            # A poison message: terminated (never redelivered), counted, and logged with its
            # stream sequence so it can be inspected; the queue moves on.
            self.stats.poison += 1
            self._log.error("poison ticket on %s (stream seq %s) terminated: %s", msg.subject, seq, exc)
            await consumer.term(msg, f"ordo: not a dispatch: {exc}")
            return
        if self._limits and not is_lane_message(msg) and await self._forwarded(msg, dispatch):
            return
        # The attempt continues the trace that submitted the task (context in the event's headers).
        with telemetry.span(
            "ordo.attempt",
            parent_headers=msg.headers or {},
            kind=SpanKind.CONSUMER,
            task_id=dispatch.task_id,
        ):
            await self._execute(msg, dispatch)

    async def _execute(self, msg: Msg, dispatch: Dispatch) -> None:
        started = await self._start(msg, dispatch)
        if started is None:
            return
        key = (dispatch.tenant, dispatch.task_id)
        log = logging.LoggerAdapter(
            self._log,
            {
                "tenant": dispatch.tenant,
                "task_id": dispatch.task_id,
                "attempt": started.event.attempt,
                "worker_id": self._worker_id,
            },
        )
        attempt = Attempt(
            msg=msg,
            handler=self._handler,
            tenant=dispatch.tenant,
            task_id=dispatch.task_id,
            number=started.event.attempt,
            worker_id=self._worker_id,
            settings=self._settings,
            clock=self._clock,
            logger=log,
            known=(started.state, started.last_seq),
        )
        self._running[key] = attempt
        try:
            await self._run(attempt, started.state)
        finally:
            if self._running.get(key) is attempt:
                del self._running[key]

    async def _start(self, msg: Msg, d: Dispatch) -> _Started | None:
        now = self._clock()
        # The fast path decides on the state the event carries, on its first delivery.
        snapshot = d.state if _deliveries(msg) == 1 else None
        if snapshot is not None and not self._handles(snapshot) and await self._deferred(msg, d, snapshot):
            return None
        try:
            if snapshot is not None:
                # The fast path: decide on the state the event carries, expect its own sequence.
                number, known = snapshot.dispatch, (snapshot, d.seq)
            else:
                then, state, last_seq = await self._handler.load_at(d.tenant, d.task_id, d.seq)
                if not then.exists:
                    raise TaskNotFound(d.task_id)
                number, known = then.dispatch, (state, last_seq)
                # Handed back only while the ticket could still start an attempt: one that another
                # worker's copy of it started (workers/handover.py) is stale, and acked below.
                # A task another worker started is never started here: while its lease holds, the
                # start below is refused (LeaseHeld) and the ticket comes back at the lease's end.
                current = state.dispatch == number and state.status in _STARTABLE
                if current and not self._handles(state):
                    if state.status is TaskStatus.QUEUED:
                        if await self._deferred(msg, d, state):
                            return None
                    elif state.lease_until is None or now >= state.lease_until:
                        await self._hand_back_lapsed(msg, d, state)
                        return None
            command = StartAttempt(
                task_id=d.task_id,
                dispatch=number,
                worker_id=self._worker_id,
                now=now,
                lease_until=now + timedelta(seconds=self._settings.ack_wait_s),
            )
            out = await self._handler.execute(d.tenant, command, known=known)
        except LeaseHeld as exc:
            remaining = (exc.lease_until - now).total_seconds() + _LEASE_SLACK_S
            delay = min(max(remaining, _LEASE_SLACK_S), self._settings.ack_wait_s)
            await consumer.nak(msg, delay=delay)
            return None
        except TaskNotFound:
            # The dispatch is an event of the task, so the task exists: an empty history is a read
            # served by a replica that is behind (direct gets may go to any replica). Come back
            # later; only a dispatch that never finds its task is poison.
            if _deliveries(msg) < _UNKNOWN_TASK_TRIES:
                self._log.warning("no history yet for %s (a replica behind?); ticket back", d.task_id)
                await consumer.nak(msg, delay=_UNKNOWN_TASK_DELAY_S)
                return None
            self.stats.poison += 1
            self._log.error("ticket of unknown task %s/%s: term", d.tenant, d.task_id)
            await consumer.term(msg, f"ordo: ticket of unknown task {d.task_id}")
            return None
        except DomainError as exc:
            self._log.warning("ticket for %s skipped: %s", d.task_id, exc)
            await consumer.ack(msg)
            return None
        except EventStoreError as exc:
            self._log.warning("start of %s not stored, ticket back: %s", d.task_id, exc)
            await consumer.nak(msg, delay=self._settings.backoff_base_s)
            return None
        for event in out.events:  # a loop, not next() over a generator: that one is closed with
            if isinstance(event, AttemptStarted):  # an exception on every start
                return _Started(out.state, event, out.last_seq)
        await consumer.ack(msg)  # stale ticket, or the task is already over
        return None

    def _handles(self, state: TaskState) -> bool:
        return state.task_type in self._registry

    async def _deferred(self, msg: Msg, d: Dispatch, state: TaskState) -> bool:
        """A type with no handler here: the ticket goes back for a worker that has one (a rolling
        deploy) until it has been handed back for `unknown_type_wait_s` in all (counted from its
        deliveries: a ticket that waited in a backlog still gets the whole wait); True if it went
        back. After that, or past `_PARKED_MAX` such tasks here (each holds one of its consumer's
        ack-pending slots while it waits), it starts here and fails (`UnknownTaskType`)."""
        deliveries = _deliveries(msg)
        waited = sum(self._hand_back_delay(n) for n in range(1, deliveries))
        left = self._settings.unknown_type_wait_s - waited
        if left <= 0:
            self._parked.pop(state.task_id, None)
            self._offered.pop(state.task_id, None)
            return False
        now = asyncio.get_running_loop().time()
        if state.task_id not in self._parked:
            horizon = now - self._settings.unknown_type_wait_s - _UNKNOWN_TYPE_STEP_MAX_S
            for task_id in [t for t, since in self._parked.items() if since < horizon]:
                del self._parked[task_id]  # started or failed elsewhere long since
                self._offered.pop(task_id, None)
            if len(self._parked) >= _PARKED_MAX:
                return False
            self._parked[state.task_id] = now
            self._log.warning(
                "no handler here for %r (task %s): ticket back for another worker, for up to %g s",
                state.task_type,
                state.task_id,
                left,
            )
        await consumer.nak(msg, delay=min(left, self._hand_back_delay(deliveries)))
        await self._offer(msg, d, state)
        return True

    async def _hand_back_lapsed(self, msg: Msg, d: Dispatch, state: TaskState) -> None:
        """The ticket of a task another worker started, whose lease lapsed (that worker died), with
        no handler here: never started (and failed) here, however long it waits, and not counted
        against `unknown_type_wait_s` (only a queued task is); offered again to the workers with the
        handler, whose durable redelivers the copy."""
        await consumer.nak(msg, delay=self._hand_back_delay(_deliveries(msg)))
        await self._offer(msg, d, state)

    async def _offer(self, msg: Msg, d: Dispatch, state: TaskState) -> None:
        """Offer the ticket to the workers with the handler (workers/handover.py): its copy until one
        is stored for this dispatch, and a notice at most every `_NOTICE_EVERY_S` per queue and type."""
        if self._nc is None:
            return
        now = asyncio.get_running_loop().time()
        copy = self._offered.get(state.task_id) != d.seq
        lane = (d.queue, state.task_type)
        notify = copy or now - self._noticed.get(lane, -_NOTICE_EVERY_S) >= _NOTICE_EVERY_S
        if not notify:
            return
        if await handover.hand_over(self._nc, d, msg, state.task_type, copy=copy):
            if len(self._offered) >= _OFFERED_MAX:
                self._offered.clear()  # a repeat copy is dropped by the server (its id), or stale
            self._offered[state.task_id] = d.seq
            self._noticed[lane] = now

    def _hand_back_delay(self, delivery: int) -> float:
        """The delay of the `delivery`th hand-back of a ticket of an unknown type."""
        return float(min(self._settings.backoff_base_s * 2 ** min(delivery - 1, 8), _UNKNOWN_TYPE_STEP_MAX_S))

    async def _forwarded(self, msg: Msg, d: Dispatch) -> bool:
        """Move the dispatch of a limited type to its lane (see workers.limits); True if handled."""
        assert self._limits is not None and self._nc is not None
        task_type = d.state.task_type if d.state is not None else None
        if task_type is None:
            try:
                state, _, _ = await self._handler.load(d.tenant, d.task_id)
            except EventStoreError as exc:
                self._log.warning("ticket of %s not routed, back later: %s", d.task_id, exc)
                await consumer.nak(msg, delay=self._settings.backoff_base_s)
                return True
            if not state.exists:
                return False
            task_type = state.task_type
        if not self._limits.limited(task_type):
            return False
        if await self._limits.forward(self._nc, d, msg, task_type):
            self.stats.forwarded += 1
            await consumer.ack(msg)
        else:
            await consumer.nak(msg, delay=self._settings.backoff_base_s)
        return True

    async def _run(self, attempt: Attempt, state: TaskState) -> None:
        fn = self._registry.get(state.task_type)
        if fn is None:
            wait = self._settings.unknown_type_wait_s
            message = (
                f"no handler for {state.task_type!r} on this worker; handed back for {wait:g} s, it"
                " reached no worker with one (a worker holds at most"
                f" {_PARKED_MAX:,} tasks of types it has no handler for)"
            )
            error = error_info("UnknownTaskType", message)
            await self._finish(attempt, self._fail(attempt, error, retryable=False))
            return
        try:
            payload: Any = msgspec.json.decode(state.payload)
        except msgspec.DecodeError as exc:
            error = error_info("PayloadDecodeError", str(exc))
            await self._finish(attempt, self._fail(attempt, error, retryable=False))
            return
        try:
            payload = self._registry.convert_payload(state.task_type, payload)
        except InvalidPayload as exc:
            error = error_info("InvalidPayload", str(exc))
            await self._finish(attempt, self._fail(attempt, error, retryable=False))
            return
        ctx = TaskContext(
            task_id=state.task_id,
            tenant=attempt.tenant,
            queue=state.queue,
            task_type=state.task_type,
            attempt=attempt.number,
            deadline=self._clock() + timedelta(seconds=state.timeout_s),
            payload=payload,
            logger=attempt.log,
            cancelled=attempt.cancelled,
            _reporter=attempt,
        )
        lease_loop = attempt.start_lease_loop()
        try:
            verdict = await supervise(attempt, _call(fn, ctx), state.timeout_s, self._settings)
        finally:
            attempt.close()
            await lease_loop.stop()
        await self._settle(attempt, verdict, state.timeout_s)

    async def _settle(self, attempt: Attempt, verdict: Verdict, timeout_s: float) -> None:
        if verdict.kind == "fenced":
            return
        if verdict.kind == "abandoned":
            self.stats.released += 1
            await attempt.release()
            return
        await self._finish(attempt, self._command_for(attempt, verdict, timeout_s))

    def _command_for(self, attempt: Attempt, verdict: Verdict, timeout_s: float) -> TaskCommand:
        if verdict.kind == "cancelled":
            return ConfirmCancelled(
                task_id=attempt.task_id, attempt=attempt.number, worker_id=attempt.worker_id
            )
        if verdict.kind == "timed_out":
            error = ErrorInfo(kind="Timeout", message=f"handler exceeded its {timeout_s:g}s limit")
            return self._fail(attempt, error, retryable=True, timed_out=True)
        exc = verdict.error
        if exc is None:
            try:
                result = stored_result(verdict.result, self._nc.max_payload if self._nc is not None else None)
            except UnstorableResult as err:
                return self._fail(attempt, error_info(err.kind, str(err)), retryable=False)
            return CompleteAttempt(
                task_id=attempt.task_id,
                attempt=attempt.number,
                worker_id=attempt.worker_id,
                result=result,
            )
        if isinstance(exc, Fail):
            return self._fail(attempt, error_info("Fail", exc.reason), retryable=False)
        if isinstance(exc, Retry):
            error = error_info("Retry", exc.reason or str(exc))
            return self._fail(attempt, error, retryable=True, after=exc.after)
        raised = exc.exit if isinstance(exc, HandlerExit) else exc
        error = error_info(type(raised).__name__, str_of(raised), _traceback(exc))
        return self._fail(attempt, error, retryable=True)

    def _fail(
        self,
        attempt: Attempt,
        error: ErrorInfo,
        *,
        retryable: bool,
        timed_out: bool = False,
        after: float | None = None,
    ) -> FailAttempt:
        if after is None:
            s = self._settings
            jitter = self._jitter()
            after = backoff_seconds(attempt.number, s.backoff_base_s, s.backoff_max_s, jitter)
        return FailAttempt(
            task_id=attempt.task_id,
            attempt=attempt.number,
            worker_id=attempt.worker_id,
            error=error,
            retryable=retryable,
            timed_out=timed_out,
            retry_at=self._clock() + timedelta(seconds=after),
        )

    async def _finish(self, attempt: Attempt, command: TaskCommand) -> None:
        """Store the attempt's last word, then ack. Not stored: no ack, the ticket comes back.

        While the report is retried the ticket is kept in progress, so a store outage shorter than
        the retries does not re-run work that is done (audit F17). A task that is not found is a
        read served by a replica that is behind (the attempt started, so the task exists): retried
        the same way, never acked away (audit F11).
        """
        keep: asyncio.Task[None] | None = None
        name = type(command).__name__
        try:
            for n in range(_REPORT_TRIES):
                try:
                    out = await attempt.send(command, final=True)
                except TaskNotFound:
                    attempt.log.warning("%s: no history yet (a replica behind?); retrying", name)
                    out = None
                except DomainError as exc:
                    attempt.log.error("%s rejected, ticket acked: %s", name, exc)
                    await consumer.ack(attempt.msg)
                    return
                except _UNSTORABLE_ERRORS as exc:
                    # The report itself cannot be stored (too large for a message, not encodable):
                    # store that instead, once, rather than leave the ticket to come back and run
                    # the handler again.
                    if isinstance(command, FailAttempt) and command.error.kind == _UNSTORABLE:
                        raise
                    attempt.log.error("%s cannot be stored (%s): recording that instead", name, exc)
                    reason = f"the attempt's report ({name}) could not be stored: {text_of(exc)}"
                    command = self._fail(attempt, error_info(_UNSTORABLE, reason), retryable=False)
                    name = type(command).__name__
                    continue
                if attempt.is_fenced():
                    return
                if out is not None:
                    self._count(command)
                    await consumer.ack(attempt.msg)
                    return
                if keep is None:
                    keep = asyncio.create_task(self._keep_in_progress(attempt))
                s = self._settings
                await asyncio.sleep(min(s.backoff_base_s * 2**n, s.ack_wait_s / 3))
            attempt.log.error("%s never stored: the ticket will come back", name)
        finally:
            if keep is not None:
                await cancel_and_wait(keep)

    async def _keep_in_progress(self, attempt: Attempt) -> None:
        """+WPI every third of the ack wait while the last word is retried (stops once fenced)."""
        while not attempt.is_fenced():
            await consumer.in_progress(attempt.msg)
            await asyncio.sleep(self._settings.ack_wait_s / 3)

    def _count(self, command: TaskCommand) -> None:
        self.stats.processed += 1
        if isinstance(command, CompleteAttempt):
            self.stats.succeeded += 1
        elif isinstance(command, FailAttempt):
            self.stats.failed += 1
        elif isinstance(command, ConfirmCancelled):
            self.stats.cancelled += 1


def error_info(kind: str, message: str, trace: str = "") -> ErrorInfo:
    """An attempt's error as the log can always store it: text without lone surrogates (they do not
    encode), a message of at most `_MESSAGE_CHARS` and the last `_TRACEBACK_CHARS` of a traceback
    (a 3 MB exception message would not fit in one event)."""
    message = _storable(message)
    if len(message) > _MESSAGE_CHARS:
        message = f"{message[:_MESSAGE_CHARS]}… ({len(message) - _MESSAGE_CHARS:,} more characters)"
    trace = _storable(trace)
    if len(trace) > _TRACEBACK_CHARS:
        trace = f"…({len(trace) - _TRACEBACK_CHARS:,} characters before)\n{trace[-_TRACEBACK_CHARS:]}"
    return ErrorInfo(kind=_storable(kind)[:200], message=message, traceback=trace)


def _storable(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:  # noqa: BLE001 - an exception whose str() raises, and the like
        return f"(the traceback of {type(exc).__name__} could not be formatted)"


def _deliveries(msg: Msg) -> int:
    """How often the ticket was delivered; a message that is not a JetStream delivery counts as its
    first."""
    got = consumer.delivery(msg)
    return 1 if got is None else got[1]


def _stream_seq(msg: Msg) -> int | None:
    got = consumer.delivery(msg)
    return None if got is None else got[0]


class HandlerExit(Exception):
    """A handler raised SystemExit or KeyboardInterrupt: an exception of its attempt (recorded and
    retried like any other), not a stop of the worker and its other attempts."""

    def __init__(self, exit: BaseException) -> None:
        super().__init__(f"the handler raised {type(exit).__name__}")
        self.exit = exit


async def _call(fn: HandlerFn, ctx: TaskContext) -> Any:
    with telemetry.span("ordo.handler", task_id=ctx.task_id, task_type=ctx.task_type, attempt=ctx.attempt):
        try:
            return await awaitable(fn(ctx), ctx.task_type)
        except (SystemExit, KeyboardInterrupt) as exc:  # would end the event loop, every attempt with it
            raise HandlerExit(exc) from exc
