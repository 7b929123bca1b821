"""Every name on the wire: streams, subjects, consumers and headers. No subject literal lives elsewhere.

Event log stream ORDO_EVENTS (limits retention, no delete, no purge):
  ordo.evt.<tenant>.<queue>.<d>.<task_id>.<event>  task lifecycle events; <d> is the dispatch token:
                                                   b0|b1|b2 (the priority band) on the one event of an
                                                   append that makes the task runnable with a new
                                                   dispatch number, `n` on every other event. The band
                                                   consumers filter the log itself: the runnable event
                                                   is its own dispatch ticket (docs/decisions.md 27).
  ordo.work.<tenant>.<queue>.copy.<b>              a copy of a runnable event of band <b> (b0|b1|b2): a
                                                   paused queue's dispatch moved back on resume
  ordo.work.<tenant>.<queue>.copy                  the same, of every band, before decision 57 (read only)
  ordo.work.<tenant>.<queue>.held                  the dispatches of a tenant's paused queue
  ordo.work.<tenant>.<queue>.lim.<lane>            the dispatches of one type-limited task type
  ordo.work.<tenant>.<queue>.wait.<lane>           a dispatch a worker had no handler for, for one
                                                   that has it (workers/handover.py)
  ordo.sched.<tenant>.<schedule_id>.<event>        schedule events (created, fired, skipped, missed, ...)
  ordo.queue.<tenant>.<queue>.<event>              queue control events (paused, resumed)
Timer stream ORDO_TIMERS (purge allowed, message schedules on):
  ordo.timer.task.<tenant>.<task_id>.<due>       one pending `@at` schedule per task and due time
  ordo.due.<tenant>.<task_id>                    where a fired timer lands, read by the scheduler
  ordo.timer.sched.<tenant>.<schedule_id>.<tick> one pending `@at` schedule per schedule and tick time
  ordo.due.sched.<tenant>.<schedule_id>          where a schedule's tick lands (5 tokens: never a task's)
Commands over NATS request/reply: ordo.cmd.<tenant>.<verb>.
"""

from __future__ import annotations

import hashlib

EVENTS_STREAM = "ORDO_EVENTS"
TIMERS_STREAM = "ORDO_TIMERS"

EVT_PREFIX = "ordo.evt"
WORK_PREFIX = "ordo.work"
TIMER_PREFIX = "ordo.timer"
DUE_PREFIX = "ordo.due"
CMD_PREFIX = "ordo.cmd"
SCHED_PREFIX = "ordo.sched"
QUEUE_PREFIX = "ordo.queue"

EVENTS_SUBJECTS = [f"{EVT_PREFIX}.>", f"{WORK_PREFIX}.>", f"{SCHED_PREFIX}.>", f"{QUEUE_PREFIX}.>"]
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
SCHEDULE_TTL = "Nats-Schedule-TTL"
MSG_TTL = "Nats-TTL"
EVENT_ID = "Ordo-Event-Id"
CORRELATION_ID = "Ordo-Correlation-Id"
CAUSATION_ID = "Ordo-Causation-Id"
SCHEMA_VERSION = "Ordo-Schema-Version"
TRACEPARENT = "traceparent"
DIRECT_GET_API = "$JS.API.DIRECT.GET"
# NATS command API (request/reply; see docs/nats-api.md): request and reply headers.
AUTHORIZATION = "Authorization"
REPLY_STATUS = "Ordo-Status"
REPLY_ERROR = "Ordo-Error"
CMD_VERBS = ("submit", "batch", "get", "cancel", "retry", "pause", "resume")  # gateway.nats_api.VERBS
CMD_QUEUE_GROUP = "ordo-gateway"


NOT_RUNNABLE = "n"
BAND_TOKENS = ("b0", "b1", "b2")


def band_token(band: int | None) -> str:
    """The dispatch token of an event subject: `b<band>` for a runnable event, else `n`."""
    return NOT_RUNNABLE if band is None else BAND_TOKENS[band]


def event_subject(tenant: str, queue: str, task_id: str, event: str, band: int | None = None) -> str:
    """A task event's subject; `band` is given for the event that makes the task runnable."""
    return f"{EVT_PREFIX}.{tenant}.{queue}.{band_token(band)}.{task_id}.{event}"


def task_events_filter(tenant: str, task_id: str) -> str:
    """All events of one task (queue and dispatch tokens are wildcards: the id alone names the task)."""
    return f"{EVT_PREFIX}.{tenant}.*.*.{task_id}.*"


def events_named_filter(event: str) -> str:
    """One kind of task event, every tenant, queue and task (e.g. every cancel_requested)."""
    return f"{EVT_PREFIX}.*.*.*.*.{event}"


def runnable_filter(queue: str, band: int) -> str:
    """The runnable events of one queue and band, every tenant: a band consumer's filter."""
    return f"{EVT_PREFIX}.*.{queue}.{BAND_TOKENS[band]}.*.*"


def tenant_events_filter(tenant: str) -> str:
    """Every task event of one tenant."""
    return f"{EVT_PREFIX}.{tenant}.>"


def cmd_subject(tenant: str, verb: str) -> str:
    """A command request subject, e.g. ordo.cmd.acme.submit."""
    return f"{CMD_PREFIX}.{tenant}.{verb}"


def cmd_filter() -> str:
    return f"{CMD_PREFIX}.*.*"


def parse_cmd_subject(subject: str) -> tuple[str, str]:
    """(tenant, verb) of a command subject; ValueError for anything else."""
    parts = subject.split(".")
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != CMD_PREFIX:
        raise ValueError(f"not a command subject: {subject}")
    return parts[2], parts[3]


def all_events_filter() -> str:
    return f"{EVT_PREFIX}.>"


def work_consumer(queue: str, band: int) -> str:
    return f"work_{queue}_{band}"


# A copy of a runnable event travels with its origin, so a worker starts it exactly like the event
# (the task's expected last sequence is the origin's sequence): lanes, held and released dispatches.
DISPATCH_SUBJECT = "Ordo-Dispatch-Subject"
DISPATCH_SEQ = "Ordo-Dispatch-Seq"


def copy_work_subject(tenant: str, queue: str, band: int) -> str:
    """Where a paused queue's dispatches of one band go back on resume (read next to that band, with
    its weight: docs/decisions.md 57)."""
    return f"{WORK_PREFIX}.{tenant}.{queue}.copy.{BAND_TOKENS[band]}"


def copy_work_filter(queue: str, band: int) -> str:
    return f"{WORK_PREFIX}.*.{queue}.copy.{BAND_TOKENS[band]}"


def copy_work_consumer(queue: str, band: int) -> str:
    return f"copy_{queue}_{band}"


# Before decision 57 every band's dispatches went back to one copy subject per tenant and queue, read
# in arrival order. Still read (an upgrade may find tickets there), never written by this version.
def legacy_copy_work_subject(tenant: str, queue: str) -> str:
    return f"{WORK_PREFIX}.{tenant}.{queue}.copy"


def legacy_copy_work_filter(queue: str) -> str:
    return f"{WORK_PREFIX}.*.{queue}.copy"


def legacy_copy_work_consumer(queue: str) -> str:
    return f"work_{queue}_copy"


# Durable consumers a tenant's own services may create on ORDO_EVENTS (the app-<tenant> NATS user):
# a fixed set of names, because NATS permissions match whole subject tokens only and a consumer
# name is one token (`app_<tenant>_*` cannot be granted; docs/decisions.md 19).
APP_CONSUMER_SLOTS = 8


def app_consumer(tenant: str, slot: int) -> str:
    """The name of one of a tenant's own consumers, slot 1..APP_CONSUMER_SLOTS."""
    if not 1 <= slot <= APP_CONSUMER_SLOTS:
        raise ValueError(f"app consumer slot must be 1..{APP_CONSUMER_SLOTS}")
    return f"app_{tenant}_{slot}"


def app_consumers(tenant: str) -> tuple[str, ...]:
    return tuple(app_consumer(tenant, slot) for slot in range(1, APP_CONSUMER_SLOTS + 1))


# A tenant's paused queue: its tickets wait here, one token beside the bands (never matched by a band
# or lane filter), each with the subject it came from, until the queue is resumed (workers.queue_pause).
#   ordo.work.<tenant>.<queue>.held
HELD_FROM = "Ordo-Held-From"


def held_work_subject(tenant: str, queue: str) -> str:
    return f"{WORK_PREFIX}.{tenant}.{queue}.held"


def held_work_consumer(tenant: str, queue: str) -> str:
    """One durable per (tenant, queue); hashed because both names may contain `_`."""
    return "held_" + hashlib.sha256(f"{tenant}.{queue}".encode()).hexdigest()[:16]


def parse_work_subject(subject: str) -> tuple[str, str] | None:
    """(tenant, queue) of a dispatch: a runnable event, or a copy, lane or held subject; None for
    anything else."""
    parts = subject.split(".")
    if len(parts) == 7 and f"{parts[0]}.{parts[1]}" == EVT_PREFIX and parts[4] in BAND_TOKENS:
        return parts[2], parts[3]
    if len(parts) < 5 or f"{parts[0]}.{parts[1]}" != WORK_PREFIX:
        return None
    return parts[2], parts[3]


def is_work_subject(subject: str) -> bool:
    """A copy, lane or held subject (`ordo.work.>`), not an event."""
    return subject.startswith(f"{WORK_PREFIX}.")


def timer_subject(tenant: str, task_id: str, due_token: str) -> str:
    """The timer of one task for one due time (`due_token`: infra.timers.time_token)."""
    return f"{TIMER_PREFIX}.task.{tenant}.{task_id}.{due_token}"


def due_subject(tenant: str, task_id: str) -> str:
    return f"{DUE_PREFIX}.{tenant}.{task_id}"


def due_filter() -> str:
    return f"{DUE_PREFIX}.>"


def parse_event_subject(subject: str) -> tuple[str, str, str, str]:
    """(tenant, queue, task_id, event) of an event subject (7 tokens; the 6-token layout of the
    first version, without the dispatch token, is still read)."""
    parts = subject.split(".")
    if len(parts) == 7:
        return parts[2], parts[3], parts[5], parts[6]
    if len(parts) == 6:
        return parts[2], parts[3], parts[4], parts[5]
    raise ValueError(f"not a task event subject: {subject}")


def dispatch_band(subject: str) -> int | None:
    """The band of a runnable event's subject; None for any other subject."""
    parts = subject.split(".")
    if len(parts) == 7 and parts[4] in BAND_TOKENS:
        return BAND_TOKENS.index(parts[4])
    return None


def schedule_event_subject(tenant: str, schedule_id: str, event: str) -> str:
    return f"{SCHED_PREFIX}.{tenant}.{schedule_id}.{event}"


def schedule_events_filter(tenant: str, schedule_id: str) -> str:
    """All events of one schedule."""
    return f"{SCHED_PREFIX}.{tenant}.{schedule_id}.*"


def all_schedule_events_filter() -> str:
    return f"{SCHED_PREFIX}.>"


def parse_schedule_subject(subject: str) -> tuple[str, str, str]:
    """(tenant, schedule_id, event) of a schedule event subject."""
    _, _, tenant, schedule_id, event = subject.split(".", 4)
    return tenant, schedule_id, event


def schedule_timer_subject(tenant: str, schedule_id: str, tick_token: str) -> str:
    return f"{TIMER_PREFIX}.sched.{tenant}.{schedule_id}.{tick_token}"


def schedule_due_subject(tenant: str, schedule_id: str) -> str:
    return f"{DUE_PREFIX}.sched.{tenant}.{schedule_id}"


def is_schedule_due(subject: str) -> bool:
    """A schedule tick (ordo.due.sched.<tenant>.<id>) rather than a task's due timer (4 tokens)."""
    return subject.count(".") == 4 and subject.startswith(f"{DUE_PREFIX}.sched.")


def queue_event_subject(tenant: str, queue: str, event: str) -> str:
    return f"{QUEUE_PREFIX}.{tenant}.{queue}.{event}"


def queue_events_filter(tenant: str, queue: str) -> str:
    return f"{QUEUE_PREFIX}.{tenant}.{queue}.*"


def all_queue_events_filter() -> str:
    return f"{QUEUE_PREFIX}.>"


def parse_queue_subject(subject: str) -> tuple[str, str, str]:
    """(tenant, queue, event) of a queue event subject."""
    _, _, tenant, queue, event = subject.split(".", 4)
    return tenant, queue, event


def direct_get(stream: str) -> str:
    return f"{DIRECT_GET_API}.{stream}"


def ack_delivered_at(tokens: int) -> int | None:
    """Where the delivery count sits in a JetStream delivery's ack subject of `tokens` dot-separated
    tokens (the stream sequence, consumer sequence and timestamp follow it); None when no ack subject
    has that many. `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>`
    (9 tokens), or with a domain and an account hash after `ACK` (11, or 12 with a random token)."""
    if tokens == 9:
        return 4
    return 6 if tokens >= 11 else None


# -- Workers: registry heartbeats, control, per-type limit lanes, the local pool ------------------
# Stream ORDO_WORKERS (limits, one message kept per subject): the last heartbeat of each worker.
#   ordo.worker.hb.<worker_id>                     a worker's announcement + heartbeat (JSON)
# Core NATS request/reply (no stream):
#   ordo.worker.ctl.<worker_id>                    control of one worker ({"op": "drain"})
#   ordo.local.ctl                                 `ordo up`'s worker pool ({"op": "scale"|"kill"})
# Per-type concurrency lanes live in ORDO_EVENTS under `ordo.work.>` (never matched by a band filter):
#   ordo.work.<tenant>.<queue>.lim.<lane>          dispatches of one limited task type
WORKERS_STREAM = "ORDO_WORKERS"
WORKER_PREFIX = "ordo.worker"
WORKERS_SUBJECTS = [f"{WORKER_PREFIX}.hb.>"]
LOCAL_CONTROL = "ordo.local.ctl"


def worker_heartbeat_subject(worker_id: str) -> str:
    return f"{WORKER_PREFIX}.hb.{worker_id}"


def worker_heartbeats_filter() -> str:
    return f"{WORKER_PREFIX}.hb.>"


def worker_control_subject(worker_id: str) -> str:
    return f"{WORKER_PREFIX}.ctl.{worker_id}"


def limited_work_subject(tenant: str, queue: str, lane: str) -> str:
    return f"{WORK_PREFIX}.{tenant}.{queue}.lim.{lane}"


def limited_work_filter(queue: str, lane: str) -> str:
    return f"{WORK_PREFIX}.*.{queue}.lim.{lane}"


_LANE_TOKENS = len(limited_work_subject("t", "q", "l").split("."))


def is_limited_work_subject(subject: str) -> bool:
    """Whether `subject` is a type-limited lane's (`ordo.work.<tenant>.<queue>.lim.<lane>`), by its
    tokens: a queue or tenant named `lim` does not make a band's ticket one."""
    tokens = subject.split(".")
    return len(tokens) == _LANE_TOKENS and subject.startswith(WORK_PREFIX + ".") and tokens[4] == "lim"


def limited_work_consumer(queue: str, lane: str) -> str:
    return f"lim_{queue}_{lane}"


# A ticket of a type its worker has no handler for (workers/handover.py): a copy waits on the type's
# handover subject in ORDO_EVENTS, read by one durable per (queue, type) that only workers with the
# handler pull from, when told over core NATS (no stream) that a copy waits there.
#   ordo.work.<tenant>.<queue>.wait.<lane>         the copies of one type's dispatches
#   ordo.worker.wait.<queue>.<lane>                "a copy of this type waits" (empty body)
def handover_subject(tenant: str, queue: str, lane: str) -> str:
    return f"{WORK_PREFIX}.{tenant}.{queue}.wait.{lane}"


def handover_filter(queue: str, lane: str) -> str:
    return f"{WORK_PREFIX}.*.{queue}.wait.{lane}"


def handover_consumer(queue: str, lane: str) -> str:
    return f"wait_{queue}_{lane}"


def handover_notice_subject(queue: str, lane: str) -> str:
    return f"{WORKER_PREFIX}.wait.{queue}.{lane}"


def handover_notices_filter(queue: str) -> str:
    return f"{WORKER_PREFIX}.wait.{queue}.*"
