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
ample time to act on it (audit F3). A timer due in under half a second (a short retry backoff or delay,
a schedule's first tick) is published as its fired copy at once (`publish_timer`): the server's
scheduler may look at an `@at` up to 250 ms late.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

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


# A timer due sooner than this is not scheduled: the server's scheduler may look at an `@at` up to
# 250 ms late under load (engine notes), which a timer armed `lead` ahead absorbs, but one due in
# less than that would not. Its fired copy is published at once instead, and the scheduler holds it
# until the due time as it holds any other.
FIRE_NOW_WITHIN = timedelta(milliseconds=500)


async def publish_timer(
    js: JetStreamContext,
    subjects: tuple[str, str],
    data: bytes,
    due_at: datetime,
    lead: timedelta,
    fired_ttl: str,
) -> None:
    """Arm one timer: an `@at` schedule on the timer subject (`subjects[0]`) that fires `data` into
    the due subject (`subjects[1]`) `lead` before `due_at`, or, when `due_at` is (almost) now, the
    fired copy itself."""
    timer_subject, due_subject = subjects
    if due_at - datetime.now(UTC) <= FIRE_NOW_WITHIN:
        await js.publish(due_subject, data, headers={sj.MSG_TTL: fired_ttl})
        return
    await js.publish(timer_subject, data, headers=schedule_headers(due_subject, due_at - lead, fired_ttl))


def schedule_headers(due_subject: str, fire_at: datetime, fired_ttl: str) -> dict[str, str]:
    """The headers of a pending `@at` timer: fire at `fire_at` into `due_subject`, the fired copy
    kept `fired_ttl` (a Go duration)."""
    return {
        sj.SCHEDULE: schedule_header(fire_at),
        sj.SCHEDULE_TARGET: due_subject,
        sj.SCHEDULE_TTL: fired_ttl,
    }


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
        subjects, data = self.message(tenant, task_id, due_at)
        await publish_timer(self._js, subjects, data, due_at, self._lead, self._fired_ttl)

    def message(self, tenant: str, task_id: str, due_at: datetime) -> tuple[tuple[str, str], bytes]:
        """(timer subject, due subject) and the body of the task's timer for `due_at`."""
        data = _enc.encode(Due(tenant=tenant, task_id=task_id, due_at=due_at))
        return (sj.timer_subject(tenant, task_id, time_token(due_at)), sj.due_subject(tenant, task_id)), data

    @property
    def fired_ttl(self) -> str:
        return self._fired_ttl

    async def disarm(self, tenant: str, task_id: str, due_at: datetime) -> None:
        """Cancel the timer for `due_at` only: one armed meanwhile for another due time stays."""
        subject = sj.timer_subject(tenant, task_id, time_token(due_at))
        try:
            await self._js.purge_stream(sj.TIMERS_STREAM, subject=subject)
        except nats.errors.Error:  # APIError, a timeout, no responders
            pass  # best effort: a stale timer is ignored by the decider
