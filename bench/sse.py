"""A minimal SSE client for the benchmarks: one HTTP/1.1 GET per stream on an asyncio Protocol
(no StreamReader), chunked decoding, and one callback per read with that read's SSE text, stamped
with the time its bytes arrived; `parse` finds the `task_event`s in it (the gateway's own framing on
a fast path of bytes searches, any other SSE framing with a line parser).

Why so lean: the fan-out benchmark reads 1,100 streams (over a million deliveries) in one process
on the same 2 cores as the system it measures. A parser costing microseconds per event per client
made this process the busiest one on the machine, and its late reads showed up as delivery latency.
(Python's `re` was no cheaper: ~7 µs per frame.) `bench.sse_fanout` keeps each read raw during the
load and parses after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import cast

import msgspec


class Entry(msgspec.Struct):
    """The fields of an SSE `task_event` data line the benchmarks use."""

    seq: int
    type: str
    task_id: str
    at: str

    def at_ts(self) -> float:
        return datetime.fromisoformat(self.at).timestamp()


decode = msgspec.json.Decoder(Entry).decode
# (log sequence from `id:`, the raw `data:` bytes, arrival time): decode lazily, e.g. once per
# sequence when many streams carry the same events.
OnEvent = Callable[[int, bytes, float], None]
# The SSE text of one read (whole events only, up to a blank line) and its arrival time; `parse`
# it later: the benchmarks keep reads raw while the load runs.
OnText = Callable[[bytes, float], None]

_TASK_EVENT = b"event: task_event"
_POSITION = b"event: position"
_END = b"\r\n\r\n"
_MID = b"\r\nevent: task_event\r\ndata: "


def parse(text: bytes) -> list[tuple[bytes, bytes]]:
    """The `task_event`s of SSE text as (`id:` digits, raw `data:`). The gateway's own framing
    (`id: N`, `event:`, `data:` on one line each, CRLF) takes a fast path; any other falls back to
    a general parser (LF or CRLF, fields in any order)."""
    out: list[tuple[bytes, bytes]] = []
    for block in text.split(_END):
        eol = block.find(b"\r\n")
        data = eol + len(_MID)
        if block.startswith(b"id: ") and block.startswith(_MID, eol) and block.find(b"\n", data) < 0:
            out.append((block[4:eol], block[data:]))
        elif _TASK_EVENT in block:
            return _parse_slow(text)
    return out


def _parse_slow(text: bytes) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for block in text.replace(b"\r\n", b"\n").split(b"\n\n"):
        kind = seq = payload = b""
        for field in block.split(b"\n"):
            if field.startswith(b"event:"):
                kind = field[6:].strip()
            elif field.startswith(b"data:"):
                payload = field[5:].strip()
            elif field.startswith(b"id:"):
                seq = field[3:].strip()
        if kind == b"task_event":
            out.append((seq, payload))
    return out


def first_seq(text: bytes) -> int:
    """The `id:` of the first event in SSE text (0 if none): reads come in log order."""
    at = text.find(b"id: ")
    return int(text[at + 4 : text.find(b"\r\n", at)]) if at >= 0 else 0


class _Stream(asyncio.Protocol):
    """One SSE response: headers, then chunked (or raw) body, then SSE frames."""

    def __init__(self, request: bytes, on_text: OnText, opened: asyncio.Event | None) -> None:
        self._request = request
        self._on_text = on_text
        self._opened = opened
        self._head = b""  # the response head until its blank line
        self._chunked: bool | None = None  # None: the head has not ended yet
        self._raw = b""  # chunked framing not yet decoded
        self._need = 0  # body bytes (+ CRLF) left in the current chunk; 0: a size line is next
        self._text = b""  # SSE text not yet ending in a blank line
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport: no isinstance check).
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)

    def _fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self._chunked is None:
            self._head += data
            end = self._head.find(_END)
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            status = head.split(b"\r\n", 1)[0]
            if b" 200 " not in status + b" ":
                self._fail(RuntimeError(f"GET: {status.decode(errors='replace').strip()}"))
                return
            self._chunked = b"transfer-encoding: chunked" in head.lower()
        body = self._dechunk(data) if self._chunked else data
        if not body:
            return
        text = self._text + body
        end = text.rfind(_END)
        if end < 0:
            self._text = text
            return
        complete, self._text = text[: end + 4], text[end + 4 :]
        if self._opened is not None and not self._opened.is_set() and _POSITION in complete:
            self._opened.set()
        self._on_text(complete, now)

    def _dechunk(self, data: bytes) -> bytes:
        raw = self._raw + data
        out: list[bytes] = []
        at = 0
        while at < len(raw):
            if self._need == 0:
                eol = raw.find(b"\r\n", at)
                if eol < 0:
                    break
                size = int(raw[at:eol].split(b";", 1)[0].strip() or b"0", 16)
                at = eol + 2
                if size == 0:  # the last chunk: the server ended the stream
                    if self.transport is not None:
                        self.transport.close()
                    at = len(raw)
                    break
                self._need = size + 2
            take = min(self._need, len(raw) - at)
            body_left = max(0, self._need - 2)  # the chunk's bytes before its CRLF
            out.append(raw[at : at + min(take, body_left)])
            at += take
            self._need -= take
        self._raw = raw[at:]
        return b"".join(out)


async def stream_text(
    port: int,
    path: str,
    on_text: OnText,
    opened: asyncio.Event | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Follow one SSE stream until cancelled or the server closes it; `on_text` per read."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(lambda: _Stream(request, on_text, opened), host, port)
    try:
        await proto.done
    finally:
        transport.close()


async def stream(
    port: int,
    path: str,
    on_event: OnEvent,
    opened: asyncio.Event | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Follow one SSE stream until cancelled or the server closes it; `on_event` per event."""

    def each(text: bytes, now: float) -> None:
        for seq, payload in parse(text):
            on_event(int(seq), payload, now)

    await stream_text(port, path, each, opened, host)


async def open_text_streams(
    port: int,
    paths: list[str],
    on_text: Callable[[int, bytes, float], None],
    timeout: float = 120,
    parallel: int = 50,
) -> list[asyncio.Task[None]]:
    """Open one stream per path (callback gets the stream's index and a read's SSE text) and wait
    until each has sent its opening `position` event, i.e. is subscribed; at most `parallel` are
    opening at once."""
    tasks: list[asyncio.Task[None]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    for start in range(0, len(paths), parallel):
        events: list[asyncio.Event] = []
        for i in range(start, min(len(paths), start + parallel)):
            ev = asyncio.Event()
            events.append(ev)

            def cb(text: bytes, now: float, i: int = i) -> None:
                on_text(i, text, now)

            tasks.append(asyncio.create_task(stream_text(port, paths[i], cb, ev)))
        waiters = [asyncio.create_task(ev.wait()) for ev in events]
        left = max(0.1, deadline - asyncio.get_running_loop().time())
        _, pending = await asyncio.wait(waiters, timeout=left)
        for w in pending:
            w.cancel()
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
        if failed or pending:
            await close_streams(tasks)
            if failed:
                raise RuntimeError(f"{len(failed)} SSE streams failed: {failed[0].exception()!r}")
            raise TimeoutError(f"SSE streams not all open after {timeout:.0f}s ({len(tasks)} tried)")
    return tasks


async def open_streams(
    port: int,
    paths: list[str],
    on_event: Callable[[int, int, bytes, float], None],
    timeout: float = 120,
    parallel: int = 50,
) -> list[asyncio.Task[None]]:
    """`open_text_streams` with a callback per event: (stream index, seq, raw data, arrival)."""

    def each(i: int, text: bytes, now: float) -> None:
        for seq, payload in parse(text):
            on_event(i, int(seq), payload, now)

    return await open_text_streams(port, paths, each, timeout, parallel)


async def close_streams(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*tasks, return_exceptions=True)
