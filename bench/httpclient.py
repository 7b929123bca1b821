"""A minimal keep-alive HTTP/1.1 client pool for the benchmarks (loopback, small JSON bodies).

httpx's connection pool spends O(waiting requests) per scheduling step; when a gateway falls behind
an open-loop load, thousands of requests wait and the client itself burns the CPU the system under
test needs. Here a waiting request costs one queue entry."""

from __future__ import annotations

import asyncio
import contextlib


class _IdleClosed(ConnectionError):
    """The server closed the connection without answering a byte."""


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


class HttpPool:
    def __init__(self, host: str, port: int, size: int = 32) -> None:
        self.host = host
        self.port = port
        self.size = size
        self._idle: asyncio.Queue[_Conn | None] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(None)  # a slot without a connection yet

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Conn(reader, writer)

    async def post(self, path: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
        """POST a JSON body; (status, response body)."""
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        conn = await self._idle.get()
        try:
            if conn is None:
                conn = await self._connect()
            conn.writer.write(request)
            try:
                status, data = await asyncio.wait_for(self._response(conn), timeout)
            except _IdleClosed:
                # The server closed this idle keep-alive connection before reading the request
                # (no response byte came back): send it once more on a new connection.
                conn.writer.close()
                conn = await self._connect()
                conn.writer.write(request)
                status, data = await asyncio.wait_for(self._response(conn), timeout)
        except BaseException:
            if conn is not None:
                conn.writer.close()
            self._idle.put_nowait(None)
            raise
        self._idle.put_nowait(conn)
        return status, data

    @staticmethod
    async def _response(conn: _Conn) -> tuple[int, bytes]:
        status_line = await conn.reader.readline()
        if not status_line:
            raise _IdleClosed("connection closed by the server")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        chunked = False
        while (line := await conn.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await conn.reader.readexactly(length)
        parts = []
        while size := int((await conn.reader.readline()).split(b";")[0].strip() or b"0", 16):
            parts.append(await conn.reader.readexactly(size))
            await conn.reader.readexactly(2)
        await conn.reader.readline()
        return status, b"".join(parts)

    async def close(self) -> None:
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            if conn is not None:
                conn.writer.close()
                with contextlib.suppress(Exception):
                    await conn.writer.wait_closed()
