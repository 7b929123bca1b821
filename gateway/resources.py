"""Response models: what the gateway answers, declared so the OpenAPI document can be checked.

Routes build plain dicts from the read models; these pydantic models validate and document them
(a route whose output drifts from its model answers 500 in tests, not silently). `Any` marks a
member that holds the caller's own JSON (payloads, results).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

# A request's free text: anything but NUL, which PostgreSQL's text and jsonb cannot hold.
NO_NUL = r"^[^\x00]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemModel(BaseModel):
    """application/problem+json (RFC 9457) with a stable `type` URI."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str


class SkippedEvent(_Model):
    """An event of this task a read model could not apply and skipped (DESIGN Revision 2): the
    log holds it, `?as_of_seq=` folds it, but the fields below may not reflect it."""

    projection: str
    seq: int
    event: str
    error: str
    at: datetime | None = None  # when the event was appended


class TaskResource(_Model):
    id: str
    type: str
    queue: str
    priority: int
    status: str
    attempts: int
    max_attempts: int
    timeout: float
    payload: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    tags: list[str]
    run_at: datetime | None = None
    worker_id: str | None = None
    lease_until: datetime | None = None
    progress: float | None = None
    archived: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_seq: int
    projection_errors: list[SkippedEvent] = []


class TaskList(_Model):
    items: list[TaskResource]
    next_cursor: str | None


class Accepted(_Model):
    """A command's outcome: the task, its status after the command, the log sequence to wait for."""

    id: str
    status: str
    seq: int


class BatchItem(_Model):
    id: str
    status: str
    seq: int
    created: bool


class BatchAccepted(_Model):
    items: list[BatchItem]
    count: int
    seq: int


class TimelineEntry(_Model):
    seq: int
    type: str
    at: datetime
    task_id: str
    queue: str
    attempt: int | None = None
    data: dict[str, Any]
    meta: dict[str, Any]


class Timeline(_Model):
    events: list[TimelineEntry]
    next_after: int | None = None  # the next page's `after`; null: the last page


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of a route's documented errors."""
    return {s: {"model": ProblemModel, "content": {"application/problem+json": {}}} for s in statuses}
