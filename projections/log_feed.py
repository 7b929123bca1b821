"""The event log from a sequence on, in order, as the server delivered it: Ordo's own ordered consumer.

What nats-py's ordered consumer does, on a raw subscription (infra/raw_client.py) so that no message
becomes a `Msg` with a parsed header dict: an ephemeral push consumer over the whole stream (no
filter: the server reads it sequentially), no acks, flow control and idle heartbeats, in memory and
one replica. Each delivery's consumer sequence must follow the last one. A gap (a message lost in a
reconnect), a heartbeat naming a later consumer sequence, an error status, a reconnect of the client
followed by silence, or silence longer than three heartbeats (the consumer lost with its server)
replaces the consumer, starting after the last stream sequence queued.

Flow control: the server pauses delivery until its flow-control request is answered; the answer is
queued in order with the messages and sent when the reader reaches it, so a reader that stops
taking entries stops the server (bounded memory), as nats-py's ordered consumer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import NamedTuple

import nats.errors
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from ordo.infra import subjects as sj
from ordo.infra.raw_client import RawClient
from ordo.infra.tasks import cancel_and_wait

_log = logging.getLogger("ordo.projector")

_STATUS = b"NATS/1.0 "
_CONTROL = b"NATS/1.0 100"
_LAST_CONSUMER = b"Nats-Last-Consumer:"
_STALLED = b"Nats-Consumer-Stalled:"
_CRLF = b"\r\n"


class Entry(NamedTuple):
    seq: int
    subject: str
    data: bytes
    headers: bytes  # the header block as delivered ("NATS/1.0\r\nName: value\r\n..."), or b""
    stored_at: datetime


class _Answer(NamedTuple):
    """A flow-control request to answer once the reader has taken everything before it."""

    subject: str


def own_headers(block: bytes) -> dict[str, str]:
    """The header block's `Name: value` lines (the first line is the version), less the server's own
    (`Nats-…`, e.g. an append's expected sequence, stored with every event): what a stored event
    keeps. Those lines are skipped undecoded."""
    out: dict[str, str] = {}
    for line in block.split(_CRLF)[1:]:
        if line.startswith(_SERVER_HEADER):
            continue
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().decode("utf-8", "replace")] = value.strip().decode("utf-8", "replace")
    return out


_SERVER_HEADER = b"Nats-"


def _header(block: bytes, name: bytes) -> bytes | None:
    at = block.find(name)
    if at < 0:
        return None
    end = block.find(_CRLF, at)
    return block[at + len(name) : end if end >= 0 else len(block)].strip()


class LogFeed:
    """Entries of `stream` from `start` on; `take()` hands out what has arrived, `arrival()` waits."""

    def __init__(
        self,
        nc: RawClient,
        stream: str,
        start: int,
        idle_heartbeat_s: float = 5.0,
        logger: logging.Logger = _log,
    ) -> None:
        if not isinstance(nc, RawClient):
            raise TypeError("LogFeed needs the client of ordo.infra.nats_conn.connect (a RawClient)")
        self._nc = nc
        self._stream = stream
        self._next = max(1, start)  # the stream sequence after the last one queued
        self._heartbeat_s = idle_heartbeat_s
        self._log = logger
        self._items: deque[Entry | _Answer] = deque()
        self._entries = 0
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None
        self._consumer: str | None = None
        self._dseq = 1
        self._heard = time.monotonic()
        self._reconnects = 0
        self._reset: asyncio.Task[None] | None = None
        self._closed = False
        self.resets = 0

    async def start(self) -> None:
        await self._create()

    async def close(self) -> None:
        self._closed = True
        if self._reset is not None:
            await cancel_and_wait(self._reset)
        await self._drop()

    def __len__(self) -> int:
        """Entries received and not yet taken."""
        return self._entries

    async def take(self) -> Entry | None:
        """The next entry, or None when none has arrived (flow-control answers are sent on the way)."""
        while self._items:
            item = self._items.popleft()
            if isinstance(item, _Answer):
                with contextlib.suppress(nats.errors.Error):
                    await self._nc.publish(item.subject, b"")
                continue
            self._entries -= 1
            return item
        self._arrived.clear()
        return None

    async def arrival(self, timeout: float) -> bool:
        """Wait up to `timeout` for something to arrive; True when it did. A consumer silent for
        three heartbeats is replaced here."""
        if self._items:
            return True
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
            return True
        except TimeoutError:
            if self._nc.stats["reconnects"] != self._reconnects:
                self._restart("the client reconnected")  # a restarted server lost the consumer
            elif time.monotonic() - self._heard > 3 * self._heartbeat_s:
                self._restart("no heartbeat")
            return bool(self._items)

    # ---- the consumer ------------------------------------------------------------------------

    async def _create(self) -> None:
        inbox = self._nc.new_inbox()
        self._reconnects = self._nc.stats["reconnects"]
        self._dseq = 1
        self._heard = time.monotonic()
        self._sub = await self._nc.raw(inbox, self._on_message)
        config = ConsumerConfig(
            deliver_subject=inbox,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self._next,
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=self._heartbeat_s,
            num_replicas=1,
            mem_storage=True,
            inactive_threshold=max(30.0, 6 * self._heartbeat_s),
        )
        info = await self._nc.jetstream()._jsm.add_consumer(self._stream, config=config)
        self._consumer = info.name

    async def _drop(self) -> None:
        sub, self._sub = self._sub, None
        consumer, self._consumer = self._consumer, None
        if sub is not None:
            self._nc.drop_raw(sub)
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        if consumer is not None:
            with contextlib.suppress(nats.errors.Error, NotFoundError, TimeoutError):
                await self._nc.jetstream()._jsm.delete_consumer(self._stream, consumer)

    def _restart(self, why: str) -> None:
        if self._closed or (self._reset is not None and not self._reset.done()):
            return
        self.resets += 1
        self._log.info("log reader: new consumer from seq %d (%s)", self._next, why)
        if self._sub is not None:
            self._nc.drop_raw(self._sub)  # nothing more from the old consumer is queued
        self._reset = asyncio.get_running_loop().create_task(self._recreate())

    async def _recreate(self) -> None:
        pause = 0.25
        while not self._closed:
            try:
                await self._drop()
                await self._create()
                return
            except Exception as exc:  # noqa: BLE001 - the server may be away: keep trying
                self._log.debug("log reader: cannot create a consumer yet: %r", exc)
                await asyncio.sleep(pause)
                pause = min(2 * pause, 5.0)

    def _on_message(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        """In the client's read loop: queue, never wait."""
        self._heard = time.monotonic()
        if headers.startswith(_STATUS):
            self._on_status(reply, headers)
            return
        tokens = reply.split(b".")
        at = sj.ack_delivered_at(len(tokens))
        if at is None:
            return  # not a JetStream delivery
        sseq, dseq, ts = tokens[at + 1], tokens[at + 2], tokens[at + 3]
        if int(dseq) != self._dseq:
            self._restart(f"consumer sequence {int(dseq)}, expected {self._dseq}")
            return
        self._dseq += 1
        seq = int(sseq)
        self._next = seq + 1
        stored_at = datetime.fromtimestamp(int(ts) / 1_000_000_000.0, UTC)
        self._items.append(Entry(seq, subject.decode(), data, headers, stored_at))
        self._entries += 1
        self._arrived.set()

    def _on_status(self, reply: bytes, headers: bytes) -> None:
        if not headers.startswith(_CONTROL):
            self._restart(headers.split(_CRLF, 1)[0].decode("ascii", "replace"))
            return
        if reply:  # a flow-control request
            self._items.append(_Answer(reply.decode()))
            self._arrived.set()
            return
        last = _header(headers, _LAST_CONSUMER)  # an idle heartbeat
        if last is not None and int(last) != self._dseq - 1:
            self._restart(f"heartbeat names consumer sequence {int(last)}, delivered {self._dseq - 1}")
            return
        stalled = _header(headers, _STALLED)
        if stalled:
            self._items.append(_Answer(stalled.decode()))
            self._arrived.set()
