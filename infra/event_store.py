"""The JetStream event store: append with per-task optimistic concurrency, load a task's history.

Appends state the task's expected last sequence over the wildcard subject of all its events, so two
writers of different event types still conflict. An append that makes the task runnable puts the
band token in its last event's subject: that event is its own dispatch ticket (infra/dispatch.py).
One event is one publish; several events (or several tasks) go in one atomic batch: all or none.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import APIError

from ordo.domain.events import SCHEMA_VERSION, Event, TaskEvent, decode_event, encode_event, event_name
from ordo.infra import subjects as sj
from ordo.infra import telemetry
from ordo.infra.dispatch import with_snapshot
from ordo.infra.raw_client import RawClient

WRONG_LAST_SEQUENCE = 10071
# A retried atomic batch whose first try did land (its reply was lost): its Nats-Msg-Ids are known.
# Reported as a conflict, so the command handler reloads the task and decides against what landed.
BATCH_DUPLICATE_MSG_ID = 10201
_CONFLICTS = (WRONG_LAST_SEQUENCE, BATCH_DUPLICATE_MSG_ID)
_BATCH_LIMIT = 1000
MAX_ATOMIC_BATCH = _BATCH_LIMIT
_LOAD_PAGE = 1000
_SCHEMA_VERSION = str(SCHEMA_VERSION)
log = logging.getLogger("ordo.event_store")
T = TypeVar("T")


class EventStoreError(Exception):
    """Base of the event store's errors."""


class ConcurrencyError(EventStoreError):
    """The task's last sequence was not the one the append expected."""


class EventStoreUnavailable(EventStoreError):
    """NATS did not answer in time or refused for a reason other than concurrency."""


@dataclass(frozen=True)
class Runnable:
    """The last event of an append makes the task runnable: its band, and the snapshot it carries."""

    band: int
    snapshot: bytes | None = None


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as the log holds it (a msgspec struct: the projector builds one per event read).
    Not tracked by the cycle collector (`gc=False`): nothing it holds refers back to it."""

    seq: int
    subject: str
    tenant: str
    queue: str
    task_id: str
    name: str
    event: TaskEvent
    stored_at: datetime
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # The event's JSON as the log holds it (b"" when the event was not read from the log): the read
    # models store it as it came instead of encoding the decoded event again.
    data: bytes = b""

    @property
    def raw(self) -> bytes:
        """The event's JSON: as the log holds it, or encoded from the event."""
        return self.data or encode_event(self.event)


@dataclass(frozen=True)
class Metadata:
    """Envelope data that travels in headers, never in the domain types."""

    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None


@dataclass(frozen=True)
class AppendItem:
    """One task's part of a multi-task append (`append_many`, `append_singles`)."""

    queue: str
    task_id: str
    events: list[Event]
    expected_seq: int
    runnable: Runnable | None = None
    meta: Metadata | None = None


def _event_messages(
    tenant: str,
    queue: str,
    task_id: str,
    events: list[Event],
    expected_seq: int,
    runnable: Runnable | None,
    headers_for: Callable[[], dict[str, str]],
) -> list[tuple[str, bytes, dict[str, str]]]:
    """One task's events as messages: the first states the expected sequence, the last carries the
    band token (and snapshot) when the append makes the task runnable."""
    msgs: list[tuple[str, bytes, dict[str, str]]] = []
    last = len(events) - 1
    for i, event in enumerate(events):
        headers = headers_for()
        if i == 0:
            headers[sj.EXPECTED_LAST_SUBJECT_SEQ] = str(expected_seq)
            headers[sj.EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = sj.task_events_filter(tenant, task_id)
        data = encode_event(event)
        band = None
        if runnable is not None and i == last:
            band = runnable.band
            data = with_snapshot(data, runnable.snapshot)
        msgs.append((sj.event_subject(tenant, queue, task_id, event_name(event), band), data, headers))
    return msgs


def parse_stored_at(value: str) -> datetime:
    """Parse the server's nanosecond RFC 3339 timestamp (Python keeps microseconds)."""
    head, _, rest = value.partition(".")
    if rest:
        digits = rest.rstrip("Z")[:6]
        value = f"{head}.{digits}+00:00"
    else:
        value = head.rstrip("Z") + "+00:00"
    return datetime.fromisoformat(value)


class EventStore:
    """Appends and loads task events on the ORDO_EVENTS stream."""

    def __init__(self, nc: NATS, timeout: float = 5.0) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout)
        self._timeout = timeout

    async def append(
        self,
        tenant: str,
        queue: str,
        task_id: str,
        events: list[Event],
        expected_seq: int,
        runnable: Runnable | None = None,
        meta: Metadata | None = None,
    ) -> list[int]:
        """Append `events` if the task's last sequence is `expected_seq`; `runnable`: the last event
        makes the task runnable (it is the dispatch).

        Returns the stream sequence of each event. A lost reply is retried: a publish that did land
        is not stored twice (the retry's expected sequence no longer holds: a conflict).
        """
        return await self.publish(self.messages(tenant, queue, task_id, events, expected_seq, runnable, meta))

    def messages(
        self,
        tenant: str,
        queue: str,
        task_id: str,
        events: list[Event],
        expected_seq: int,
        runnable: Runnable | None = None,
        meta: Metadata | None = None,
    ) -> list[tuple[str, bytes, dict[str, str]]]:
        """The messages `append` publishes, prepared ahead (`publish` sends them)."""
        msgs = _event_messages(
            tenant, queue, task_id, events, expected_seq, runnable, lambda: self._headers(meta)
        )
        if len(msgs) > _BATCH_LIMIT:
            raise EventStoreError(f"{len(msgs)} messages exceed one atomic batch")
        return msgs

    async def publish(self, msgs: list[tuple[str, bytes, dict[str, str]]]) -> list[int]:
        """Append messages prepared by `messages`: the stream sequence of each (ConcurrencyError
        when the task moved past the sequence they expect)."""
        return await self._publish_all(msgs)

    async def append_many(self, tenant: str, items: list[AppendItem]) -> list[list[int]]:
        """Append several tasks' events in ONE atomic batch: all are stored or none.

        Each task keeps its own optimistic-concurrency check (its first event states the task's
        expected last sequence), so a conflict on any task rejects the whole batch with
        ConcurrencyError. Returns each item's event sequences. The caller keeps a batch within
        the server's atomic-batch limit (MAX_ATOMIC_BATCH messages).
        """
        msgs: list[tuple[str, bytes, dict[str, str]]] = []
        slots: list[list[int]] = []
        for item in items:
            start = len(msgs)
            msgs += self._item_messages(tenant, item)
            slots.append(list(range(start, len(msgs))))
        if not msgs:
            return [[] for _ in items]
        if len(msgs) > _BATCH_LIMIT:
            raise EventStoreError(f"{len(msgs)} messages exceed one atomic batch")
        seqs = await self._publish_all(msgs, always_batch=True)
        return [[seqs[i] for i in slot] for slot in slots]

    async def append_singles(self, tenant: str, items: list[AppendItem]) -> list[list[int] | EventStoreError]:
        """Append several tasks' events, each task on its own, every item ONE message: all are
        published at once (pipelined on the connection, the PubAcks gathered), none waits for
        another, and each is stored or not by itself (its own expected-sequence check).

        Returns each item's sequence (a one-element list), or the error that item met
        (ConcurrencyError: the task moved past its expected sequence). Cheaper than `append_many`
        for what needs no atomicity across tasks: nats-server stages an atomic batch in a store of its
        own, about 3 ms of its CPU per batch whatever its size (decision 45).
        """

        msgs = []
        for item in items:
            item_msgs = self._item_messages(tenant, item)
            if len(item_msgs) != 1:
                count = len(item_msgs)
                raise ValueError(f"append_singles takes one-message items, {item.task_id} has {count}")
            msgs.append(item_msgs[0])
        if not isinstance(self._nc, RawClient):
            results = await asyncio.gather(*(self._publish_all([m]) for m in msgs), return_exceptions=True)
            return [_single(result) for result in results]
        # All written at once and their PubAcks awaited together (no task per message); a message
        # whose reply did not come goes the way of any other append: retried, so a lost reply shows
        # as a conflict and the caller decides again.
        replies = await self._publish_singles(msgs)
        out: list[list[int] | EventStoreError] = []
        again: list[int] = []
        for i, reply in enumerate(replies):
            if isinstance(reply, bytes):
                try:
                    out.append([_stored_seq(reply)])
                except APIError as exc:
                    out.append(_refused(exc))
                continue
            if not isinstance(reply, nats.errors.TimeoutError | nats.errors.NoRespondersError):
                raise reply
            out.append(EventStoreUnavailable("no reply from JetStream"))  # until retried below
            again.append(i)
        if again:
            retried = await asyncio.gather(
                *(self._publish_all([msgs[i]], first_try=1) for i in again), return_exceptions=True
            )
            for i, result in zip(again, retried, strict=True):
                out[i] = _single(result)
        return out

    async def _publish_singles(
        self, msgs: list[tuple[str, bytes, dict[str, str]]]
    ) -> list[bytes | nats.errors.Error]:
        """Publish each message by itself, all at once: each one's reply, or the error it met."""
        assert isinstance(self._nc, RawClient)
        return await self._nc.request_many(msgs, self._timeout)

    def _item_messages(self, tenant: str, item: AppendItem) -> list[tuple[str, bytes, dict[str, str]]]:
        return _event_messages(
            tenant,
            item.queue,
            item.task_id,
            item.events,
            item.expected_seq,
            item.runnable,
            functools.partial(self._headers, item.meta),
        )

    async def _publish_all(
        self, msgs: list[tuple[str, bytes, dict[str, str]]], always_batch: bool = False, first_try: int = 0
    ) -> list[int]:
        """Publish one message, or several as one atomic batch; the stream sequence of each.

        A lost reply is retried with the same messages, so what did land is never stored twice: its
        expected sequence no longer holds, the retry is reported as a conflict, and the caller
        reloads. `first_try`: tries already made (of three), after a pause for each.
        """
        if first_try:
            await asyncio.sleep(0.1 * first_try)
        for attempt in range(first_try, 3):
            try:
                if len(msgs) == 1 and not always_batch:
                    return [await self._publish_one(*msgs[0])]
                last = await self._publish_batch(msgs)
                first = last - len(msgs) + 1
                return [first + i for i in range(len(msgs))]
            except APIError as exc:
                raise _refused(exc) from exc
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                if attempt == 2:
                    raise EventStoreUnavailable("no reply from JetStream") from exc
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _publish_one(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        if isinstance(self._nc, RawClient):
            return _stored_seq(await self._nc.request_data(subject, data, headers, self._timeout))
        reply = await self._nc.request(subject, data, headers=headers, timeout=self._timeout)
        return _stored_seq(reply.data)

    async def _publish_batch(self, msgs: list[tuple[str, bytes, dict[str, str]]]) -> int:
        batch_id = uuid.uuid4().hex
        for i, (subject, data, headers) in enumerate(msgs[:-1], start=1):
            hdrs = {**headers, sj.BATCH_ID: batch_id, sj.BATCH_SEQ: str(i)}
            await self._nc.publish(subject, data, headers=hdrs)
        subject, data, headers = msgs[-1]
        hdrs = {
            **headers,
            sj.BATCH_ID: batch_id,
            sj.BATCH_SEQ: str(len(msgs)),
            sj.BATCH_COMMIT: "1",
        }
        reply = await self._nc.request(subject, data, headers=hdrs, timeout=self._timeout)
        return _stored_seq(reply.data)

    @staticmethod
    def _headers(meta: Metadata | None) -> dict[str, str]:
        # No Nats-Msg-Id: every append states an expected sequence, which nats-server checks before
        # its duplicate window, so a retried append that landed comes back as a conflict anyway
        # (and the dedupe entries would cost server memory per event).
        # 128 random bits as 32 hex digits, like a uuid4's hex, at a quarter of its cost.
        headers = {sj.EVENT_ID: os.urandom(16).hex(), sj.SCHEMA_VERSION: _SCHEMA_VERSION}
        if meta is not None:
            if meta.correlation_id:
                headers[sj.CORRELATION_ID] = meta.correlation_id
            if meta.causation_id:
                headers[sj.CAUSATION_ID] = meta.causation_id
            if meta.traceparent:
                headers[sj.TRACEPARENT] = meta.traceparent
        if sj.TRACEPARENT not in headers:
            telemetry.inject(headers)  # the caller's current span, if tracing is on
        return headers

    async def last_seq(self, subject_filter: str) -> int:
        """The sequence of the newest message matching `subject_filter` (wildcards allowed); 0: none."""
        return await self._seq_of({"last_by_subj": subject_filter})

    async def next_seq_after(self, subject_filter: str, seq: int) -> int:
        """The sequence of the first message matching `subject_filter` after `seq`; 0: none. The
        server looks only at what was stored after `seq`: a cheap "changed since?" for an
        aggregate read a moment ago."""
        return await self._seq_of({"seq": seq + 1, "next_by_subj": subject_filter})

    async def _seq_of(self, query: dict[str, Any]) -> int:
        """The stream sequence of the one message a direct get finds; 0: none."""
        request = json.dumps(query).encode()
        try:
            msg = await self._nc.request(sj.direct_get(sj.EVENTS_STREAM), request, timeout=self._timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise EventStoreUnavailable("direct get timed out") from exc
        headers = msg.headers or {}
        if headers.get("Status") == "404":
            return 0
        if headers.get("Status"):
            raise EventStoreUnavailable(f"direct get failed: {headers}")
        return int(headers["Nats-Sequence"])

    async def load(self, tenant: str, task_id: str) -> tuple[list[StoredEvent], int]:
        """Every stored event of one task in sequence order, and the task's last sequence (0: none)."""
        return await self.load_filter(sj.task_events_filter(tenant, task_id))

    async def load_filter(
        self, subject_filter: str, start_seq: int = 1, up_to_seq: int | None = None
    ) -> tuple[list[StoredEvent], int]:
        """Batched direct get of every message matching `subject_filter` from `start_seq`."""
        out: list[StoredEvent] = []
        last = 0
        seq = start_seq
        while True:
            page, more = await self._page(subject_filter, seq)
            for raw in page:
                if up_to_seq is not None and raw.seq > up_to_seq:
                    return out, last
                last = raw.seq  # a message skipped below still counts for the next append's check
                item = _event_or_none(raw)
                if item is not None:
                    out.append(item)
            if not more or not page:
                return out, last
            seq = page[-1].seq + 1

    async def append_raw(
        self, msgs: list[tuple[str, bytes, dict[str, str]]], expected_seq: int, expected_filter: str
    ) -> list[int]:
        """Append messages of any subject family in one atomic batch, with the OCC check on
        `expected_filter` (the aggregate's wildcard) stated by the first message. Headers get a
        Ordo-Event-Id (a caller's Nats-Msg-Id, if given) and schema version when missing. Returns
        each message's sequence.
        """
        if not msgs or len(msgs) > _BATCH_LIMIT:
            raise EventStoreError(f"{len(msgs)} messages: need 1..{_BATCH_LIMIT} for one atomic batch")
        out: list[tuple[str, bytes, dict[str, str]]] = []
        for i, (subject, data, headers) in enumerate(msgs):
            hdrs = {**self._headers(None), **headers}
            if sj.MSG_ID in headers:
                hdrs[sj.EVENT_ID] = headers[sj.MSG_ID]
            if i == 0:
                hdrs[sj.EXPECTED_LAST_SUBJECT_SEQ] = str(expected_seq)
                hdrs[sj.EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = expected_filter
            out.append((subject, data, hdrs))
        return await self._publish_all(out)

    async def load_raw(self, subject_filter: str) -> tuple[list[RawStored], int]:
        """Every message matching `subject_filter` undecoded (any family), and the last sequence."""
        out: list[RawStored] = []
        seq = 1
        while True:
            page, more = await self._page(subject_filter, seq)
            out.extend(page)
            if not more or not page:
                return out, out[-1].seq if out else 0
            seq = page[-1].seq + 1

    async def _page(self, subject_filter: str, seq: int) -> tuple[list[RawStored], bool]:
        request = {"seq": seq, "next_by_subj": subject_filter, "batch": _LOAD_PAGE}
        page, more = await direct_get_batch(self._nc, sj.EVENTS_STREAM, request, self._timeout)
        return [RawStored(r.subject, r.data, _own(r.headers), r.seq, r.stored_at) for r in page], more


# Sequences of messages already reported as not events (each is logged once per process).
_skipped: set[int] = set()
_SKIPPED_MAX = 10_000


def readable(raw: RawStored, decode: Callable[[bytes], T], what: str) -> T | None:
    """`decode(raw.data)`, or None for a message on an aggregate's subjects that is not one of its
    events (logged once per process): a schedule's, a queue's (docs/decisions.md 56)."""
    try:
        return decode(raw.data)
    except (msgspec.DecodeError, ValueError) as exc:  # ValidationError is a DecodeError
        _skip(raw, what, exc)
        return None


def _skip(raw: RawStored, what: str, exc: Exception) -> None:
    if raw.seq not in _skipped:
        if len(_skipped) >= _SKIPPED_MAX:
            _skipped.clear()
        _skipped.add(raw.seq)
        log.error("message at seq %d on %s is not %s, ignored: %s", raw.seq, raw.subject, what, exc)


def _event_or_none(raw: RawStored) -> StoredEvent | None:
    """The stored event, or None for a message on an event subject that is not one (a body no
    decider wrote: the projections skip it too, docs/decisions.md 56). Loading a task must not fail
    on it, or every command on the task and its timers would fail for good: the log keeps it."""
    try:
        return to_stored(raw.subject, raw.data, raw.headers, raw.seq, raw.stored_at)
    except (msgspec.DecodeError, ValueError) as exc:  # ValidationError is a DecodeError
        _skip(raw, "an Ordo event", exc)
        return None


def _own(headers: dict[str, str]) -> dict[str, str]:
    """A stored message's own headers: without the server's (`Nats-…`: the reply's sequence, subject
    and time, the append's expected sequence)."""
    return {k: v for k, v in headers.items() if not k.startswith("Nats-")}


class _ApiError(msgspec.Struct):
    code: int | None = None
    err_code: int | None = None
    description: str | None = None


class _PubAck(msgspec.Struct):
    seq: int = 0
    error: _ApiError | None = None


_pub_ack = msgspec.json.Decoder(_PubAck)


def _refused(exc: APIError) -> EventStoreError:
    """The store's error for a publish the server refused: a conflict, or unavailable."""
    if exc.err_code in _CONFLICTS:
        return ConcurrencyError(str(exc.description))
    return EventStoreUnavailable(str(exc))


def _single(result: list[int] | BaseException) -> list[int] | EventStoreError:
    """One `append_singles` item's outcome: its sequences or its store error (anything else raised)."""
    if isinstance(result, BaseException) and not isinstance(result, EventStoreError):
        raise result
    return result


def _stored_seq(reply: bytes) -> int:
    """The stream sequence in a JetStream publish reply (one message or a batch's commit); the
    server's refusal as an APIError."""
    try:
        ack = _pub_ack.decode(reply)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise APIError(description=f"unreadable publish reply: {reply[:200]!r}") from exc
    if ack.error is not None:
        raise APIError(code=ack.error.code, err_code=ack.error.err_code, description=ack.error.description)
    if ack.seq <= 0:
        raise APIError(description=f"publish reply without a sequence: {reply[:200]!r}")
    return ack.seq


@dataclass(frozen=True)
class Reply:
    """One stored message as a batched direct get returns it."""

    subject: str
    data: bytes
    headers: dict[str, str]
    seq: int
    stored_at: datetime


async def direct_get_batch(
    nc: NATS, stream: str, request: dict[str, Any], timeout: float
) -> tuple[list[Reply], bool]:
    """The one pager over JetStream's batched direct get: the messages one request returns, and
    whether more are pending after them (the task and aggregate loads here, the worker registry's
    last heartbeats in infra/heartbeats.py).

    A reply without a Status header is a stored message; 404 means nothing (more) matched; 204 ends
    the batch, Nats-Num-Pending saying what is left. EventStoreUnavailable on a timeout or a refusal.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    page: list[Reply] = []
    try:
        await nc.publish(sj.direct_get(stream), json.dumps(request).encode(), reply=inbox)
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError as exc:
                raise EventStoreUnavailable(f"direct get on {stream} timed out") from exc
            headers = dict(msg.headers or {})
            status = headers.get("Status")
            if status == "404":
                return page, False
            if status == "204":
                return page, int(headers.get("Nats-Num-Pending", "0")) > 0
            if status:
                raise EventStoreUnavailable(f"direct get on {stream} failed: {status}")
            page.append(
                Reply(
                    headers["Nats-Subject"],
                    msg.data,
                    headers,
                    int(headers["Nats-Sequence"]),
                    parse_stored_at(headers["Nats-Time-Stamp"]),
                )
            )
    finally:
        await sub.unsubscribe()


@dataclass(frozen=True)
class RawStored:
    """A stored message of any subject family, undecoded (schedules, queues)."""

    subject: str
    data: bytes
    headers: dict[str, str]
    seq: int
    stored_at: datetime


def to_stored(
    subject: str, data: bytes, headers: dict[str, str], seq: int, stored_at: datetime
) -> StoredEvent:
    """A stored event from a direct-get reply or the log; `headers` are the message's own, without
    the server's `Nats-…` (left out by the reader of either)."""
    tenant, queue, task_id, name = sj.parse_event_subject(subject)
    return StoredEvent(
        seq=seq,
        subject=subject,
        tenant=tenant,
        queue=queue,
        task_id=task_id,
        name=name,
        event=decode_event(data),
        stored_at=stored_at,
        headers=headers,
        data=data,
    )
