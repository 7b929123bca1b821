"""What the gateway tells whom (F18), revocation across gateways within the key table's TTL, and
bootstrap admin keys that stay revoked (F9)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NATS

from ordo.domain.errors import TaskNotFound
from ordo.gateway import keys
from ordo.gateway.problems import classify
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import ConcurrencyError, EventStoreUnavailable
from ordo.infra.pg import ReadModelUnavailable
from ordo.infra.settings import Settings
from tests.conftest import run_system
from tests.helpers import eventually
from tests.test_auth_support import auth_system, gateway_server


@pytest.mark.parametrize(
    "exc, status, leak",
    [
        (ConcurrencyError("wrong last sequence: 41"), 409, "sequence"),
        (
            EventStoreUnavailable("direct get failed: {'Nats-Expected-Last-Subject-Sequence': '7'}"),
            503,
            "Nats",
        ),
        (EventStoreUnavailable("no reply from JetStream"), 503, "JetStream"),
        (
            ReadModelUnavailable("PostgreSQL is unavailable: ConnectionRefusedError: 127.0.0.1:5432"),
            503,
            "5432",
        ),
    ],
)
def test_409_and_503_details_name_no_internals(exc: Exception, status: int, leak: str) -> None:
    """F18: the cause (NATS descriptions, headers, addresses) is logged, the answer is generic."""
    problem = classify(exc)
    assert problem is not None and problem.status == status
    assert leak not in problem.detail and str(exc) not in problem.detail
    if status == 503:
        assert problem.headers == {"Retry-After": "1"}
    # Domain errors are ours and stay precise.
    mine = classify(TaskNotFound("abc"))
    assert mine is not None and "abc" in mine.detail


async def test_public_docs_is_an_explicit_setting(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    async with auth_system(settings, nc, handler, public_docs=True) as t:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert (await t.system.http.get(path)).status_code == 200, path
        assert (await t.system.http.get("/v1/tasks")).status_code == 401


async def test_workers_show_host_pid_and_counters_to_admins_only(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """F18: workers serve every tenant; their machine and all-tenant counters are for admins of
    the deployment's own tenant, and so are drain, scale and kill (a tenant's pass, 2026-12-06:
    another tenant's admin drained the shared workers and scaled them to 0)."""
    settings = settings.with_(auth=True)
    async with run_system(settings, nc, handler, worker=True) as system:
        conn = await asyncpg.connect(settings.database_url)
        try:
            _, admin = await keys.create_key(conn, settings.tenant, "admin", "the deployment's admin")
            _, other = await keys.create_key(conn, "tother", "admin", "other admin")
            _, viewer = await keys.create_key(conn, "tother", "viewer", "other viewer")
        finally:
            await conn.close()

        async def listed(key: str) -> list[dict[str, object]]:
            r = await system.http.get("/v1/workers", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
            items: list[dict[str, object]] = r.json()["items"]
            return items

        await eventually(lambda: listed(viewer), timeout=30, what="a worker heartbeat")
        seen = (await listed(viewer))[0]
        for name in (
            "host",
            "pid",
            "rss_bytes",
            "processed",
            "succeeded",
            "failed",
            "paced_waits",
            "paced_s",
        ):
            assert seen[name] is None, (name, seen)
        assert seen["status"] == "online" and seen["id"]
        one = await system.http.get(
            f"/v1/workers/{seen['id']}", headers={"Authorization": f"Bearer {viewer}"}
        )
        assert one.json()["pid"] is None
        full = (await listed(admin))[0]
        assert isinstance(full["host"], str) and isinstance(full["pid"], int)
        assert isinstance(full["processed"], int)
        assert (await listed(other))[0]["pid"] is None
        as_other = {"Authorization": f"Bearer {other}"}
        for path, body in (
            (f"/v1/workers/{seen['id']}:drain", None),
            ("/v1/workers:scale", {"count": 0}),
            (f"/v1/workers/{seen['id']}:kill", None),
        ):
            r = await system.http.post(path, json=body, headers=as_other)
            assert r.status_code == 403 and "deployment's own tenant" in r.json()["detail"], (path, r.text)
        assert (await listed(admin))[0]["status"] == "online"  # not drained


async def test_a_key_revoked_on_one_gateway_is_refused_by_another_within_the_ttl(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """Keys are cached per gateway: the revoking gateway refuses at once, another one after its
    next reload (ORDO_KEY_CACHE_TTL_S); a key created on one works on the other at once."""
    async with auth_system(settings, nc, handler, key_cache_ttl_s=0.5) as t:
        async with gateway_server(t.system.settings) as other:
            async with httpx.AsyncClient(base_url=other.base_url) as far:
                victim = t.auth("a:operator")
                assert (await far.get("/v1/whoami", headers=victim)).status_code == 200
                made = await t.system.http.post(
                    "/v1/keys", json={"role": "viewer"}, headers=t.auth("a:admin")
                )
                fresh = {"Authorization": f"Bearer {made.json()['key']}"}
                assert (await far.get("/v1/whoami", headers=fresh)).status_code == 200
                r = await t.system.http.delete(
                    f"/v1/keys/{t.key_id['a:operator']}", headers=t.auth("a:admin")
                )
                assert r.status_code == 204
                assert (await t.system.http.get("/v1/whoami", headers=victim)).status_code == 401

                async def refused() -> bool:
                    return (await far.get("/v1/whoami", headers=victim)).status_code == 401

                await eventually(refused, timeout=10, what="revocation seen by the other gateway")


async def test_a_revoked_bootstrap_admin_key_stays_revoked_across_restarts(
    settings: Settings, nc: NATS, handler: CommandHandler, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """F9: `ordo up` and a gateway with ORDO_ADMIN_KEY re-create their admin key at every start,
    but never revive a revoked one: `ordo up` mints, stores and prints a new key instead."""
    from ordo.up import _local_admin

    local = settings.with_(auth=True)
    first, _ = await _local_admin(local, local.database_url, tmp_path)
    assert (await _local_admin(local, local.database_url, tmp_path))[0] == first  # kept while live
    conn = await asyncpg.connect(local.database_url)
    try:
        key = await keys.verify(conn, first)
        assert key is not None and await keys.revoke(conn, local.tenant, key.id)
        capsys.readouterr()
        second, _ = await _local_admin(local, local.database_url, tmp_path)
        assert second != first
        assert await keys.verify(conn, first) is None
        minted = await keys.verify(conn, second)
        assert minted is not None and minted.role == "admin" and minted.tenant == local.tenant
        assert (tmp_path / "admin.key").read_text().strip() == second
        assert "revoked" in capsys.readouterr().out
    finally:
        await conn.close()

    # ORDO_ADMIN_KEY (compose): revoked through the API, a gateway (re)start leaves it revoked.
    fixed = {"Authorization": "Bearer compose-admin-key-for-the-test"}
    async with auth_system(settings, nc, handler, admin_key="compose-admin-key-for-the-test") as t:
        me = await t.system.http.get("/v1/whoami", headers=fixed)
        assert me.status_code == 200 and me.json()["role"] == "admin"
        assert (
            await t.system.http.delete(f"/v1/keys/{me.json()['key_id']}", headers=fixed)
        ).status_code == 204
        async with gateway_server(t.system.settings) as restarted:
            async with httpx.AsyncClient(base_url=restarted.base_url) as http:
                assert (await http.get("/v1/whoami", headers=fixed)).status_code == 401


async def test_an_event_stream_ends_when_its_key_is_revoked(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """SSE streams re-check their key in the gateway's key table (no query per check)."""
    async with auth_system(settings, nc, handler) as t:
        http = t.system.http

        async def read_until_closed() -> int:
            lines = 0
            async with http.stream("GET", "/v1/events/stream", headers=t.auth("a:viewer")) as s:
                assert s.status_code == 200
                async for _ in s.aiter_lines():
                    lines += 1
                    if lines == 1:
                        r = await http.delete(f"/v1/keys/{t.key_id['a:viewer']}", headers=t.auth("a:admin"))
                        assert r.status_code == 204
            return lines

        assert await asyncio.wait_for(read_until_closed(), 30) >= 1


async def test_a_bootstrap_secret_that_is_already_a_key_is_not_moved_or_promoted(settings: Settings) -> None:
    """A tenant's pass (2026-12-06): a second tenant's gateway given the first tenant's viewer key as
    its ORDO_ADMIN_KEY moved that key to the second tenant and made it an admin, silently. The key
    now stays as it was; the gateway logs why, `ordo up` mints a key of its own."""
    secret = "bootstrap-" + os.urandom(12).hex()
    conn = await asyncpg.connect(settings.database_url)
    try:
        await keys.migrate(conn)
        viewer, _ = await keys.create_key(conn, "tfirst", "viewer", "copied around", secret=secret)
        with pytest.raises(keys.KeyTaken):
            await keys.create_key(conn, "tsecond", "admin", "ORDO_ADMIN_KEY", secret=secret)
        with pytest.raises(keys.KeyTaken):
            await keys.create_key(conn, "tfirst", "admin", "ORDO_ADMIN_KEY", secret=secret)
        still = await keys.verify(conn, secret)
        assert still is not None and (still.id, still.tenant, still.role) == (viewer.id, "tfirst", "viewer")
        admin, plain, minted = await keys.bootstrap_admin(conn, "tsecond", "ordo up", secret)
        assert minted and plain != secret and (admin.tenant, admin.role) == ("tsecond", "admin")
        again, _ = await keys.create_key(conn, "tfirst", "viewer", "same key again", secret=secret)
        assert again.id == viewer.id  # the same tenant and role: idempotent, as before
    finally:
        await conn.close()


async def test_the_deployments_admin_creates_another_tenant_whose_admin_cannot_reach_back(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """A tenant's pass (2026-12-06): the README gave no way to set up a second tenant, and
    `POST /v1/keys` refused a `tenant`. An admin of the deployment's own tenant now creates a
    tenant's first admin key with it; no other tenant's admin may."""
    async with auth_system(settings, nc, handler) as t:
        http = t.system.http
        new = "team-" + os.urandom(4).hex()
        r = await http.post(
            "/v1/keys", json={"role": "admin", "name": "team admin", "tenant": new}, headers=t.auth("a:admin")
        )
        assert r.status_code == 201, r.text
        assert r.json()["tenant"] == new and r.json()["role"] == "admin"
        theirs = {"Authorization": f"Bearer {r.json()['key']}"}
        assert (await http.get("/v1/whoami", headers=theirs)).json()["tenant"] == new
        # That tenant's admin manages its own keys, but creates none elsewhere.
        r = await http.post("/v1/keys", json={"role": "viewer"}, headers=theirs)
        assert r.status_code == 201 and r.json()["tenant"] == new, r.text
        for tenant in (t.a, t.b):
            r = await http.post("/v1/keys", json={"role": "admin", "tenant": tenant}, headers=theirs)
            assert r.status_code == 403 and "deployment's own tenant" in r.json()["detail"], r.text
        r = await http.post("/v1/keys", json={"role": "admin", "tenant": new}, headers=t.auth("b:admin"))
        assert r.status_code == 403, r.text
        r = await http.post(
            "/v1/keys", json={"role": "viewer", "tenant": "Not Valid"}, headers=t.auth("a:admin")
        )
        assert r.status_code == 422, r.text
        # Its tasks are its own.
        r = await http.post("/v1/tasks", json={"type": "demo.echo"}, headers=theirs)
        assert r.status_code == 202, r.text
        task = r.json()["id"]
        assert (await http.get(f"/v1/tasks/{task}", headers=t.auth("a:admin"))).status_code == 404
