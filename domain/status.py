"""Task statuses and who moves a task in and out of each one."""

from __future__ import annotations

import enum


class TaskStatus(enum.StrEnum):
    """The status of a task, derived only by folding its events.

    Each member names who moves a task into it and who moves it out.
    """

    # In: submit with a future run_at; update of run_at. Out: the scheduler's due timer (-> queued),
    # pause, cancel.
    SCHEDULED = "scheduled"
    # In: submit without delay, a due timer, resume, replay. A dispatch ticket is written with the event.
    # Out: a worker's attempt_started (-> running), pause, cancel.
    QUEUED = "queued"
    # In: pause of a scheduled/queued/retrying task. Out: resume (back to where it was), cancel.
    PAUSED = "paused"
    # In: attempt_started. Out: succeeded, attempt_failed/attempt_timed_out (-> retrying or failed),
    # cancel (-> cancelling), ack-deadline redelivery after a lost lease (a new attempt), and a
    # worker shutting down (attempt_released -> queued, budget kept).
    RUNNING = "running"
    # In: a retryable failure with attempts left (retry_scheduled). Out: the backoff timer (-> queued),
    # pause, cancel.
    RETRYING = "retrying"
    # In: cancel of a running task. Out: the worker confirms (-> cancelled), or the lease expires
    # (-> cancelled), or the attempt finishes first (succeeded/failed win the race).
    CANCELLING = "cancelling"
    # Terminal. In: a current attempt's result. Out: never (archive hides it).
    SUCCEEDED = "succeeded"
    # Terminal, also a dead letter. In: retries exhausted or a non-retryable failure.
    # Out: replay (-> queued, fresh attempt budget).
    FAILED = "failed"
    # Terminal. In: cancel of a scheduled/queued/paused/retrying task, or a confirmed cancel.
    # Out: replay (-> queued).
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
WAITING = frozenset({TaskStatus.SCHEDULED, TaskStatus.QUEUED, TaskStatus.RETRYING})
