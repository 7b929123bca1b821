"""T05 (PostgreSQL as the failing dependency; T13's API half): the submit path depends on the event
log only. With a real embedded PostgreSQL stopped under load, submits keep answering 202 (API keys
come from the gateway's in-memory table), reads answer 503 problem+json with Retry-After (never a
500), and once PostgreSQL is back the reads recover and every accepted task is visible, succeeded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from ordo.embedded.nats import EmbeddedNats
from ordo.embedded.postgres import EmbeddedPostgres, PostgresConfig
from ordo.embedded.processes import free_port
from ordo.gateway import keys
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.projections.runner import ProjectionRunner
from tests.conftest import System, run_system
from tests.helpers import eventually


@pytest.fixture(scope="module")
def own_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL these tests may stop and start (a fixed port, so URLs survive a restart)."""
    data = tmp_path_factory.mktemp("pg-outage") / "data"
    server = EmbeddedPostgres(PostgresConfig(data_dir=data, port=free_port(), fsync=False))
    server.start()
    yield server
    server.stop()


@dataclass
class Outage:
    system: System
    pg: EmbeddedPostgres
    keys: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def stop_pg(self) -> None:
        await asyncio.to_thread(self.pg.stop)

    def start_pg(self) -> None:
        # On the test's main thread: the server's parent-death signal follows the thread that forks it.
        self.pg.start()


@contextlib.asynccontextmanager
async def outage_system(
    pg: EmbeddedPostgres, nats_server: EmbeddedNats, tmp_path: Path, **overrides: object
) -> AsyncIterator[Outage]:
    if pg.process is None:
        pg.start()
    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = pg.url.rsplit("/", 1)[0] + "/" + name
    tenant = "t" + uuid.uuid4().hex[:10]
    found: dict[str, str] = {}
    conn = await asyncpg.connect(dsn)
    try:
        await keys.migrate(conn)
        # Both exist before the gateway starts: "seen" is used before the outage, "unseen" first
        # during it (it is known from the key table the gateway loaded, not from a request).
        for label in ("seen", "unseen", "viewer"):
            _, found[label] = await keys.create_key(
                conn, tenant, "viewer" if label == "viewer" else "submitter"
            )
    finally:
        await conn.close()
    settings = Settings(
        nats_url=nats_server.url,
        database_url=dsn,
        tenant=tenant,
        auth=True,
        ack_wait_s=10.0,
        lease_extend_every_s=2.0,
        backoff_base_s=0.2,
        backoff_max_s=1.0,
        timer_lead_s=0.5,
        shutdown_grace_s=2.0,
        rate_limit_per_s=10_000.0,
        rate_limit_burst=10_000,
        data_dir=tmp_path,
        **overrides,  # type: ignore[arg-type]
    )
    nc = await connect(settings, name="ordo-test")
    await provision(nc, settings)
    handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
    try:
        async with run_system(settings, nc, handler) as system:
            yield Outage(system, pg, found)
    finally:
        if pg.process is None:
            pg.start()
        await nc.close()


def _is_unavailable(r: httpx.Response) -> bool:
    return (
        r.status_code == 503
        and r.headers["content-type"].startswith("application/problem+json")
        and int(r.headers["retry-after"]) >= 1
        and r.json()["type"].endswith("/read-model-unavailable")
    )


async def test_t05_postgres_outage_under_load_submits_continue_and_reads_recover(
    own_pg: EmbeddedPostgres, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with outage_system(own_pg, nats_server, tmp_path, key_cache_ttl_s=0.5) as o:
        http = o.system.http
        phase = "before"
        accepted: dict[str, list[str]] = {"before": [], "outage": [], "after": []}
        unexpected: list[tuple[str, int, str]] = []
        stop = asyncio.Event()

        async def load(who: str) -> None:
            while not stop.is_set():
                at = phase
                r = await http.post(
                    "/v1/tasks", json={"type": "demo.echo", "payload": {"at": at}}, headers=o.auth(who)
                )
                if r.status_code == 202:
                    accepted[at].append(r.json()["id"])
                else:
                    unexpected.append((at, r.status_code, r.text))

        async def count(at: str, n: int) -> bool:
            return len(accepted[at]) >= n or bool(unexpected)

        loaders = [asyncio.create_task(load("seen"))]
        try:
            await eventually(lambda: count("before", 20), timeout=60, what="submits before the outage")
            first = accepted["before"][0]
            ok = await http.get(f"/v1/tasks/{first}?consistency=wait", headers=o.auth("viewer"))
            assert ok.status_code == 200, ok.text
            browser = httpx.AsyncClient(base_url=o.system.base_url, timeout=30)
            signed = await browser.post("/auth/session", json={"key": o.keys["unseen"]})
            assert signed.status_code == 204, signed.text

            await o.stop_pg()
            phase = "outage"
            # A key not used before the outage submits too: the gateway knows it from its table.
            loaders.append(asyncio.create_task(load("unseen")))
            # Reads: 503 problem+json with Retry-After, never 500 (list, one task, queues, keys).
            for path, who in (
                ("/v1/tasks", "viewer"),
                (f"/v1/tasks/{first}", "viewer"),
                ("/v1/queues", "viewer"),
                ("/v1/whoami", "viewer"),
            ):
                r = await http.get(path, headers=o.auth(who))
                if path == "/v1/whoami":
                    assert r.status_code == 200, r.text  # answered from the key table alone
                else:
                    assert _is_unavailable(r), (path, r.status_code, r.text)
                    assert "asyncpg" not in r.text and "Error" not in r.json()["detail"]
            # A browser session needs no PostgreSQL either (secret and key table in memory).
            r = await browser.post("/v1/tasks", json={"type": "demo.echo", "payload": {"at": "outage"}})
            assert r.status_code == 202, r.text
            accepted["outage"].append(r.json()["id"])
            assert (await browser.get("/v1/whoami")).json()["role"] == "submitter"
            await browser.aclose()
            await eventually(lambda: count("outage", 40), timeout=60, what="submits during the outage")
            # Reloads of the key table have failed meanwhile; the last one keeps serving.
            assert not unexpected, unexpected[:3]

            o.start_pg()
            phase = "after"
            await eventually(lambda: count("after", 10), timeout=60, what="submits after the outage")
        finally:
            stop.set()
            await asyncio.gather(*loaders)
        assert not unexpected, unexpected[:3]
        assert len(accepted["outage"]) >= 40

        # The in-process projector's connection died with PostgreSQL; under `ordo up` the supervisor
        # restarts the projector process. Do the same here if it stopped.
        extra: ProjectionRunner | None = None
        extra_task: asyncio.Task[None] | None = None
        if not o.system.projector.active:
            extra = ProjectionRunner(o.system.nc, o.system.settings.database_url)
            extra_task = asyncio.create_task(extra.run())
        try:

            async def reads_recovered() -> bool:
                r = await http.get("/v1/tasks?limit=1", headers=o.auth("viewer"))
                return r.status_code == 200

            await eventually(reads_recovered, timeout=60, what="reads after PostgreSQL is back")
            every = [t for at in ("before", "outage", "after") for t in accepted[at]]

            async def all_succeeded() -> list[str]:
                missing = []
                for task_id in every:
                    r = await http.get(f"/v1/tasks/{task_id}", headers=o.auth("viewer"))
                    assert r.status_code in (200, 404), r.text
                    if r.status_code == 404 or r.json()["status"] != "succeeded":
                        missing.append(task_id)
                return [] if missing else ["done"]

            await eventually(all_succeeded, timeout=120, interval=0.5, what="every accepted task succeeded")
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
        finally:
            if extra is not None and extra_task is not None:
                await extra.shutdown()
                await asyncio.wait_for(extra_task, 30)


async def test_a_key_not_in_the_table_is_503_not_401_while_postgres_is_down(
    own_pg: EmbeddedPostgres, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """A key created after the gateway started works at once (looked up on a miss). While
    PostgreSQL is down a key the gateway does not know cannot be judged: 503, not 401. The known
    ones keep working for ORDO_KEY_CACHE_MAX_STALE_S after the last load, then answer 503 too
    until the table can be reloaded; everything is back once PostgreSQL is."""
    async with outage_system(
        own_pg, nats_server, tmp_path, key_cache_ttl_s=0.2, key_cache_max_stale_s=6.0
    ) as o:
        http = o.system.http
        conn = await asyncpg.connect(o.system.settings.database_url)
        try:
            _, late = await keys.create_key(conn, o.system.settings.tenant, "submitter", "late")
        finally:
            await conn.close()
        task = {"type": "demo.echo"}
        assert (await http.post("/v1/tasks", json=task, headers=o.auth("seen"))).status_code == 202

        async def known_everywhere() -> bool:  # a reload (every 0.2 s) has seen the new key
            return (
                await http.get("/v1/whoami", headers={"Authorization": f"Bearer {late}"})
            ).status_code == 200

        await eventually(known_everywhere, timeout=10, what="new key accepted")
        await o.stop_pg()
        r = await http.post("/v1/tasks", json=task, headers={"Authorization": "Bearer ordo_knew_never"})
        assert _is_unavailable(r), r.text
        assert (await http.post("/v1/tasks", json=task, headers=o.auth("seen"))).status_code == 202

        async def stale() -> bool:
            r = await http.post("/v1/tasks", json=task, headers=o.auth("seen"))
            assert r.status_code in (202, 503), r.text
            return _is_unavailable(r)

        await eventually(stale, timeout=30, what="the stale table refused")
        o.start_pg()

        async def back() -> bool:
            r = await http.post("/v1/tasks", json=task, headers=o.auth("seen"))
            return r.status_code == 202

        await eventually(back, timeout=30, what="submits after PostgreSQL is back")
        r = await http.post("/v1/tasks", json=task, headers={"Authorization": "Bearer ordo_knew_never"})
        assert r.status_code == 401, r.text


async def test_killed_postgres_backends_answer_503_never_500(
    own_pg: EmbeddedPostgres, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The audit's symptom: terminating the gateway's PostgreSQL backends mid-request gave HTTP 500
    (`Exception in ASGI application`). Now such a read is 503 + Retry-After, or served by a fresh
    connection; submits are untouched."""
    async with outage_system(own_pg, nats_server, tmp_path) as o:
        http = o.system.http
        task_id = (await http.post("/v1/tasks", json={"type": "demo.echo"}, headers=o.auth("seen"))).json()[
            "id"
        ]
        seen = await http.get(f"/v1/tasks/{task_id}?consistency=wait", headers=o.auth("viewer"))
        assert seen.status_code == 200, seen.text
        dsn = o.system.settings.database_url
        statuses: dict[int, int] = {}
        stop = asyncio.Event()

        async def read() -> None:
            while not stop.is_set():
                for path in ("/v1/tasks", f"/v1/tasks/{task_id}", "/v1/queues"):
                    r = await http.get(path, headers=o.auth("viewer"))
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    assert r.status_code in (200, 503), (path, r.status_code, r.text)
                    if r.status_code == 503:
                        assert _is_unavailable(r), r.text

        async def kill() -> int:
            killed = 0
            conn = await asyncpg.connect(own_pg.url)
            try:
                while killed < 40 and not stop.is_set():
                    killed += await conn.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = $1 AND pid <> pg_backend_pid()",
                        dsn.rsplit("/", 1)[1],
                    )
            finally:
                await conn.close()
            return killed

        readers = [asyncio.create_task(read()) for _ in range(4)]
        try:
            killed = await asyncio.wait_for(kill(), 60)
        finally:
            stop.set()
            await asyncio.gather(*readers)
        assert killed >= 40
        assert statuses.get(200, 0) > 0, statuses
        r = await http.post("/v1/tasks", json={"type": "demo.echo"}, headers=o.auth("seen"))
        assert r.status_code == 202, r.text
        print("statuses while backends were killed:", statuses)


def _postgres_pids(pg: EmbeddedPostgres) -> list[int]:
    """The postmaster and its children (the backends), from /proc."""
    assert pg.process is not None
    main = pg.process.pid
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == main:
                kids.append(int(stat.parent.name))
    return [main, *kids]


async def test_a_hung_postgres_answers_503_not_silence(
    own_pg: EmbeddedPostgres, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Found by an operator's pass: PostgreSQL frozen (not crashed) left `GET /v1/tasks`, `/readyz`
    and `/metrics` without an answer for as long as it stayed frozen. Every gateway query now gives
    up after ORDO_PG_COMMAND_TIMEOUT_S: 503, and everything answers again once it is back."""
    async with outage_system(own_pg, nats_server, tmp_path, pg_command_timeout_s=1.0) as o:
        http = o.system.http
        viewer = o.auth("viewer")
        assert (await http.get("/v1/tasks", headers=viewer)).status_code == 200
        pids = _postgres_pids(own_pg)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            r = await http.get("/v1/tasks", headers=viewer, timeout=15)
            assert _is_unavailable(r), r.text
            assert (await http.get("/readyz", timeout=15)).status_code == 503
            assert (
                await http.post("/v1/tasks", json={"type": "demo.echo"}, headers=o.auth("seen"))
            ).status_code == 202
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        async def back() -> bool:
            return (await http.get("/v1/tasks", headers=viewer)).status_code == 200

        await eventually(back, timeout=30, what="reads back after PostgreSQL resumed")
