"""The API-key table in each gateway's memory, so that authenticating a request needs no database.

Why: a submit is stored in the event log (NATS) and nothing else; if every request looked its key
up in PostgreSQL, a PostgreSQL outage would stop submits although the log is healthy. So each
gateway loads the live keys and the ended sessions at start and reloads them every
`ttl_s` (ORDO_KEY_CACHE_TTL_S):

- a key created anywhere works at once: a key missing from the table is looked up in PostgreSQL
  (while PostgreSQL is down, such a key answers 503, not 401: it cannot be judged);
- a key revoked or a session ended on this gateway is refused at once; on another gateway within
  `ttl_s` (the next reload);
- while PostgreSQL is unreachable the last loaded table keeps serving, for at most `max_stale_s`
  (ORDO_KEY_CACHE_MAX_STALE_S) after the last successful load; past that a request reloads first
  and answers 503 while it cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ordo.gateway import keys
from ordo.infra.pg import Pool, ReadModelUnavailable

log = logging.getLogger("ordo.gateway.keys")


class KeyCache:
    def __init__(
        self,
        pool: Pool,
        ttl_s: float,
        max_stale_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._max_stale_s = max_stale_s
        self._clock = clock
        self._by_hash: dict[bytes, keys.ApiKey] = {}
        self._by_id: dict[str, keys.ApiKey] = {}
        self._ended: set[str] = set()
        # Changes made here, with when: a load that started before one may not have seen it yet.
        self._revoked_here: dict[str, float] = {}
        self._ended_here: dict[str, float] = {}
        self._loaded_at: float | None = None
        self._load_lock = asyncio.Lock()
        self._stop = asyncio.Event()

    @property
    def loaded_at(self) -> float | None:
        """The clock reading of the last successful load (None: never loaded)."""
        return self._loaded_at

    async def load(self) -> None:
        """Reload the live keys and ended sessions (ReadModelUnavailable while PostgreSQL is down)."""
        started = self._clock()
        rows = await keys.live_keys(self._pool)
        ended = await keys.ended_sessions(self._pool)
        self._revoked_here = {k: t for k, t in self._revoked_here.items() if t >= started}
        self._ended_here = {s: t for s, t in self._ended_here.items() if t >= started}
        live = [(h, k) for h, k in rows if k.id not in self._revoked_here]
        self._by_hash = dict(live)
        self._by_id = {k.id: k for _, k in live}
        self._ended = ended | set(self._ended_here)
        self._loaded_at = started

    async def verify(self, secret: str) -> keys.ApiKey | None:
        """The live key with this secret; None for an unknown or revoked one."""
        if not secret or len(secret) > 512:
            return None
        await self._ensure_fresh()
        key_hash = keys.digest(secret)
        key = self._by_hash.get(key_hash)
        if key is None:  # created since the last load, or unknown
            key = await keys.by_digest(self._pool, key_hash)
            if key is not None and key.id not in self._revoked_here:
                self._by_hash[key_hash] = key
                self._by_id[key.id] = key
        return key

    async def by_id(self, key_id: str) -> keys.ApiKey | None:
        """The live key with this id (a session names its key by id)."""
        await self._ensure_fresh()
        key = self._by_id.get(key_id)
        if key is None and key_id not in self._revoked_here:
            key = await keys.by_id(self._pool, key_id)
            if key is not None:
                self._by_id[key_id] = key
        return key

    def forget(self, key_id: str) -> None:
        """The key was revoked here: refuse it from now on."""
        self._revoked_here[key_id] = self._clock()
        self._by_id.pop(key_id, None)
        self._by_hash = {h: k for h, k in self._by_hash.items() if k.id != key_id}

    def end_session(self, session_id: str) -> None:
        """The session was logged out here: refuse it from now on."""
        self._ended_here[session_id] = self._clock()
        self._ended.add(session_id)

    def session_ended(self, session_id: str) -> bool:
        return session_id in self._ended

    async def _ensure_fresh(self) -> None:
        if self._fresh():
            return
        async with self._load_lock:
            if not self._fresh():
                await self.load()

    def _fresh(self) -> bool:
        return self._loaded_at is not None and self._clock() - self._loaded_at <= self._max_stale_s

    async def run(self) -> None:
        """Reload every `ttl_s` until `shutdown()`; a failed reload keeps the last table."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._ttl_s)
            if self._stop.is_set():
                return
            try:
                async with self._load_lock:
                    await self.load()
            except ReadModelUnavailable as exc:
                log.warning("key table not reloaded (the last one keeps serving): %s", exc)
            except Exception:  # a background loop must outlive one bad reload; the request path reports
                log.exception("key table not reloaded (the last one keeps serving)")

    async def shutdown(self) -> None:
        self._stop.set()
