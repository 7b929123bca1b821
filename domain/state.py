"""A task's state, folded from its events by `evolve` (total: every event of every version applies)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from ordo.domain import events as ev
from ordo.domain.status import WAITING, TaskStatus


class TaskState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The decider's view of one task. `exists` is False before `submitted`.

    Not tracked by Python's cycle collector (`gc=False`): its fields are immutable values that cannot
    lead back to it, and the projector keeps tens of thousands of them in memory, which every
    collection would otherwise walk."""

    task_id: str
    exists: bool = False
    tenant: str = ""
    queue: str = ""
    task_type: str = ""
    priority: int = 5
    payload: msgspec.Raw = msgspec.Raw(b"null")
    tags: tuple[str, ...] = ()
    max_attempts: int = 3
    timeout_s: float = 300.0
    idempotency_key: str | None = None
    body_hash: str | None = None
    status: TaskStatus = TaskStatus.QUEUED
    # Status to return to on resume.
    paused_from: TaskStatus | None = None
    # Attempts started so far; the current attempt's number is the fencing token.
    attempt: int = 0
    # Attempt count at the last replay, plus attempts handed back unfinished (released): the
    # budget is max_attempts attempts beyond it.
    budget_base: int = 0
    # Dispatch tickets written so far; a ticket whose number is not this one is stale.
    dispatch: int = 0
    run_at: datetime | None = None
    due_at: datetime | None = None
    lease_until: datetime | None = None
    worker_id: str | None = None
    progress: float | None = None
    result: msgspec.Raw | None = None
    error: ev.ErrorInfo | None = None
    archived: bool = False
    version: int = 0  # number of events folded

    @property
    def attempts_left(self) -> int:
        return self.budget_base + self.max_attempts - self.attempt


def initial(task_id: str) -> TaskState:
    return TaskState(task_id=task_id)


def _queued(state: TaskState, **changes: object) -> TaskState:
    return msgspec.structs.replace(
        state, status=TaskStatus.QUEUED, dispatch=state.dispatch + 1, due_at=None, **changes
    )


_LIVE = (TaskStatus.RUNNING, TaskStatus.CANCELLING)
_CANCELLABLE = (*WAITING, TaskStatus.PAUSED, TaskStatus.CANCELLING)


def accepts(state: TaskState, event: ev.Event) -> bool:  # noqa: PLR0911 - one rule per event kind
    """Whether `decide` could have appended `event` to a task in `state`.

    Workers append their attempt events with optimistic concurrency, but NATS cannot make the
    expected-sequence header mandatory, so a credential that may publish those subjects can write
    any of them raw (docs/decisions.md 19). Such an event names an attempt that is not the running
    one, or follows a terminal event; `evolve` folds it as nothing, so no fold (the command
    handler's, the read models', a rebuild's) completes a task that never ran that attempt. Every
    rule mirrors the decider; the decider has always kept them, so every stored stream folds as it
    did. Events only the gateway and scheduler append are not checked here.
    """
    if isinstance(event, ev.Submitted):
        return not state.exists
    if not state.exists:
        return False
    status, current = state.status, state.attempt
    match event:
        case ev.AttemptStarted():
            # From queued, or from running once the previous attempt timed out (its lease lapsed).
            restart = status is TaskStatus.RUNNING and state.lease_until is None
            return event.attempt == current + 1 and (status is TaskStatus.QUEUED or restart)
        case (
            ev.LeaseExtended()
            | ev.Progressed()
            | ev.AttemptFailed()
            | ev.AttemptTimedOut()
            | ev.Succeeded()
            | ev.AttemptReleased()
        ):
            return status in _LIVE and event.attempt == current
        case ev.RetryScheduled() | ev.Failed():
            # Only right after the running attempt's own failure report (which clears the lease).
            reported = status is TaskStatus.RUNNING and state.lease_until is None
            return reported and event.attempt == current
        case ev.Cancelled():
            return status in _CANCELLABLE and event.attempt == current
        case ev.DeadLettered():
            return status is TaskStatus.FAILED  # always right after `failed`
    return True


def evolve(state: TaskState, event: ev.Event) -> TaskState:  # noqa: C901, PLR0911, PLR0912 - one flat match
    """Apply one event. Unknown combinations leave the status alone (old streams always replay);
    an event `decide` could not have appended in this state changes nothing (`accepts`).

    Every branch makes one copy that also counts the event (`version`): the projections fold every
    event of the log through here."""
    v = state.version + 1
    r = msgspec.structs.replace
    if not accepts(state, event):
        return r(state, version=v)
    s = state
    match event:
        case ev.Submitted():
            return _queued(
                s,
                version=v,
                exists=True,
                tenant=event.tenant,
                queue=event.queue,
                task_type=event.task_type,
                priority=event.priority,
                payload=event.payload,
                tags=event.tags,
                max_attempts=event.max_attempts,
                timeout_s=event.timeout_s,
                idempotency_key=event.idempotency_key,
                body_hash=event.body_hash,
            )
        case ev.Scheduled():
            # Submitted already counted a dispatch; a scheduled task's ticket comes when it is due.
            return r(s, version=v, status=TaskStatus.SCHEDULED, run_at=event.run_at, due_at=event.run_at)
        case ev.Queued():
            return _queued(s, version=v)
        case ev.Paused():
            return r(s, version=v, status=TaskStatus.PAUSED, paused_from=s.status)
        case ev.Resumed():
            back = s.paused_from or TaskStatus.QUEUED
            if back is TaskStatus.QUEUED:
                return _queued(s, version=v, paused_from=None)
            return r(s, version=v, status=back, paused_from=None)
        case ev.Updated():
            s = r(s, version=v, payload=event.payload if bytes(event.payload) != b"null" else s.payload)
            s = r(s, priority=event.priority if event.priority is not None else s.priority)
            if event.run_at is not None:
                s = r(s, run_at=event.run_at, due_at=event.run_at)
                if s.status is TaskStatus.PAUSED and s.paused_from is TaskStatus.QUEUED:
                    # It now waits for its run_at: resume returns it to scheduled.
                    s = r(s, paused_from=TaskStatus.SCHEDULED)
            if s.status is TaskStatus.QUEUED:
                # A queued task's old ticket carries old data: a fresh ticket replaces it.
                return _queued(s)
            return s
        case ev.AttemptStarted():
            return r(
                s,
                version=v,
                status=TaskStatus.RUNNING,
                attempt=event.attempt,
                worker_id=event.worker_id,
                lease_until=event.lease_until,
                progress=None,
            )
        case ev.LeaseExtended():
            return r(s, version=v, lease_until=event.lease_until)
        case ev.Progressed():
            return r(s, version=v, progress=event.pct if event.pct is not None else s.progress)
        case ev.AttemptFailed():
            return r(s, version=v, error=event.error, lease_until=None)
        case ev.AttemptTimedOut():
            return r(
                s,
                version=v,
                error=ev.ErrorInfo(kind="timed_out", message=event.reason),
                lease_until=None,
            )
        case ev.RetryScheduled():
            return r(s, version=v, status=TaskStatus.RETRYING, due_at=event.retry_at, worker_id=None)
        case ev.Succeeded():
            return r(
                s, version=v, status=TaskStatus.SUCCEEDED, result=event.result, error=None, lease_until=None
            )
        case ev.Failed():
            return r(s, version=v, status=TaskStatus.FAILED, lease_until=None, due_at=None)
        case ev.CancelRequested():
            return r(s, version=v, status=TaskStatus.CANCELLING)
        case ev.Cancelled():
            return r(
                s, version=v, status=TaskStatus.CANCELLED, lease_until=None, due_at=None, paused_from=None
            )
        case ev.AttemptReleased():
            if s.status is not TaskStatus.RUNNING:
                return r(s, version=v, lease_until=None)  # released while cancelling: `cancelled` follows
            # Back to queued on the same dispatch number: the released ticket runs it next. The
            # hand-back is not a failed attempt, so the budget grows by one.
            return r(
                s,
                version=v,
                status=TaskStatus.QUEUED,
                budget_base=s.budget_base + 1,
                lease_until=None,
                worker_id=None,
                progress=None,
            )
        case ev.Replayed():
            return _queued(
                s,
                version=v,
                budget_base=s.attempt,
                error=None,
                result=None,
                archived=False,
                worker_id=None,
                lease_until=None,
                progress=None,
            )
        case ev.Archived():
            return r(s, version=v, archived=True)
    return r(s, version=v)  # DeadLettered, ZombieRejected, Deduplicated: counted, nothing else


def fold(task_id: str, history: Iterable[ev.Event]) -> TaskState:
    state = initial(task_id)
    for event in history:
        state = evolve(state, event)
    return state
