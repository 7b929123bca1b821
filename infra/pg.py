"""The PostgreSQL pool and error translation at the boundary.

asyncpg raises a zoo of errors when the server is down, restarting or has killed a backend (refused
connections, `CannotConnectNowError` while it starts, `ConnectionDoesNotExistError` mid-query,
`AdminShutdownError`, a protocol caught mid-error on a connection whose backend was killed,
timeouts). They all mean the same to a caller: the read model is unavailable for now, retry. `Pool`
wraps asyncpg's pool so that every such error, whether raised while acquiring a connection or inside
the `async with pool.acquire()` block, leaves this module as `ReadModelUnavailable` (chained with
`from`); the gateway answers it 503 with Retry-After. Errors that are the query's own fault (a bad
value, a constraint) pass through unchanged.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import asyncpg
import msgspec


class ReadModelUnavailable(Exception):
    """PostgreSQL could not be reached or the query failed for a reason outside the caller's input."""


_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connect or acquire timeout
    asyncpg.PostgresConnectionError,  # class 08 and "connection was closed in the middle of operation"
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, crash, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    # A backend terminated while its connection sat idle in the pool: the next query on it finds
    # the protocol mid-error ("cannot switch to state ..."); the pool then drops the connection.
    asyncpg.InternalClientError,
)


def translate(exc: BaseException) -> ReadModelUnavailable | None:
    """The `ReadModelUnavailable` an asyncpg/socket error stands for; None when it is not one."""
    if isinstance(exc, ReadModelUnavailable):
        return exc
    if isinstance(exc, _UNAVAILABLE):
        return ReadModelUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return ReadModelUnavailable(f"PostgreSQL connection lost: {exc}")  # "connection is closed"
    return None


def _decode_json(value: str) -> Any:
    return msgspec.json.decode(value)


async def _init(conn: asyncpg.Connection) -> None:
    # json(b) in: a JSON text we already hold (no re-encoding); out: decoded with msgspec.
    await conn.set_type_codec("jsonb", encoder=str, decoder=_decode_json, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=str, decoder=_decode_json, schema="pg_catalog")


class _Acquire:
    """`pool.acquire()` whose connection errors, in acquiring or in the block, are translated."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aenter__(self) -> Any:
        try:
            return await self._inner.__aenter__()
        except Exception as exc:
            if (unavailable := translate(exc)) is None:
                raise
            raise unavailable from exc

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._inner.__aexit__(et, exc, tb)  # gives the connection back (a broken one is dropped)
        except Exception as release_error:
            if exc is None:
                if (unavailable := translate(release_error)) is None:
                    raise
                raise unavailable from release_error
        if exc is not None and (unavailable := translate(exc)) is not None and unavailable is not exc:
            raise unavailable from exc


class Pool:
    """asyncpg's pool with connection errors translated to `ReadModelUnavailable`.

    `acquire()` (with `async with`), `fetch`, `fetchrow`, `fetchval`, `execute` and `executemany`
    are translated; any other attribute is asyncpg's own."""

    def __init__(self, inner: Any, acquire_timeout: float | None = None) -> None:
        self._inner = inner
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        return _Acquire(self._inner.acquire(timeout=self._acquire_timeout if timeout is None else timeout))

    async def fetch(self, query: str, *args: Any, **kw: Any) -> list[Any]:
        async with self.acquire() as conn:
            rows: list[Any] = await conn.fetch(query, *args, **kw)
            return rows

    async def fetchrow(self, query: str, *args: Any, **kw: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args, **kw)

    async def fetchval(self, query: str, *args: Any, **kw: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args, **kw)

    async def execute(self, query: str, *args: Any, **kw: Any) -> str:
        async with self.acquire() as conn:
            status: str = await conn.execute(query, *args, **kw)
            return status

    async def executemany(self, query: str, args: Any, **kw: Any) -> None:
        async with self.acquire() as conn:
            await conn.executemany(query, args, **kw)

    async def close(self) -> None:
        await self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def create_pool(
    dsn: str, min_size: int = 1, max_size: int = 10, command_timeout: float | None = None
) -> Pool:
    """A pool whose queries and waits for a connection give up after `command_timeout` (None:
    never), as `ReadModelUnavailable`: a hung server would otherwise hold every caller."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, timeout=10, init=_init, command_timeout=command_timeout
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ReadModelUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return Pool(pool, acquire_timeout=command_timeout)


async def connect(dsn: str) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ReadModelUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    await _init(conn)
    return conn
