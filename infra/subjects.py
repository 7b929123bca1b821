"""Every name on the wire: streams, subjects, consumers and headers. No subject literal lives elsewhere.

Event log stream ORDO_EVENTS (limits retention, no delete, no purge):
  ordo.evt.<tenant>.<queue>.<task_id>.<event>   task lifecycle events
  ordo.work.<tenant>.<queue>.<band>              dispatch tickets, written in the same atomic batch as
                                                 the event that made the task runnable
Timer stream ORDO_TIMERS (purge allowed, message schedules on):
  ordo.timer.task.<tenant>.<task_id>             one pending `@at` schedule per task
  ordo.due.<tenant>.<task_id>                    where a fired timer lands, read by the scheduler
Commands over NATS request/reply: ordo.cmd.<tenant>.<verb>.
"""

from __future__ import annotations

EVENTS_STREAM = "ORDO_EVENTS"
TIMERS_STREAM = "ORDO_TIMERS"

EVT_PREFIX = "ordo.evt"
WORK_PREFIX = "ordo.work"
TIMER_PREFIX = "ordo.timer"
DUE_PREFIX = "ordo.due"
CMD_PREFIX = "ordo.cmd"

EVENTS_SUBJECTS = [f"{EVT_PREFIX}.>", f"{WORK_PREFIX}.>"]
TIMERS_SUBJECTS = [f"{TIMER_PREFIX}.>", f"{DUE_PREFIX}.>"]

PROJECTION_CONSUMER = "projector"
SCHEDULER_CONSUMER = "scheduler"

# Headers
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQ = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
SCHEDULE = "Nats-Schedule"
SCHEDULE_TARGET = "Nats-Schedule-Target"
EVENT_ID = "Ordo-Event-Id"
CORRELATION_ID = "Ordo-Correlation-Id"
CAUSATION_ID = "Ordo-Causation-Id"
SCHEMA_VERSION = "Ordo-Schema-Version"
TRACEPARENT = "traceparent"
DIRECT_GET_API = "$JS.API.DIRECT.GET"


def event_subject(tenant: str, queue: str, task_id: str, event: str) -> str:
    return f"{EVT_PREFIX}.{tenant}.{queue}.{task_id}.{event}"


def task_events_filter(tenant: str, task_id: str) -> str:
    """All events of one task (the queue token is a wildcard: the id alone names the task)."""
    return f"{EVT_PREFIX}.{tenant}.*.{task_id}.*"


def all_events_filter() -> str:
    return f"{EVT_PREFIX}.>"


def work_subject(tenant: str, queue: str, band: int) -> str:
    return f"{WORK_PREFIX}.{tenant}.{queue}.{band}"


def work_filter(queue: str, band: int) -> str:
    return f"{WORK_PREFIX}.*.{queue}.{band}"


def work_consumer(queue: str, band: int) -> str:
    return f"work_{queue}_{band}"


def timer_subject(tenant: str, task_id: str) -> str:
    return f"{TIMER_PREFIX}.task.{tenant}.{task_id}"


def due_subject(tenant: str, task_id: str) -> str:
    return f"{DUE_PREFIX}.{tenant}.{task_id}"


def due_filter() -> str:
    return f"{DUE_PREFIX}.>"


def parse_event_subject(subject: str) -> tuple[str, str, str, str]:
    """(tenant, queue, task_id, event) of an event subject."""
    _, _, tenant, queue, task_id, event = subject.split(".", 5)
    return tenant, queue, task_id, event


def direct_get(stream: str) -> str:
    return f"{DIRECT_GET_API}.{stream}"
