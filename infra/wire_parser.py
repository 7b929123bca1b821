"""The NATS protocol parser of a `RawClient`: messages cut out of the read buffer without regexes.

nats-py's parser matches every control line against a regular expression (a `MSG` one first, which
fails for every `HMSG`, then the `HMSG` one), deletes each message from the front of its buffer and
awaits a coroutine per message. For the projector, which receives every event of the log, and the
worker, which receives a ticket and two acknowledgements per task, that was 2.4-2.6 µs per message.
This parser finds the line's end, splits it once, cuts every complete message of a read out of
the read itself (a message a read cut short is kept for the next one) and calls a raw
subscription's handler directly (infra/raw_client.py): 1.2 µs (`python -m bench.wire_parse`).

Only `MSG` and `HMSG` lines are parsed here. Any other line (`PING`, `PONG`, `+OK`, `-ERR`, `INFO`,
or a line it cannot read) is left with the rest of the buffer to nats-py's own parser, which
handles it as it always does, errors included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from nats.errors import ProtocolError
from nats.protocol.parser import AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD, Parser


class _Client(Protocol):
    """What the parser reads of its client (a RawClient): its raw subscriptions' handlers."""

    _raw_handlers: dict[int, Callable[[bytes, bytes, bytes, bytes], None]]


_CRLF = b"\r\n"
_MSG = b"MSG"
_HMSG = b"HMSG"


class WireParser(Parser):
    """nats-py's `Parser` with `MSG` and `HMSG` cut out fast (see the module)."""

    def __init__(self, nc: _Client) -> None:
        super().__init__(nc)
        self._raw = nc._raw_handlers

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        if buf:  # the start of a message the last read cut short
            buf.extend(data)
            data = bytes(buf)
            buf.clear()
        pos, size = 0, len(data)
        raw = self._raw
        while pos < size:
            if self.state == AWAITING_MSG_PAYLOAD:  # a line read by the last call
                arg = self.msg_arg
                subject, sid, reply = arg["subject"], arg["sid"], arg["reply"]
                header_size, total = self.header_needed, self.needed
            else:
                end = data.find(_CRLF, pos) if data[pos] in _MESSAGE_OPS else -1
                if end < 0:
                    break  # another kind of line, or a line not complete yet
                parts = data[pos:end].split()
                count = len(parts)
                op = parts[0]
                try:
                    if op == _HMSG and count in (5, 6):
                        header_size = int(parts[-2])
                        reply = parts[3] if count == 6 else b""
                    elif op == _MSG and count in (4, 5):
                        header_size = 0
                        reply = parts[3] if count == 5 else b""
                    else:
                        break
                    subject, sid, total = parts[1], int(parts[2]), int(parts[-1])
                except ValueError:
                    raise ProtocolError("nats: malformed MSG") from None
                pos = end + 2
            if size - pos < total + 2:  # the payload comes with the next read
                self.msg_arg.update(subject=subject, sid=sid, reply=reply)
                self.header_needed, self.needed = header_size, total
                self.state = AWAITING_MSG_PAYLOAD
                break
            body = pos + header_size
            headers = data[pos:body] if header_size else None
            payload = data[body : pos + total]
            pos += total + 2
            self.state = AWAITING_CONTROL_LINE
            self.header_needed = 0
            handler = raw.get(sid)
            if handler is not None:
                handler(subject, reply, payload, headers or b"")
                continue
            await self.nc._process_msg(sid, subject, reply, payload, headers)
            if self.buf is not buf:
                return  # the client reset the parser meanwhile (a reconnect): drop the rest
        if pos < size:
            buf.extend(data[pos:] if pos else data)
            if self.state == AWAITING_CONTROL_LINE:
                await super().parse()  # a line of another kind: nats-py's parser reads on


_MESSAGE_OPS = (ord("H"), ord("M"))
