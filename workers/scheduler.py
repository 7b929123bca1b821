"""The scheduler: turns fired durable timers into `EnqueueDue` commands, punctually.

A timer fires `timer_lead_s` before the due time (the server's scheduler ticks at >= 250 ms under
load); the scheduler holds the message with a local timer until the due time, then enqueues the task
and acks. Several schedulers may share the durable consumer: each message goes to one of them, and a
duplicate is ignored by the decider (the task no longer has that due time).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

from domain.commands import EnqueueDue
from domain.errors import DomainError
from infra import subjects as sj
from infra.command_handler import CommandHandler
from infra.event_store import EventStoreError
from infra.timers import decode_due


@dataclass(frozen=True)
class SchedulerConfig:
    ack_wait_s: float = 30.0
    fetch_batch: int = 256
    max_held: int = 100_000

    def __post_init__(self) -> None:
        if self.ack_wait_s <= 0 or self.fetch_batch < 1 or self.max_held < self.fetch_batch:
            raise ValueError("invalid scheduler config")


class Scheduler:
    def __init__(
        self,
        nc: NATS,
        handler: CommandHandler,
        config: SchedulerConfig | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._nc = nc
        self._handler = handler
        self._config = config or SchedulerConfig()
        self._log = logger or logging.getLogger("ordo.scheduler")
        self._stop = asyncio.Event()
        self._held: set[asyncio.Task[None]] = set()

    async def shutdown(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        js = self._nc.jetstream()
        cfg = ConsumerConfig(
            durable_name=sj.SCHEDULER_CONSUMER,
            filter_subject=sj.due_filter(),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._config.ack_wait_s,
            max_ack_pending=self._config.max_held,
        )
        await js.add_consumer(sj.TIMERS_STREAM, cfg)
        sub = await js.pull_subscribe_bind(sj.SCHEDULER_CONSUMER, sj.TIMERS_STREAM)
        try:
            while not self._stop.is_set():
                room = self._config.max_held - len(self._held)
                if room <= 0:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    msgs = await sub.fetch(min(room, self._config.fetch_batch), timeout=1.0)
                except (FetchTimeoutError, NatsTimeout):
                    continue
                for msg in msgs:
                    task = asyncio.create_task(self._hold(msg))
                    self._held.add(task)
                    task.add_done_callback(self._held.discard)
        finally:
            for task in list(self._held):
                task.cancel()
            await asyncio.gather(*self._held, return_exceptions=True)
            await sub.unsubscribe()

    async def _hold(self, msg: Msg) -> None:
        try:
            due = decode_due(msg.data)
        except Exception:  # noqa: BLE001 - a foreign message must not block the timers
            self._log.error("undecodable timer message on %s: terminated", msg.subject)
            await msg.term()
            return
        # Hold until due; extend the ack deadline while holding longer than a third of it.
        while True:
            wait = (due.due_at - datetime.now(UTC)).total_seconds()
            if wait <= 0:
                break
            step = min(wait, self._config.ack_wait_s / 3)
            await asyncio.sleep(step)
            if wait > step:
                await msg.in_progress()
        try:
            await self._handler.execute(due.tenant, EnqueueDue(task_id=due.task_id, due_at=due.due_at))
        except DomainError as exc:
            self._log.info("timer for %s ignored: %s", due.task_id, exc)
        except EventStoreError as exc:
            self._log.warning("timer for %s will retry: %s", due.task_id, exc)
            await msg.nak(delay=1.0)
            return
        await msg.ack()
