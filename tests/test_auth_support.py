"""Support for the auth tests (no tests here): a gateway with auth on, keys for two tenants, every role."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import uvicorn
from nats.aio.client import Client as NATS

from ordo.embedded.processes import free_port
from ordo.gateway import keys
from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from tests.conftest import System, run_system, uvicorn_gateway
from tests.helpers import eventually


@dataclass
class Tenants:
    system: System
    a: str
    b: str
    key: dict[str, str]  # "a:viewer", ..., "b:admin" -> secret
    key_id: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key[who]}"}


@contextlib.asynccontextmanager
async def auth_system(
    settings: Settings, nc: NATS, handler: CommandHandler, **overrides: object
) -> AsyncIterator[Tenants]:
    """The system with auth on; tenant `a` is the settings' tenant, `b` another one."""
    settings = settings.with_(auth=True, **overrides)
    async with run_system(settings, nc, handler, worker=False) as system:
        a, b = settings.tenant, "t" + uuid.uuid4().hex[:10]
        conn = await asyncpg.connect(settings.database_url)
        secrets: dict[str, str] = {}
        ids: dict[str, str] = {}
        try:
            for tenant, label in ((a, "a"), (b, "b")):
                for role in keys.ROLES:
                    key, secret = await keys.create_key(conn, tenant, role, f"{label}-{role}")
                    secrets[f"{label}:{role}"], ids[f"{label}:{role}"] = secret, key.id
        finally:
            await conn.close()
        yield Tenants(system, a, b, secrets, ids)


@dataclass
class Gateway:
    base_url: str
    server: uvicorn.Server
    app: Any


@contextlib.asynccontextmanager
async def gateway_server(settings: Settings) -> AsyncIterator[Gateway]:
    """One more gateway process-equivalent (its own app, pool and NATS connection) on a free port."""
    port = free_port()
    server = uvicorn_gateway(settings, port, timeout_graceful_shutdown=1)
    app = server.config.app
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:

        async def up() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(up, timeout=60, what="second gateway")
    try:
        yield Gateway(base, server, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
