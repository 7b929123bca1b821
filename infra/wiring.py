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
from ordo.infra.schedule_handler import ScheduleHandler, TaskDefaults
from ordo.infra.schedule_timers import ScheduleTimers
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers


def command_handler(nc: NATS, settings: Settings) -> CommandHandler:
    """The task command handler: the event store plus the task timers. Where nats-server fsyncs
    every write (`ORDO_SYNC_ALWAYS`), batch submits go out as atomic batches (decision 45)."""
    timers = Timers(nc, settings.timer_lead_s, fired_ttl_s=settings.timer_fired_ttl_s)
    return CommandHandler(EventStore(nc), timers, pipelined_batches=not settings.sync_always)


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
