"""A read model is never read against another event log (found by an operator's pass, 2026-12-06):
a data folder whose `nats/` was lost, or moved to `--cluster 3`, starts a new, empty log beside the
old PostgreSQL read model. The projector used to carry on from the old checkpoint: new tasks ran but
answered 404 and never listed, readiness green, nothing logged. Now it refuses the log, readiness
says why, and `ordo rebuild` builds the read model from the log there is."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.nats_conn import provision
from ordo.projections import log_identity
from ordo.projections.rebuild import rebuild
from ordo.projections.runner import ProjectionRunner
from tests.conftest import System
from tests.helpers import eventually


async def _submit(http: httpx.AsyncClient) -> str:
    r = await http.post("/v1/tasks", json={"type": "demo.echo"})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def _status(http: httpx.AsyncClient, task_id: str) -> int:
    return (await http.get(f"/v1/tasks/{task_id}")).status_code


async def test_a_new_log_beside_an_old_read_model_is_refused_until_rebuilt(
    gateway_only: System, nc: NATS
) -> None:
    http = gateway_only.http
    old = await _submit(http)
    await eventually(lambda: _listed(http, old), timeout=30, what="the first task in the read model")
    await gateway_only.projector.shutdown()
    # The log lost: a new, empty one in its place.
    await nc.jetstream().delete_stream(sj.EVENTS_STREAM)
    await provision(nc, gateway_only.settings)
    projector = ProjectionRunner(nc, gateway_only.settings.database_url)
    running = asyncio.create_task(projector.run())
    try:

        async def refused() -> dict[str, object] | None:
            r = await http.get("/readyz")
            body = r.json()
            return body if r.status_code == 503 and "another event log" in str(body.get("error")) else None

        body = await eventually(refused, timeout=30, what="readiness naming the refused log")
        assert "ordo rebuild" in str(body["error"])
        new = await _submit(http)  # the log takes it; the read model does not show it yet
        assert await _status(http, new) == 404
        report = await rebuild(nc, gateway_only.settings.database_url)
        assert report.events >= 1
        await eventually(lambda: _listed(http, new), timeout=30, what="the new task after the rebuild")
        assert await _status(http, old) == 404  # only the lost log held it

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await eventually(ready, timeout=30, what="ready again")
        newer = await _submit(http)  # and the projector follows the new log from there
        await eventually(lambda: _listed(http, newer), timeout=30, what="a task after the rebuild")
    finally:
        await projector.shutdown()
        await asyncio.wait_for(running, 30)


async def _listed(http: httpx.AsyncClient, task_id: str) -> bool:
    return await _status(http, task_id) == 200


async def test_a_read_model_from_before_the_check_stays_refused_as_the_new_log_grows(
    gateway_only: System, nc: NATS
) -> None:
    """A read model that recorded no log (built before this check) can only tell a new log by its
    checkpoint being past the log's end; once refused, a new log growing past that checkpoint must
    not be taken for the old one."""
    http = gateway_only.http
    dsn = gateway_only.settings.database_url
    first = await _submit(http)
    await eventually(lambda: _listed(http, first), timeout=30, what="the first task in the read model")
    await gateway_only.projector.shutdown()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM read_model_log")  # as a read model from before the check
        checkpoint = int(await conn.fetchval("SELECT max(last_seq) FROM projection_checkpoints"))
        await nc.jetstream().delete_stream(sj.EVENTS_STREAM)
        await provision(nc, gateway_only.settings)
        why = await log_identity.mismatch(conn, nc)
        assert why is not None and "log ends at 0" in why
        await log_identity.refuse(conn, why)  # what the projector does with it
        while (await log_identity.current(nc))[1] <= checkpoint:  # the new log passes the checkpoint
            await _submit(http)
        assert await log_identity.mismatch(conn, nc) == why
    finally:
        await conn.close()
    report = await rebuild(nc, dsn)  # the way back: the read model of this log, recorded as such
    assert report.events > checkpoint
    conn = await asyncpg.connect(dsn)
    try:
        assert await log_identity.mismatch(conn, nc) is None
        assert await log_identity.refusal(conn) is None
    finally:
        await conn.close()
