"""Ordo's own ordered consumer of the event log (projections/log_feed.py) on a real nats-server.

It must hand out every message from its start in stream order, exactly once, across flow control
(a log far larger than one flow-control window), a consumer lost under it (deleted on the server:
the feed hears nothing more and starts a new one after the last entry it queued) and a gap in the
consumer's sequence. A raw subscription is the client's only change: other subscriptions are
nats-py's as before; `request_data` answers and fails as `request` does.
"""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ordo.infra import subjects as sj
from ordo.infra.raw_client import RawClient
from ordo.infra.settings import Settings
from ordo.projections.log_feed import Entry, LogFeed, own_headers
from tests.helpers import eventually

BODY = b'{"x": "' + b"y" * 900 + b'"}'  # ~1 KB: 3,000 of them span many flow-control requests


async def _publish(nc: NATS, tenant: str, first: int, n: int) -> list[int]:
    js = nc.jetstream()
    seqs = []
    for i in range(first, first + n, 500):
        acks = await asyncio.gather(
            *(
                js.publish(f"ordo.evt.{tenant}.q.n.task{j}.note", BODY, headers={"Ordo-Event-Id": f"e{j}"})
                for j in range(i, min(i + 500, first + n))
            )
        )
        seqs += [a.seq for a in acks]
    return seqs


async def _drain(feed: LogFeed, until: int, timeout: float = 60) -> list[Entry]:
    out: list[Entry] = []

    async def more() -> bool:
        while (entry := await feed.take()) is not None:
            out.append(entry)
        if out and out[-1].seq >= until:
            return True
        await feed.arrival(0.2)
        return False

    await eventually(more, timeout=timeout, interval=0.0, what=f"entries up to seq {until}")
    return out


async def _last_seq(nc: NATS) -> int:
    return int((await nc.jetstream().stream_info(sj.EVENTS_STREAM)).state.last_seq)


async def test_every_message_in_order_once_across_flow_control(nc: NATS, settings: Settings) -> None:
    assert isinstance(nc, RawClient)
    start = await _last_seq(nc) + 1
    seqs = await _publish(nc, settings.tenant, 0, 3000)
    feed = LogFeed(nc, sj.EVENTS_STREAM, start)
    await feed.start()
    try:
        entries = await _drain(feed, seqs[-1])
    finally:
        await feed.close()
    assert [e.seq for e in entries] == list(range(start, seqs[-1] + 1))
    ours = [e for e in entries if e.subject.startswith(f"ordo.evt.{settings.tenant}.")]
    assert len(ours) == 3000 and all(e.data == BODY for e in ours)
    assert own_headers(ours[7].headers)["Ordo-Event-Id"] == "e7"
    assert feed.resets == 0


async def test_a_lost_consumer_is_replaced_after_the_last_entry(nc: NATS, settings: Settings) -> None:
    start = await _last_seq(nc) + 1
    first = await _publish(nc, settings.tenant, 0, 200)
    assert isinstance(nc, RawClient)
    feed = LogFeed(nc, sj.EVENTS_STREAM, start, idle_heartbeat_s=0.5)
    await feed.start()
    try:
        got = await _drain(feed, first[-1])
        assert feed._consumer is not None
        await nc.jetstream()._jsm.delete_consumer(sj.EVENTS_STREAM, feed._consumer)
        later = await _publish(nc, settings.tenant, 200, 200)
        got += await _drain(feed, later[-1], timeout=30)
    finally:
        await feed.close()
    assert feed.resets >= 1
    assert [e.seq for e in got] == list(range(start, later[-1] + 1))  # no gap, no duplicate


async def test_a_gap_starts_over_after_the_last_entry(nc: NATS, settings: Settings) -> None:
    start = await _last_seq(nc) + 1
    seqs = await _publish(nc, settings.tenant, 0, 100)
    assert isinstance(nc, RawClient)
    feed = LogFeed(nc, sj.EVENTS_STREAM, start)
    await feed.start()
    try:
        got = await _drain(feed, seqs[-1])
        # A delivery whose consumer sequence skips one (a message lost on the way) is not taken.
        feed._on_message(b"ordo.evt.x.q.n.t.note", b"$JS.ACK.ORDO_EVENTS.c.1.999999.999.1.0", b"{}", b"")
        assert feed.resets == 1 and await feed.take() is None
        more = await _publish(nc, settings.tenant, 100, 50)
        got += await _drain(feed, more[-1])
    finally:
        await feed.close()
    assert [e.seq for e in got] == list(range(start, more[-1] + 1))


async def test_other_subscriptions_of_the_client_are_unchanged(nc: NATS) -> None:
    assert isinstance(nc, RawClient)
    raw: list[bytes] = []
    sub = await nc.raw("ordo.test.raw", lambda subject, reply, data, headers: raw.append(headers))
    normal = await nc.subscribe("ordo.test.normal")
    await nc.publish("ordo.test.raw", b"a", headers={"K": "v"})
    await nc.publish("ordo.test.normal", b"b", headers={"K": "v"})
    msg = await normal.next_msg(timeout=5)
    assert msg.data == b"b" and msg.headers == {"K": "v"}
    await eventually(lambda: asyncio.sleep(0, bool(raw)), timeout=5, what="the raw message")
    assert own_headers(raw[0]) == {"K": "v"}
    nc.drop_raw(sub)
    await sub.unsubscribe()


def test_a_plain_nats_py_client_is_refused() -> None:
    with pytest.raises(TypeError):
        LogFeed(NATS(), sj.EVENTS_STREAM, 1)  # type: ignore[arg-type]


async def test_request_data_answers_with_the_payload_and_raises_like_request(nc: NATS) -> None:
    assert isinstance(nc, RawClient)

    async def echo(msg: Msg) -> None:
        await msg.respond(b"got " + msg.data + b" " + (msg.headers or {}).get("K", "").encode())

    service = await nc.subscribe("ordo.test.echo", cb=echo)
    replies = await asyncio.gather(
        *(nc.request_data("ordo.test.echo", b"%d" % i, {"K": "v"}) for i in range(50))
    )
    assert replies == [b"got %d v" % i for i in range(50)]
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request_data("ordo.test.nobody", b"x", timeout=5)
    silent = await nc.subscribe("ordo.test.silent")
    with pytest.raises(nats.errors.TimeoutError):
        await nc.request_data("ordo.test.silent", b"x", timeout=0.2)
    assert not nc._replies  # nothing left waiting
    await service.unsubscribe()
    await silent.unsubscribe()


async def test_request_many_answers_each_message_in_its_place(nc: NATS) -> None:
    assert isinstance(nc, RawClient)

    async def echo(msg: Msg) -> None:
        await msg.respond(b"got " + msg.data + b" " + (msg.headers or {}).get("K", "").encode())

    service = await nc.subscribe("ordo.test.echo", cb=echo)
    silent = await nc.subscribe("ordo.test.silent")
    subjects = ["ordo.test.echo", "ordo.test.nobody", "ordo.test.silent"]
    msgs = [(subjects[i % 3], b"%d" % i, {"K": "v"}) for i in range(300)]
    replies = await nc.request_many(msgs, timeout=0.5)
    for i, reply in enumerate(replies):
        if i % 3 == 0:
            assert reply == b"got %d v" % i
        elif i % 3 == 1:
            assert isinstance(reply, nats.errors.NoRespondersError)
        else:
            assert isinstance(reply, nats.errors.TimeoutError)
    assert await nc.request_many([]) == []
    assert not nc._replies  # nothing left waiting
    await service.unsubscribe()
    await silent.unsubscribe()


def test_own_headers_keep_ordos_and_skip_the_servers() -> None:
    block = (
        b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 3\r\nOrdo-Event-Id:  e1 \r\n"
        b"traceparent: 00-ab-cd-01\r\nbad line\r\nX: caf\xc3\xa9\r\n\r\n"
    )
    assert own_headers(block) == {"Ordo-Event-Id": "e1", "traceparent": "00-ab-cd-01", "X": "caf\u00e9"}
