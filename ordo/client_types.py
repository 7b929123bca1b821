"""What the client returns and raises: tasks, submissions, events and a small error tree.

    OrdoError                      any answer the gateway gave as problem+json, or no answer at all
    ├── InvalidRequest             400, 413, 422: the request is wrong; sending it again will not help
    ├── Unauthorized               401, 403: no key, a revoked key, or a role below the action
    ├── NotFound                   404: no such task in the caller's tenant
    ├── Conflict                   409: the task's state refuses the command, or an idempotency key
    │                              was reused with another body
    ├── RateLimited                429: too many requests; `retry_after` seconds
    └── Unavailable                503 (or no connection): try again after `retry_after` seconds
    WaitTimeout (TimeoutError)     `wait()` gave up before the task finished

The resource types decode the gateway's JSON leniently (unknown fields are ignored), so a newer
gateway with more fields does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """A task as the read model shows it (GET /v1/tasks/{id})."""

    id: str
    type: str
    queue: str
    status: str
    priority: int = 5
    attempts: int = 0
    max_attempts: int = 0
    timeout: float = 0.0
    payload: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    tags: list[str] = []
    run_at: datetime | None = None
    worker_id: str | None = None
    lease_until: datetime | None = None
    progress: float | None = None
    archived: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_seq: int = 0

    @property
    def done(self) -> bool:
        """True once the task is succeeded, failed (dead-lettered) or cancelled."""
        return self.status in TERMINAL_STATUSES


class Submitted(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a submit: the task's id, its first status and the log sequence it was stored at.

    `created` is False when an idempotency key matched a task submitted before (HTTP 200).
    """

    id: str
    status: str
    seq: int
    created: bool = True


class TaskEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a task's history; `seq` is its position in the event log (the SSE `id`)."""

    seq: int
    type: str
    at: datetime
    task_id: str
    queue: str
    attempt: int | None = None
    data: dict[str, Any] = {}
    meta: dict[str, Any] = {}


class OrdoError(Exception):
    """An error answer from the gateway (problem+json), or a failure to reach it."""

    def __init__(
        self,
        status: int,
        type_: str,
        title: str,
        detail: str,
        retry_after: float | None = None,
        problem: dict[str, Any] | None = None,
    ):
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.type = type_
        self.title = title
        self.detail = detail
        self.retry_after = retry_after
        # The whole problem+json answer: its other members, e.g. a rejected batch's `errors`
        # ([{"index", "detail"}]) or a field's `errors` ([{"loc", "msg"}]).
        self.problem = problem or {}

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The answer's `errors`: which items or fields were refused, and why ([] if it names none)."""
        errors = self.problem.get("errors")
        return errors if isinstance(errors, list) else []


class InvalidRequest(OrdoError):
    """400/413/422: the request is invalid and was not applied."""


class Unauthorized(OrdoError):
    """401/403: the API key is missing, unknown, revoked, or its role is below the action."""


class NotFound(OrdoError):
    """404: no such task (or other resource) in the caller's tenant."""


class Conflict(OrdoError):
    """409: the task's state refuses the command, or an idempotency key was reused differently."""


class RateLimited(OrdoError):
    """429: slow down; `retry_after` says for how long."""


class Unavailable(OrdoError):
    """503 or no connection: the gateway, the event log or the read model is not available now."""


class WaitTimeout(TimeoutError):
    """`wait()` reached its timeout before the task reached a final status."""

    def __init__(self, task_id: str, timeout: float, last: Task | None) -> None:
        status = last.status if last is not None else "unknown"
        super().__init__(f"task {task_id} not finished after {timeout:g}s (status {status})")
        self.task_id = task_id
        self.last = last


_BY_STATUS: dict[int, type[OrdoError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def error_from_response(status: int, body: bytes, retry_after: str | None) -> OrdoError:
    """The typed error for a non-2xx answer (problem+json body, or anything else)."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    wait: float | None = None
    if retry_after is not None:
        try:
            wait = max(0.0, float(retry_after))
        except ValueError:
            wait = None
    cls = _BY_STATUS.get(status, Unavailable if status >= 500 else OrdoError)
    return cls(
        status,
        str(doc.get("type", "about:blank")),
        str(doc.get("title", "error")),
        str(doc.get("detail", body[:200].decode(errors="replace"))),
        wait,
        doc,
    )
