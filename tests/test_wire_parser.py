"""The RawClient's protocol parser (infra/wire_parser.py) reads what nats-py's parser reads.

Differential: the same protocol stream, cut into reads at every offset and at random ones, gives
the same calls, in the same order, as nats-py's own parser (messages with and without headers and
reply subjects, empty payloads, and the lines it leaves to nats-py: PING, PONG, +OK, INFO). Then on
a real nats-server: raw and ordinary subscriptions of one client receive messages far larger than
a read, with their headers, and a malformed line is a protocol error as before.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from ordo.infra.raw_client import RawClient
from ordo.infra.settings import Settings
from ordo.infra.wire_parser import WireParser
from tests.helpers import eventually

RAW_SID = 7


class _Recorder:
    """What a parser hands its client: messages and the lines of other kinds, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._raw_handlers: dict[int, Callable[[bytes, bytes, bytes, bytes], None]] = {RAW_SID: self._on_raw}

    def _on_raw(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        # A raw handler gets b"" for no headers; nats-py's _process_msg gets None.
        self.calls.append(("msg", RAW_SID, subject, reply, data, headers or None))

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
        if sid == RAW_SID:
            self._on_raw(subject, reply, data, headers or b"")
        else:
            self.calls.append(("msg", sid, subject, reply, data, headers))

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.calls.append(("err", err))


def _stream() -> bytes:
    header = b"NATS/1.0\r\nOrdo-Event-Id: abc\r\nNats-Expected-Last-Subject-Sequence: 4\r\n\r\n"
    status = b"NATS/1.0 404 No Messages\r\n\r\n"
    body = b'{"x":"' + b"y" * 300 + b'"}'
    parts = [
        b'INFO {"server_id":"s","max_payload":1048576}\r\n',
        b"MSG a.b 1 5\r\nhello\r\n",
        b"MSG a.b 1 reply.to 0\r\n\r\n",
        b"HMSG ordo.evt.t.q.n.x.submitted %d $JS.ACK.S.C.1.2.3.4.0 %d %d\r\n%s%s\r\n"
        % (RAW_SID, len(header), len(header) + len(body), header, body),
        b"PING\r\n",
        b"HMSG _INBOX.x %d %d %d\r\n%s\r\n" % (RAW_SID, len(status), len(status), status),
        b"+OK\r\n",
        b"HMSG a.c 2 r %d %d\r\n%s\r\n" % (len(header), len(header), header),
        b"PONG\r\n",
        b"MSG a.d 2 4\r\na\r\nb\r\n",  # a payload holding CRLF
        b"HMSG x 1 %d %d\r\n%sdata\r\n" % (len(header), len(header) + 4, header),
    ]
    return b"".join(parts * 3)


async def _parse(parser: Parser, reads: list[bytes]) -> None:
    for read in reads:
        await parser.parse(read)


async def _calls(cls: type[Parser], reads: list[bytes]) -> list[tuple[Any, ...]]:
    recorder = _Recorder()
    await _parse(cls(recorder), reads)
    return recorder.calls


async def test_every_cut_reads_as_nats_py_reads() -> None:
    stream = _stream()
    expected = await _calls(Parser, [stream])
    assert sum(1 for c in expected if c[0] == "msg") == 21
    assert await _calls(WireParser, [stream]) == expected
    for cut in range(1, len(stream)):
        reads = [stream[:cut], stream[cut:]]
        assert await _calls(WireParser, reads) == expected, f"cut at {cut}"
    rng = random.Random(11)
    for _ in range(200):
        reads, at = [], 0
        while at < len(stream):
            step = rng.randint(1, 120)
            reads.append(stream[at : at + step])
            at += step
        assert await _calls(WireParser, reads) == expected


@pytest.mark.parametrize(
    "line", [b"MSG a.b x 5\r\nhello\r\n", b"HMSG a.b 1 r 9 x\r\n", b"HMSG a.b 1 zz 5\r\nhello\r\n"]
)
async def test_a_malformed_message_line_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        await _parse(WireParser(_Recorder()), [line])


async def test_a_reset_between_reads_starts_clean() -> None:
    recorder = _Recorder()
    parser = WireParser(recorder)
    await parser.parse(b"MSG a.b 1 5\r\nhel")
    parser.reset()  # as the client does on a reconnect
    await parser.parse(b"MSG a.b 1 2\r\nok\r\n")
    assert recorder.calls == [("msg", 1, b"a.b", b"", b"ok", None)]


async def test_raw_and_ordinary_subscriptions_on_a_real_server(settings: Settings) -> None:
    nc = RawClient()
    await nc.connect(settings.nats_url)
    try:
        assert isinstance(nc._ps, WireParser)
        raw: list[tuple[bytes, bytes, bytes]] = []
        plain: list[tuple[bytes, dict[str, str] | None]] = []
        await nc.raw("wire.raw", lambda s, r, d, h: raw.append((s, d, h)))

        async def on_plain(msg: Any) -> None:
            plain.append((msg.data, msg.headers))

        await nc.subscribe("wire.plain", cb=on_plain)
        big = bytes(range(256)) * 2000  # 512 KB: many reads per message
        for i in range(20):
            data = big if i % 5 == 0 else b"m%d" % i
            await nc.publish("wire.raw", data, headers={"N": str(i)})
            await nc.publish("wire.plain", data, headers={"N": str(i)} if i % 2 else None)
        await nc.flush()

        async def all_there() -> bool:
            return len(raw) == 20 and len(plain) == 20

        await eventually(all_there, timeout=10, what="every message on both subscriptions")
        for i, (subject, data, headers) in enumerate(raw):
            assert subject == b"wire.raw"
            assert data == (big if i % 5 == 0 else b"m%d" % i)
            assert headers == b"NATS/1.0\r\nN: %d\r\n\r\n" % i
        for i, (data, hdrs) in enumerate(plain):
            assert data == (big if i % 5 == 0 else b"m%d" % i)
            assert hdrs == ({"N": str(i)} if i % 2 else None)
        # Pings and pongs still go through nats-py's parser between messages.
        await asyncio.wait_for(nc.flush(), 5)
    finally:
        await nc.close()
