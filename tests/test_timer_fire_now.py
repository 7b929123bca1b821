"""A timer due in under half a second is published fired at once (the server's scheduler may look at
an `@at` up to 250 ms late); any other is an `@at` schedule fired `lead` ahead of its due time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import nats.js.errors
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.schedule_timers import ScheduleTimers, decode_tick
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers, decode_due, time_token


async def _last(nc: NATS, subject: str) -> tuple[bytes, dict[str, str]] | None:
    try:
        msg = await nc.jetstream().get_last_msg(sj.TIMERS_STREAM, subject)
    except nats.js.errors.NotFoundError:
        return None
    return msg.data or b"", dict(msg.headers or {})


async def test_a_timer_due_now_is_published_fired_and_a_later_one_is_scheduled(
    nc: NATS, settings: Settings
) -> None:
    tenant = settings.tenant
    timers = Timers(nc, settings.timer_lead_s)
    soon = datetime.now(UTC) + timedelta(milliseconds=200)
    await timers.arm(tenant, "soon", soon)
    fired = await _last(nc, sj.due_subject(tenant, "soon"))
    assert fired is not None and decode_due(fired[0]).due_at == soon
    assert sj.MSG_TTL in fired[1]  # it expires like a fired copy
    assert await _last(nc, sj.timer_subject(tenant, "soon", time_token(soon))) is None

    later = datetime.now(UTC) + timedelta(seconds=60)
    await timers.arm(tenant, "later", later)
    assert await _last(nc, sj.due_subject(tenant, "later")) is None
    armed = await _last(nc, sj.timer_subject(tenant, "later", time_token(later)))
    assert armed is not None and armed[1][sj.SCHEDULE].startswith("@at ")


async def test_a_schedule_tick_due_now_is_published_fired(nc: NATS, settings: Settings) -> None:
    tenant = settings.tenant
    ticks = ScheduleTimers(nc, settings.timer_lead_s)
    soon = datetime.now(UTC) + timedelta(milliseconds=100)
    await ticks.arm(tenant, "every-second", soon)
    fired = await _last(nc, sj.schedule_due_subject(tenant, "every-second"))
    assert fired is not None and decode_tick(fired[0]).tick_at == soon
