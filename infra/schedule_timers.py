"""A schedule's durable timer: an `@at` message schedule for its next tick.

Armed on `ordo.timer.sched.<tenant>.<schedule_id>.<tick>` (one subject per tick time, so arming the
next tick never replaces the timer of the tick the log still holds), it fires `lead` seconds early
into `ordo.due.sched.<tenant>.<schedule_id>`, where the scheduler holds it until the nominal tick
time. A stale or duplicate tick is harmless: the decider ignores a tick that is not the schedule's
armed `next_at`. The schedule message never ages out (a `@yearly` tick waits a year); its fired copy
expires after `fired_ttl_s`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.timers import DEFAULT_FIRED_TTL_S, publish_timer, time_token, ttl_header


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
    def __init__(
        self, nc: NATS, lead_s: float, timeout: float = 5.0, fired_ttl_s: float = DEFAULT_FIRED_TTL_S
    ) -> None:
        self._js = nc.jetstream(timeout=timeout)
        self._lead = timedelta(seconds=lead_s)
        self._fired_ttl = ttl_header(fired_ttl_s)

    async def arm(self, tenant: str, schedule_id: str, tick_at: datetime) -> None:
        """Arm the schedule's timer for `tick_at`; timers for other ticks stay as they are."""
        data = _enc.encode(SchedTick(tenant=tenant, schedule_id=schedule_id, tick_at=tick_at))
        subjects = (
            sj.schedule_timer_subject(tenant, schedule_id, time_token(tick_at)),
            sj.schedule_due_subject(tenant, schedule_id),
        )
        await publish_timer(self._js, subjects, data, tick_at, self._lead, self._fired_ttl)

    async def disarm(self, tenant: str, schedule_id: str, tick_at: datetime) -> None:
        """Cancel the timer for `tick_at` only."""
        subject = sj.schedule_timer_subject(tenant, schedule_id, time_token(tick_at))
        try:
            await self._js.purge_stream(sj.TIMERS_STREAM, subject=subject)
        except nats.errors.Error:  # APIError, a timeout, no responders
            pass  # best effort: a stale tick is ignored by the decider
