"""`decide(command, state) -> events`: the task lifecycle rules, pure.

An invalid command raises a DomainError; a command with nothing left to do returns [] (a redelivered
completion, cancelling a cancelled task), so redelivery is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ordo.domain import commands as cmd
from ordo.domain import events as ev
from ordo.domain.errors import (
    IdempotencyConflict,
    InvalidTransition,
    LeaseHeld,
    TaskAlreadyExists,
    TaskNotFound,
)
from ordo.domain.state import TaskState
from ordo.domain.status import TERMINAL, WAITING, TaskStatus

Events = list[ev.Event]


def decide(command: cmd.TaskCommand, state: TaskState) -> Events:
    if isinstance(command, cmd.SubmitTask):
        return _submit(command, state)
    if not state.exists:
        raise TaskNotFound(command.task_id)
    handler: Callable[[Any, TaskState], Events] = _HANDLERS[type(command)]
    return handler(command, state)


def _submit(c: cmd.SubmitTask, s: TaskState) -> Events:
    if s.exists:
        if c.idempotency_key is not None and c.idempotency_key == s.idempotency_key:
            if c.body_hash == s.body_hash:
                return []
            raise IdempotencyConflict(c.task_id)
        raise TaskAlreadyExists(c.task_id)
    submitted = ev.Submitted(
        task_type=c.task_type,
        queue=c.queue,
        tenant=c.tenant,
        priority=c.priority,
        payload=c.payload,
        max_attempts=c.max_attempts,
        timeout_s=c.timeout_s,
        tags=c.tags,
        idempotency_key=c.idempotency_key,
        body_hash=c.body_hash,
    )
    if c.run_at is not None and c.run_at > c.now:
        return [submitted, ev.Scheduled(run_at=c.run_at)]
    return [submitted]


def _enqueue_due(c: cmd.EnqueueDue, s: TaskState) -> Events:
    # A stale timer (the task moved on, or was re-timed) does nothing.
    if s.status in (TaskStatus.SCHEDULED, TaskStatus.RETRYING) and s.due_at == c.due_at:
        return [ev.Queued(reason="due" if s.status is TaskStatus.SCHEDULED else "retry")]
    return []


def _lease_expired_events(s: TaskState) -> Events:
    """The current attempt lost its lease (its worker died or hung) before reporting."""
    lost: Events = [ev.AttemptTimedOut(attempt=s.attempt, reason="lease_expired")]
    if s.status is TaskStatus.CANCELLING:
        return [*lost, ev.Cancelled(reason="lease expired while cancelling", attempt=s.attempt)]
    if s.attempts_left <= 0:
        reason = f"attempts exhausted ({s.attempt})"
        return [*lost, ev.Failed(attempt=s.attempt, reason=reason), ev.DeadLettered(reason=reason)]
    return lost


def _start(c: cmd.StartAttempt, s: TaskState) -> Events:
    if c.dispatch != s.dispatch:
        return []  # a stale ticket: the task was re-ticketed, paused, edited or cancelled since
    if s.status is TaskStatus.QUEUED:
        return [_started(c, s)]
    if s.status in (TaskStatus.RUNNING, TaskStatus.CANCELLING):
        # The ticket came back after the ack deadline: the attempt holding it was abandoned.
        if s.lease_until is not None and c.now < s.lease_until:
            raise LeaseHeld(c.task_id, s.lease_until)
        events = _lease_expired_events(s)
        if len(events) == 1:
            return [*events, _started(c, s)]
        return events
    return []


def _started(c: cmd.StartAttempt, s: TaskState) -> ev.AttemptStarted:
    return ev.AttemptStarted(
        attempt=s.attempt + 1, worker_id=c.worker_id, lease_until=c.lease_until, dispatch=c.dispatch
    )


def _is_current(s: TaskState, attempt: int) -> bool:
    return s.status in (TaskStatus.RUNNING, TaskStatus.CANCELLING) and attempt == s.attempt


def _zombie(s: TaskState, attempt: int, worker_id: str, what: str) -> Events:
    return [ev.ZombieRejected(attempt=attempt, current_attempt=s.attempt, what=what, worker_id=worker_id)]


def _extend(c: cmd.ExtendLease, s: TaskState) -> Events:
    if not _is_current(s, c.attempt):
        return _zombie(s, c.attempt, c.worker_id, "lease_extended")
    return [ev.LeaseExtended(attempt=c.attempt, lease_until=c.lease_until)]


def _progress(c: cmd.ReportProgress, s: TaskState) -> Events:
    if not _is_current(s, c.attempt):
        return _zombie(s, c.attempt, c.worker_id, "progressed")
    return [ev.Progressed(attempt=c.attempt, pct=c.pct, note=c.note)]


def _complete(c: cmd.CompleteAttempt, s: TaskState) -> Events:
    if s.status is TaskStatus.SUCCEEDED and c.attempt == s.attempt:
        return []  # a redelivered completion
    if not _is_current(s, c.attempt):
        return _zombie(s, c.attempt, c.worker_id, "succeeded")
    return [ev.Succeeded(attempt=c.attempt, result=c.result)]


def _fail(c: cmd.FailAttempt, s: TaskState) -> Events:
    if not _is_current(s, c.attempt):
        done = (TaskStatus.RETRYING, TaskStatus.FAILED, TaskStatus.CANCELLED)
        if s.attempt == c.attempt and s.status in done:
            return []  # a redelivered failure report
        return _zombie(s, c.attempt, c.worker_id, "attempt_failed")
    first: ev.Event
    if c.timed_out:
        first = ev.AttemptTimedOut(attempt=c.attempt, reason="handler_timeout")
    else:
        first = ev.AttemptFailed(attempt=c.attempt, error=c.error, retryable=c.retryable)
    if s.status is TaskStatus.CANCELLING:
        return [first, ev.Cancelled(reason="cancelled while running", attempt=c.attempt)]
    if c.retryable and s.attempts_left > 0 and c.retry_at is not None:
        return [first, ev.RetryScheduled(attempt=c.attempt, retry_at=c.retry_at)]
    if not c.retryable:
        reason = "not retryable"
    elif s.attempts_left <= 0:
        reason = f"attempts exhausted ({c.attempt})"
    else:
        reason = "retryable, but no retry time was given"
    return [first, ev.Failed(attempt=c.attempt, reason=reason), ev.DeadLettered(reason=reason)]


def _confirm_cancelled(c: cmd.ConfirmCancelled, s: TaskState) -> Events:
    if s.status is TaskStatus.CANCELLED:
        return []
    if s.status is not TaskStatus.CANCELLING or c.attempt != s.attempt:
        return _zombie(s, c.attempt, c.worker_id, "cancelled")
    return [ev.Cancelled(reason="cancelled while running", attempt=c.attempt)]


def _release(c: cmd.ReleaseAttempt, s: TaskState) -> Events:
    if not _is_current(s, c.attempt):
        if s.attempt == c.attempt and s.status in (TaskStatus.QUEUED, TaskStatus.CANCELLED):
            return []  # a repeated release
        return _zombie(s, c.attempt, c.worker_id, "attempt_released")
    released = ev.AttemptReleased(attempt=c.attempt, worker_id=c.worker_id, reason=c.reason)
    if s.status is TaskStatus.CANCELLING:
        return [released, ev.Cancelled(reason="released while cancelling", attempt=c.attempt)]
    return [released]


def _cancel(c: cmd.CancelTask, s: TaskState) -> Events:
    if s.status in (TaskStatus.CANCELLED, TaskStatus.CANCELLING):
        return []
    if s.status in TERMINAL:
        raise InvalidTransition(c.task_id, s.status, "cancel")
    if s.status is TaskStatus.RUNNING:
        return [ev.CancelRequested(reason=c.reason)]
    return [ev.Cancelled(reason=c.reason or "cancelled before it ran", attempt=s.attempt)]


def _pause(c: cmd.PauseTask, s: TaskState) -> Events:
    if s.status is TaskStatus.PAUSED:
        return []
    if s.status not in WAITING:
        raise InvalidTransition(c.task_id, s.status, "pause")
    return [ev.Paused(reason=c.reason)]


def _resume(c: cmd.ResumeTask, s: TaskState) -> Events:
    if s.status is not TaskStatus.PAUSED:
        if s.status in WAITING:
            return []
        raise InvalidTransition(c.task_id, s.status, "resume")
    return [ev.Resumed()]


def _update(c: cmd.UpdateTask, s: TaskState) -> Events:
    if s.status not in (*WAITING, TaskStatus.PAUSED) or s.attempt > 0:
        raise InvalidTransition(c.task_id, s.status, "update")
    payload = c.payload if c.payload is not None else msgspec.Raw(b"null")
    events: Events = [ev.Updated(payload=payload, priority=c.priority, run_at=c.run_at)]
    if c.run_at is not None and s.status in (TaskStatus.QUEUED, TaskStatus.SCHEDULED):
        if c.run_at > c.now:
            events.append(ev.Scheduled(run_at=c.run_at))
        elif s.status is TaskStatus.SCHEDULED:
            events.append(ev.Queued(reason="updated"))
    return events


def _replay(c: cmd.ReplayTask, s: TaskState) -> Events:
    if s.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise InvalidTransition(c.task_id, s.status, "replay")
    return [ev.Replayed(reason=c.reason)]


def _archive(c: cmd.ArchiveTask, s: TaskState) -> Events:
    if s.archived:
        return []
    if s.status not in TERMINAL:
        raise InvalidTransition(c.task_id, s.status, "archive")
    return [ev.Archived()]


def _unarchive(c: cmd.UnarchiveTask, s: TaskState) -> Events:
    return [ev.Unarchived()] if s.archived else []


_HANDLERS: dict[type, Callable[[Any, TaskState], Events]] = {
    cmd.EnqueueDue: _enqueue_due,
    cmd.StartAttempt: _start,
    cmd.ExtendLease: _extend,
    cmd.ReportProgress: _progress,
    cmd.CompleteAttempt: _complete,
    cmd.FailAttempt: _fail,
    cmd.ConfirmCancelled: _confirm_cancelled,
    cmd.ReleaseAttempt: _release,
    cmd.CancelTask: _cancel,
    cmd.PauseTask: _pause,
    cmd.ResumeTask: _resume,
    cmd.UpdateTask: _update,
    cmd.ReplayTask: _replay,
    cmd.ArchiveTask: _archive,
    cmd.UnarchiveTask: _unarchive,
}
