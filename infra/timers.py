"""Durable timers on JetStream message schedules: one pending `@at` schedule per task.

A timer fires `lead` seconds before the due time into the task's due subject; the scheduler holds
the last stretch with a local timer (the server's scheduler ticks at >= 250 ms under load). A timer
that fires late or twice is harmless: the decider ignores a due time the task no longer has.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import APIError

from ordo.infra import subjects as sj


class Due(msgspec.Struct, frozen=True):
    tenant: str
    task_id: str
    due_at: datetime


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Due)


def decode_due(data: bytes) -> Due:
    return _dec.decode(data)


def schedule_header(fire_at: datetime) -> str:
    # Whole seconds, rounded down: the timer may only fire early, never late by the rounding.
    at = fire_at.astimezone(UTC).replace(microsecond=0)
    return "@at " + at.strftime("%Y-%m-%dT%H:%M:%SZ")


class Timers:
    def __init__(self, nc: NATS, lead_s: float, timeout: float = 5.0) -> None:
        self._js = nc.jetstream(timeout=timeout)
        self._lead = timedelta(seconds=lead_s)

    async def arm(self, tenant: str, task_id: str, due_at: datetime) -> None:
        """Replace the task's pending timer with one for `due_at`."""
        headers = {
            sj.SCHEDULE: schedule_header(due_at - self._lead),
            sj.SCHEDULE_TARGET: sj.due_subject(tenant, task_id),
        }
        data = _enc.encode(Due(tenant=tenant, task_id=task_id, due_at=due_at))
        await self._js.publish(sj.timer_subject(tenant, task_id), data, headers=headers)

    async def disarm(self, tenant: str, task_id: str) -> None:
        try:
            await self._js.purge_stream(sj.TIMERS_STREAM, subject=sj.timer_subject(tenant, task_id))
        except APIError:
            pass  # best effort: a stale timer is ignored by the decider
