"""The gateway's composition root: the connections and services every route uses."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg
from fastapi import Request
from nats.aio.client import Client as NATS

from ordo.gateway import keys
from ordo.gateway.key_cache import KeyCache
from ordo.gateway.limits import Limits
from ordo.gateway.live import Notifier, TailHub
from ordo.infra import wiring
from ordo.infra.command_handler import CommandHandler
from ordo.infra.nats_conn import connect, disconnect, provision
from ordo.infra.pg import Pool, ReadModelUnavailable, create_pool
from ordo.infra.pg import connect as connect_pg
from ordo.infra.pg import connect as pg_connect
from ordo.infra.queue_control import QueueController
from ordo.infra.schedule_handler import ScheduleHandler
from ordo.infra.settings import Settings
from ordo.infra.tasks import cancel_and_wait
from ordo.projections.runner import NOTIFY_CHANNEL
from ordo.projections.schema import migrate

log = logging.getLogger("ordo.gateway")


@dataclass
class Services:
    settings: Settings
    nc: NATS
    handler: CommandHandler
    schedules: ScheduleHandler
    queues: QueueController
    pool: Pool
    notifier: Notifier
    limits: Limits
    keys: KeyCache
    hub: TailHub
    session_secret: bytes = b""
    _listener: asyncpg.Connection | None = field(default=None)
    _key_reloader: asyncio.Task[None] | None = field(default=None)
    _relisten: asyncio.Task[None] | None = field(default=None)
    _tail: asyncio.Task[None] | None = field(default=None)
    _closing: bool = field(default=False)

    @classmethod
    async def start(cls, settings: Settings) -> Services:
        nc = await connect(settings, name="ordo-gateway")
        await provision(nc, settings)
        migrating = await connect_pg(settings.database_url)  # no query timeout: a migration may take long
        try:
            await migrate(migrating)
            await keys.migrate(migrating)
        finally:
            await migrating.close()
        pool = await create_pool(settings.database_url, command_timeout=settings.pg_command_timeout_s)
        async with pool.acquire() as conn:
            secret = await keys.session_secret(conn)
            if settings.auth and settings.admin_key:
                # Deployments (compose) bootstrap their first admin key from ORDO_ADMIN_KEY.
                try:
                    await keys.create_key(
                        conn, settings.tenant, "admin", "ORDO_ADMIN_KEY", secret=settings.admin_key
                    )
                except keys.KeyRevoked:
                    log.warning("ORDO_ADMIN_KEY was revoked and stays revoked; set a new one")
                except keys.KeyTaken as exc:
                    log.error(
                        "ORDO_ADMIN_KEY is not made an admin key of tenant %r: %s; give each tenant's"
                        " gateway a secret of its own",
                        settings.tenant,
                        exc,
                    )
        handler = wiring.command_handler(nc, settings)
        limits = Limits(settings.rate_limit_per_s, settings.rate_limit_burst, settings.sse_max_per_key)
        key_cache = KeyCache(pool, settings.key_cache_ttl_s, settings.key_cache_max_stale_s)
        await key_cache.load()
        schedules = wiring.schedule_handler(nc, handler, settings)
        queues = wiring.queue_controller(nc, handler, settings)
        notifier = Notifier()
        hub = TailHub(pool, notifier, nc=nc)  # SSE: one reader of the projector's commits, fanned out
        services = cls(
            settings, nc, handler, schedules, queues, pool, notifier, limits, key_cache, hub, secret
        )
        services._key_reloader = asyncio.create_task(key_cache.run(), name="key-cache")
        await services._listen()
        await hub.start()
        services._tail = asyncio.create_task(hub.run(), name="sse-tail")
        return services

    async def _listen(self) -> None:
        conn = await pg_connect(self.settings.database_url)

        def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
            self.notifier.notify(int(payload))

        await conn.add_listener(NOTIFY_CHANNEL, on_notify)
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn

    def _listener_lost(self, _conn: object) -> None:
        # PostgreSQL restarted or killed the backend: listen again once it is back (until then SSE
        # streams and waiting reads poll on their timeouts, as they do for a missed notification).
        if not self._closing:
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                await self._listen()
            except ReadModelUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                log.info("listening for projector commits again")
                return

    async def close(self) -> None:
        self._closing = True
        if self._relisten is not None:
            await cancel_and_wait(self._relisten)
        await self.keys.shutdown()
        await self.hub.shutdown()
        if self._tail is not None:
            await self._tail
        if self._key_reloader is not None:
            await self._key_reloader
        if self._listener is not None:
            await self._listener.close()
        await self.pool.close()
        await disconnect(self.nc)


def services_of(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def services(request: Request) -> Services:
    """The dependency (async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop
    on every request)."""
    return services_of(request)
