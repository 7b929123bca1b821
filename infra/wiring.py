"""Builders of the command side from the settings: the one place every process wires it.

The CLI's processes, `ordo up`'s children, the gateway's lifespan and the worker process all build
their command handler, schedule handler and queue controller here, so a new setting (a timer lead,
a fired-timer retention, task defaults) reaches every one of them at once.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.queue_control import QueueController
from ordo.infra.read_gate import WORKER_WAIT_S, ReadGate
from ordo.infra.schedule_handler import ScheduleHandler, TaskDefaults
from ordo.infra.schedule_timers import ScheduleTimers
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers


def command_handler(
    nc: NATS, settings: Settings, *, batch_submits: bool = True, worker: bool = False
) -> CommandHandler:
    """The task command handler: the event store plus the task timers. Where nats-server fsyncs
    every write (`ORDO_SYNC_ALWAYS`), batch submits go out as atomic batches (decision 45). Batch
    submits keep pace with the read model unless `ORDO_SUBMIT_BACKLOG` is 0 (decision 59);
    `batch_submits=False` (a worker, the scheduler: they submit none) leaves the gate out, and with it
    its subscription. `worker=True`: the handler times the events it appends, and the worker takes
    new tickets only while the read model shows them within `ORDO_WORKER_LAG_S` (decision 60)."""
    timers = Timers(nc, settings.timer_lead_s, fired_ttl_s=settings.timer_fired_ttl_s)
    gate = None
    if batch_submits and settings.submit_backlog > 0:
        gate = ReadGate(
            nc, settings.submit_backlog, settings.submit_backlog_wait_s, lag_s=settings.submit_lag_s
        )
    pace = None
    if worker and settings.worker_lag_s > 0:
        backlog = settings.submit_backlog or Settings.submit_backlog  # how far behind is catching up
        pace = ReadGate(nc, backlog, WORKER_WAIT_S, lag_s=settings.worker_lag_s)
    return CommandHandler(
        EventStore(nc), timers, pipelined_batches=not settings.sync_always, gate=gate, pace=pace
    )


def schedule_handler(nc: NATS, tasks: CommandHandler, settings: Settings | None = None) -> ScheduleHandler:
    """The schedule handler on top of `tasks`; its timers take the task timers' lead and retention.

    Without settings the task defaults (attempts, timeout) are the built-in ones."""
    timers = ScheduleTimers(nc, tasks.timers.lead_s, fired_ttl_s=tasks.timers.fired_ttl_s)
    if settings is None:
        return ScheduleHandler(tasks, timers)
    defaults = TaskDefaults(settings.default_max_attempts, settings.default_timeout_s)
    return ScheduleHandler(tasks, timers, defaults)


def queue_controller(nc: NATS, tasks: CommandHandler, settings: Settings) -> QueueController:
    """Queue pause/resume, appending through the same event store as the tasks."""
    return QueueController(nc, tasks.store, settings)
