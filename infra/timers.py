"""Durable timers on JetStream message schedules: one pending `@at` schedule per (task, due time).

A timer fires `lead` seconds before the due time into the task's due subject; the scheduler holds
the last stretch with a local timer (the server's scheduler ticks at >= 250 ms under load). A timer
that fires late or twice is harmless: the decider ignores a due time the task no longer has.

The due time is a token of the timer's subject, so arming never replaces a timer for another due
time (re-arming the same due time replaces only itself). A command that arms before its append and
then stores nothing (a duplicate submit, a conflicting batch, an edit whose append failed) leaves
an extra timer that fires into nothing, never a task without the timer of its stored due time
(docs/decisions.md §4, audit F2).

The schedule message carries no expiry: the stream has no max age, so a timer a year away survives.
Its fired copy gets a per-message TTL (`Nats-Schedule-TTL`, `fired_ttl_s`) once the scheduler has had
ample time to act on it (audit F3).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj

# How long a fired timer message stays in ORDO_TIMERS (the scheduler acts on it within seconds).
DEFAULT_FIRED_TTL_S = 30 * 24 * 3600.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def time_token(at: datetime) -> str:
    """A subject token naming an instant exactly: microseconds since the epoch."""
    return str((at - _EPOCH) // timedelta(microseconds=1))


def ttl_header(seconds: float) -> str:
    """A Go duration for `Nats-Schedule-TTL` (whole seconds, at least one)."""
    return f"{max(1, int(seconds))}s"


class Timers:
    def __init__(
        self, nc: NATS, lead_s: float, timeout: float = 5.0, fired_ttl_s: float = DEFAULT_FIRED_TTL_S
    ) -> None:
        self._js = nc.jetstream(timeout=timeout)
        self.lead_s = lead_s
        self._lead = timedelta(seconds=lead_s)
        self.fired_ttl_s = fired_ttl_s
        self._fired_ttl = ttl_header(fired_ttl_s)

    async def arm(self, tenant: str, task_id: str, due_at: datetime) -> None:
        """Arm the task's timer for `due_at`; timers for other due times stay as they are."""
        headers = {
            sj.SCHEDULE: schedule_header(due_at - self._lead),
            sj.SCHEDULE_TARGET: sj.due_subject(tenant, task_id),
            sj.SCHEDULE_TTL: self._fired_ttl,
        }
        data = _enc.encode(Due(tenant=tenant, task_id=task_id, due_at=due_at))
        await self._js.publish(sj.timer_subject(tenant, task_id, time_token(due_at)), data, headers=headers)

    async def disarm(self, tenant: str, task_id: str, due_at: datetime) -> None:
        """Cancel the timer for `due_at` only: one armed meanwhile for another due time stays."""
        subject = sj.timer_subject(tenant, task_id, time_token(due_at))
        try:
            await self._js.purge_stream(sj.TIMERS_STREAM, subject=subject)
        except nats.errors.Error:  # APIError, a timeout, no responders
            pass  # best effort: a stale timer is ignored by the decider
