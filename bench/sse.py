"""A minimal SSE client for the benchmarks: one HTTP/1.1 GET on a raw asyncio connection, chunked
decoding, and a callback per `task_event` stamped with the time its bytes arrived. Cheaper per event
than a general HTTP client, so that hundreds of streams fit in one process next to the system."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime

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


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    size_line = await reader.readline()
    if not size_line:
        return b""
    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
    if size == 0:
        return b""
    data = await reader.readexactly(size)
    await reader.readexactly(2)  # CRLF after the chunk
    return data


async def stream(
    port: int,
    path: str,
    on_event: OnEvent,
    opened: asyncio.Event | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Follow one SSE stream until cancelled or the server closes it."""
    reader, writer = await asyncio.open_connection(host, port, limit=2**20)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"GET {path}: {status.decode(errors='replace').strip()}")
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        pending = b""
        while True:
            data = await _read_chunked(reader) if chunked else await reader.read(65536)
            if not data:
                return
            now = time.time()
            pending = (pending + data).replace(b"\r\n", b"\n")
            if pending.endswith(b"\r"):  # a CRLF split across reads: keep the CR for the next one
                *blocks, rest = (pending[:-1]).split(b"\n\n")
                pending = rest + b"\r"
            else:
                *blocks, pending = pending.split(b"\n\n")
            for block in blocks:
                kind = b""
                payload = b""
                seq = 0
                for field in block.split(b"\n"):
                    if field.startswith(b"event:"):
                        kind = field[6:].strip()
                    elif field.startswith(b"data:"):
                        payload = field[5:].strip()
                    elif field.startswith(b"id:"):
                        seq = int(field[3:])
                if kind == b"position" and opened is not None:
                    opened.set()
                elif kind == b"task_event":
                    on_event(seq, payload, now)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def open_streams(
    port: int,
    paths: list[str],
    on_event: Callable[[int, int, bytes, float], None],
    timeout: float = 120,
    parallel: int = 50,
) -> list[asyncio.Task[None]]:
    """Open one stream per path (callback gets the stream's index) and wait until each has sent its
    opening `position` event, i.e. is subscribed; at most `parallel` are opening at once."""
    tasks: list[asyncio.Task[None]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    for start in range(0, len(paths), parallel):
        events: list[asyncio.Event] = []
        for i in range(start, min(len(paths), start + parallel)):
            ev = asyncio.Event()
            events.append(ev)

            def cb(seq: int, payload: bytes, now: float, i: int = i) -> None:
                on_event(i, seq, payload, now)

            tasks.append(asyncio.create_task(stream(port, paths[i], cb, ev)))
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


async def close_streams(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
