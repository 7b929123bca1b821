"""`ordo up`: the whole system on one machine, no Docker.

Embedded nats-server and PostgreSQL (unless ORDO_NATS_URL / ORDO_DATABASE_URL point elsewhere), then
the gateway, projector, scheduler and N workers as supervised child processes. Everything is
supervised: a server that dies is started again on its data folder and port (the processes reconnect
by themselves), a child that exits is started again. Ctrl-C or SIGTERM stops every child and both
servers; a restart on the same data folder finds every task.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path
from typing import BinaryIO

from ordo.embedded.cluster import EmbeddedCluster
from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.embedded.nats_auth import app_user_name, load_or_create_passwords, render_authorization, users_for
from ordo.embedded.postgres import EmbeddedPostgres, PostgresConfig
from ordo.embedded.processes import kill_stale, read_pidfile, remove_pidfile, write_pidfile
from ordo.embedded.watch import Server, ServerWatch
from ordo.infra.nats_conn import connect
from ordo.infra.settings import Settings
from ordo.pool import WorkerPool
from ordo.supervisor import ChildSpec, Supervisor

log = logging.getLogger("ordo.up")


def _child(name: str, *args: str, env: dict[str, str]) -> ChildSpec:
    return ChildSpec(name=name, argv=[sys.executable, "-m", "ordo.cli", *args], env=env)


async def _local_admin(settings: Settings, database_url: str, data_dir: Path) -> tuple[str, str]:
    """The local admin key (ORDO_ADMIN_KEY, or one generated once and kept in the data folder, 0600)
    and a fresh one-time sign-in link for the UI."""
    from ordo.gateway import keys
    from ordo.infra.pg import connect

    key_file = data_dir / "admin.key"
    secret = settings.admin_key or (key_file.read_text().strip() if key_file.exists() else "")
    conn = await connect(database_url)
    try:
        await keys.migrate(conn)
        # A revoked key stays revoked (it may have leaked): a new one is minted and printed instead.
        key, secret, minted = await keys.bootstrap_admin(conn, settings.tenant, "ordo up", secret or None)
        token = await keys.create_login_token(conn, key.id, 600)
    finally:
        await conn.close()
    if minted:
        print(
            f"The stored admin key was revoked, or is not an admin key of tenant {settings.tenant!r};"
            " a new admin key was minted (below).",
            flush=True,
        )
    if not settings.admin_key:
        key_file.touch(mode=0o600)
        key_file.write_text(secret + "\n")
    return secret, f"/auth/token?t={token}"


def _claim(data_dir: Path) -> BinaryIO | None:
    """An exclusive lock on the data folder for as long as this process lives (the kernel drops it
    when the process ends, however it ends; children do not inherit it); None when another
    `ordo up` holds it."""
    handle = open(data_dir / "ordo-up.lock", "ab")  # noqa: SIM115 - held open for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def worker_stop_s(settings: Settings) -> float:
    """How long a stopping worker gets before SIGKILL: its handlers' grace, then the cancel grace of
    those it hands back, then storing their release (workers/runtime.py `_drain`), with room to spare.
    A SIGKILL at the worker's own grace (both were 10 s) raced the hand-back: the task then waited
    out its lease and lost an attempt."""
    return settings.shutdown_grace_s + settings.cancel_grace_s + 10.0


async def run_local(settings: Settings, data_dir: Path, port: int, workers: int, cluster: int = 1) -> int:
    """Run until SIGINT/SIGTERM. `data_dir` must exist (the caller creates it). A second `ordo up` on
    the same data folder is refused (exit 1); what a killed one left behind is cleaned up."""
    own_pid = data_dir / "ordo-up.pid"
    lock = _claim(data_dir)
    if lock is None:
        holder = read_pidfile(own_pid)
        log.error(
            "another `ordo up` (pid %s) is running on %s: stop it first, or use another --data-dir",
            holder.pid if holder is not None else "unknown",
            data_dir,
        )
        return 1
    kill_stale(own_pid)  # an `ordo up` that was killed: its lock is gone, its servers may not be
    write_pidfile(own_pid, os.getpid(), sys.argv[0])
    nats_server: EmbeddedNats | EmbeddedCluster | None = None
    postgres: EmbeddedPostgres | None = None
    servers: dict[str, Server] = {}
    watch: ServerWatch | None = None
    try:
        nats_url = settings.nats_url
        # With auth on, the embedded servers get one NATS user per service (infra.nats_auth), with
        # passwords generated once and kept in the data folder (0600).
        passwords: dict[str, str] = {}
        authorization = ""
        if not nats_url and settings.auth:
            passwords = load_or_create_passwords(data_dir / "nats-users.json", settings.tenant)
            authorization = render_authorization(users_for(passwords, settings.tenant))
        if not nats_url and cluster > 1:
            # N nats-servers forming one JetStream cluster on loopback; streams at R3 (or R5).
            nats_server = EmbeddedCluster(
                data_dir / "nats-cluster", cluster, settings.sync_always, authorization=authorization
            )
            settings = settings.with_(replicas=3 if cluster < 5 else 5)
        elif not nats_url:
            nats_server = EmbeddedNats(
                NatsServerConfig(
                    data_dir=data_dir / "nats", sync_always=settings.sync_always, authorization=authorization
                )
            )
        if isinstance(nats_server, EmbeddedCluster):
            servers.update({f"nats-server {n.config.server_name}": n for n in nats_server.nodes})
        elif nats_server is not None:
            servers["nats-server"] = nats_server
        database_url = settings.database_url
        if not database_url:
            postgres = EmbeddedPostgres(PostgresConfig(data_dir=data_dir / "postgres"))
            servers["PostgreSQL"] = postgres
        # Started, and restarted when one dies, on a thread of the watch's own: the servers'
        # parent-death signal follows the thread that forked them.
        watch = ServerWatch(servers, log)
        await watch.start()
        if nats_server is not None:
            nats_url = nats_server.url
            where = data_dir / ("nats-cluster" if isinstance(nats_server, EmbeddedCluster) else "nats")
            log.info("embedded nats-server at %s (data in %s)", nats_url, where)
        if postgres is not None:
            database_url = postgres.url
            log.info("embedded PostgreSQL at %s (password in %s)", postgres.address, postgres.password_file)
        if settings.auth:
            admin_key, link = await _local_admin(settings, database_url, data_dir)
        base = settings.with_(nats_url=nats_url, database_url=database_url, http_port=port, admin_key="")

        def env(service: str) -> dict[str, str]:
            if not passwords:
                return base.to_env()
            return base.with_(nats_user=service, nats_password=passwords[service]).to_env()

        specs = [
            _child("projector", "projector", env=env("projector")),
            _child("scheduler", "scheduler", env=env("scheduler")),
            _child("gateway", "gateway", "--port", str(port), env=env("gateway")),
        ]
        supervisor = Supervisor(specs, log, pid_dir=data_dir / "pids")
        # Workers run in a pool that the gateway can scale and kill from (POST /v1/workers:scale).
        worker_env = env("worker")
        pool = WorkerPool(
            lambda n: _child(f"worker-{n}", "worker", env=worker_env),
            log,
            pid_dir=data_dir / "pids",
            shutdown_grace_s=worker_stop_s(settings),
        )
        admin = {"nats_user": "admin", "nats_password": passwords["admin"]} if passwords else {}
        nc = await connect(settings.with_(nats_url=nats_url, **admin), name="ordo-up")

        async def stop() -> None:
            await pool.shutdown()
            await supervisor.shutdown()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: loop.create_task(stop()))
        print(f"UI: http://{settings.http_host}:{port}/", flush=True)
        print(f"NATS: {nats_url} (for workers of your own: ORDO_NATS_URL)", flush=True)
        if postgres is not None:
            print(
                f"PostgreSQL: postgresql://postgres:<password>@{postgres.address}/postgres"
                f" (ORDO_DATABASE_URL, e.g. for `ordo rebuild`; the password is in {postgres.password_file})",
                flush=True,
            )
        if settings.auth:
            print(f"Admin API key (tenant {settings.tenant}): {admin_key}", flush=True)
            print(f"One-time UI sign-in link (10 min): http://{settings.http_host}:{port}{link}", flush=True)
            if passwords:
                print(
                    f"NATS users (one per service; {app_user_name(settings.tenant)} for your services): "
                    f"passwords in {data_dir / 'nats-users.json'}",
                    flush=True,
                )
        else:
            print("Auth is OFF (--no-auth): anyone who can reach this port is admin.", flush=True)
        watching = asyncio.create_task(watch.run(), name="watch-servers")
        try:
            await pool.serve(nc)
            await pool.scale(workers)
            await supervisor.run()
        finally:
            await pool.shutdown()
            await nc.close()
            await watch.shutdown()
            await watching
        return 0
    finally:
        if watch is not None:
            await watch.shutdown()  # idempotent: stops whichever servers were started
        remove_pidfile(own_pid)
        lock.close()
