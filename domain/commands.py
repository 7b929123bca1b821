"""Task commands: imperatives sent to the decider. Times and ids are set at the edge."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ordo.domain.events import ErrorInfo


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every task command."""

    task_id: str


class SubmitTask(Command, frozen=True, kw_only=True):
    tenant: str
    queue: str
    task_type: str
    now: datetime
    payload: msgspec.Raw = msgspec.Raw(b"null")
    priority: int = 5
    run_at: datetime | None = None
    max_attempts: int = 3
    timeout_s: float = 300.0
    tags: tuple[str, ...] = ()
    idempotency_key: str | None = None
    body_hash: str | None = None


class EnqueueDue(Command, frozen=True, kw_only=True):
    """A durable timer fired: a scheduled or retrying task becomes runnable."""

    due_at: datetime


class StartAttempt(Command, frozen=True, kw_only=True):
    """A worker took the task's dispatch ticket number `dispatch`."""

    dispatch: int
    worker_id: str
    now: datetime
    lease_until: datetime


class ExtendLease(Command, frozen=True, kw_only=True):
    attempt: int
    worker_id: str
    lease_until: datetime


class ReportProgress(Command, frozen=True, kw_only=True):
    attempt: int
    worker_id: str
    pct: float | None = None
    note: str = ""


class CompleteAttempt(Command, frozen=True, kw_only=True):
    attempt: int
    worker_id: str
    result: msgspec.Raw = msgspec.Raw(b"null")


class FailAttempt(Command, frozen=True, kw_only=True):
    """An attempt ended without a result.

    `retry_at` is the edge's choice of the next attempt's time (backoff with jitter); it is used only
    when the failure is retryable and attempts remain. `timed_out` records the handler timeout.
    """

    attempt: int
    worker_id: str
    error: ErrorInfo
    retryable: bool = True
    timed_out: bool = False
    retry_at: datetime | None = None


class ConfirmCancelled(Command, frozen=True, kw_only=True):
    """The worker stopped a handler after cancel_requested (or abandoned it after the grace period)."""

    attempt: int
    worker_id: str


class ReleaseAttempt(Command, frozen=True, kw_only=True):
    """A worker hands its running attempt back unfinished (graceful shutdown, drain past the grace).

    Not a failure: the task goes back to `queued` without using up an attempt, and the worker's
    own ticket (nak'ed right after) starts the next attempt at once, on any worker.
    """

    attempt: int
    worker_id: str
    reason: str = "worker shutdown"


class CancelTask(Command, frozen=True, kw_only=True):
    reason: str = ""


class PauseTask(Command, frozen=True, kw_only=True):
    reason: str = ""


class ResumeTask(Command, frozen=True, kw_only=True):
    pass


class UpdateTask(Command, frozen=True, kw_only=True):
    now: datetime
    payload: msgspec.Raw | None = None
    priority: int | None = None
    run_at: datetime | None = None


class ReplayTask(Command, frozen=True, kw_only=True):
    """Run a failed or cancelled task again: same id, fresh attempt budget, numbering continues."""

    reason: str = ""


class ArchiveTask(Command, frozen=True, kw_only=True):
    pass


class UnarchiveTask(Command, frozen=True, kw_only=True):
    """Undo an archive: the task is listed again."""


TaskCommand = (
    SubmitTask
    | EnqueueDue
    | StartAttempt
    | ExtendLease
    | ReportProgress
    | CompleteAttempt
    | FailAttempt
    | ConfirmCancelled
    | ReleaseAttempt
    | CancelTask
    | PauseTask
    | ResumeTask
    | UpdateTask
    | ReplayTask
    | ArchiveTask
    | UnarchiveTask
)
