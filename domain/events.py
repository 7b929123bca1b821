"""Task events: facts in the past tense, the wire contract of the event log.

Schema rules: a new field gets a default; a field is never retyped or renamed; a breaking change is a
new tag plus an upcaster. Metadata (event id, correlation, trace context, stored_at) travels in
message headers and the stream, never in these types.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ordo.domain.codec import Codec

SCHEMA_VERSION = 1


class Event(msgspec.Struct, frozen=True, tag_field="event", omit_defaults=True):
    """Base of every task event; the tag is the snake_case event name."""


class Submitted(Event, frozen=True, tag="submitted"):
    task_type: str
    queue: str
    tenant: str
    priority: int = 5
    payload: msgspec.Raw = msgspec.Raw(b"null")
    max_attempts: int = 3
    timeout_s: float = 300.0
    tags: tuple[str, ...] = ()
    idempotency_key: str | None = None
    body_hash: str | None = None


class Scheduled(Event, frozen=True, tag="scheduled"):
    run_at: datetime


class Queued(Event, frozen=True, tag="queued"):
    reason: str = "due"


class Paused(Event, frozen=True, tag="paused"):
    reason: str = ""


class Resumed(Event, frozen=True, tag="resumed"):
    pass


class Updated(Event, frozen=True, tag="updated"):
    # JSON null means "payload unchanged" (msgspec cannot decode Raw inside a union with None).
    payload: msgspec.Raw = msgspec.Raw(b"null")
    priority: int | None = None
    run_at: datetime | None = None


class AttemptStarted(Event, frozen=True, tag="attempt_started"):
    attempt: int
    worker_id: str
    lease_until: datetime
    dispatch: int = 0


class LeaseExtended(Event, frozen=True, tag="lease_extended"):
    attempt: int
    lease_until: datetime


class Progressed(Event, frozen=True, tag="progressed"):
    attempt: int
    pct: float | None = None
    note: str = ""


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """What went wrong in an attempt."""

    kind: str
    message: str = ""
    traceback: str = ""


class AttemptFailed(Event, frozen=True, tag="attempt_failed"):
    attempt: int
    error: ErrorInfo
    retryable: bool = True


class AttemptTimedOut(Event, frozen=True, tag="attempt_timed_out"):
    attempt: int
    reason: str = "handler_timeout"  # or "lease_expired"

    def error(self) -> ErrorInfo:
        """The error this leaves on its task, named like the others (a kind per cause)."""
        if self.reason == "lease_expired":
            return ErrorInfo(
                kind="LeaseExpired",
                message="the attempt's lease expired: its worker stopped extending it (killed, frozen,"
                " blocked in its event loop, or cut off from NATS)",
            )
        return ErrorInfo(kind="Timeout", message="the handler exceeded the task's timeout")


class RetryScheduled(Event, frozen=True, tag="retry_scheduled"):
    attempt: int
    retry_at: datetime


class Succeeded(Event, frozen=True, tag="succeeded"):
    attempt: int
    result: msgspec.Raw = msgspec.Raw(b"null")


class Failed(Event, frozen=True, tag="failed"):
    attempt: int
    reason: str = ""


class DeadLettered(Event, frozen=True, tag="dead_lettered"):
    reason: str = ""


class CancelRequested(Event, frozen=True, tag="cancel_requested"):
    reason: str = ""


class Cancelled(Event, frozen=True, tag="cancelled"):
    reason: str = ""
    attempt: int = 0


class AttemptReleased(Event, frozen=True, tag="attempt_released"):
    """The worker handed the attempt back unfinished; it does not count against the budget."""

    attempt: int
    worker_id: str = ""
    reason: str = ""


class Replayed(Event, frozen=True, tag="replayed"):
    reason: str = ""


class Archived(Event, frozen=True, tag="archived"):
    pass


class Unarchived(Event, frozen=True, tag="unarchived"):
    pass


class ZombieRejected(Event, frozen=True, tag="zombie_rejected"):
    attempt: int
    current_attempt: int
    what: str  # the rejected report: "succeeded", "attempt_failed", ...
    worker_id: str = ""


class Deduplicated(Event, frozen=True, tag="deduplicated"):
    idempotency_key: str


TaskEvent = (
    Submitted
    | Scheduled
    | Queued
    | Paused
    | Resumed
    | Updated
    | AttemptStarted
    | LeaseExtended
    | Progressed
    | AttemptFailed
    | AttemptTimedOut
    | RetryScheduled
    | Succeeded
    | Failed
    | DeadLettered
    | CancelRequested
    | Cancelled
    | AttemptReleased
    | Replayed
    | Archived
    | Unarchived
    | ZombieRejected
    | Deduplicated
)

EVENT_TYPES: tuple[type[Event], ...] = TaskEvent.__args__
EVENT_NAMES: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in EVENT_TYPES)

_codec: Codec[TaskEvent] = Codec(TaskEvent)


def event_name(event: Event) -> str:
    """The snake_case name of an event (its tag, also its subject token)."""
    return _codec.name(event)


def encode_event(event: Event) -> bytes:
    return _codec.encode(event)


def decode_event(data: bytes) -> TaskEvent:
    """Decode one stored event; raises msgspec.DecodeError/ValidationError for a foreign payload."""
    return _codec.decode(data)
