"""A schedule's one durable timer: an `@at` message schedule for its next tick.

Armed on `ordo.timer.sched.<tenant>.<schedule_id>` (re-arming replaces the pending schedule), it
fires `lead` seconds early into `ordo.due.sched.<tenant>.<schedule_id>`, where the scheduler holds it
until the nominal tick time. A stale or duplicate tick is harmless: the decider ignores a tick that
is not the schedule's armed `next_at`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import APIError

from ordo.infra import subjects as sj
from ordo.infra.timers import schedule_header


class SchedTick(msgspec.Struct, frozen=True):
    """The payload of a fired schedule timer."""

    tenant: str
    schedule_id: str
    tick_at: datetime


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(SchedTick)


def decode_tick(data: bytes) -> SchedTick:
    return _dec.decode(data)


class ScheduleTimers:
    def __init__(self, nc: NATS, lead_s: float, timeout: float = 5.0) -> None:
        self._js = nc.jetstream(timeout=timeout)
        self._lead = timedelta(seconds=lead_s)

    async def arm(self, tenant: str, schedule_id: str, tick_at: datetime) -> None:
        """Replace the schedule's pending timer with one for `tick_at`."""
        headers = {
            sj.SCHEDULE: schedule_header(tick_at - self._lead),
            sj.SCHEDULE_TARGET: sj.schedule_due_subject(tenant, schedule_id),
        }
        data = _enc.encode(SchedTick(tenant=tenant, schedule_id=schedule_id, tick_at=tick_at))
        await self._js.publish(sj.schedule_timer_subject(tenant, schedule_id), data, headers=headers)

    async def disarm(self, tenant: str, schedule_id: str) -> None:
        try:
            await self._js.purge_stream(
                sj.TIMERS_STREAM, subject=sj.schedule_timer_subject(tenant, schedule_id)
            )
        except APIError:
            pass  # best effort: a stale tick is ignored by the decider
