"""`ordo up`: the whole system on one machine, no Docker.

Embedded nats-server and PostgreSQL (unless ORDO_NATS_URL / ORDO_DATABASE_URL point elsewhere), then
the gateway, projector, scheduler and N workers as supervised child processes. Ctrl-C or SIGTERM
stops every child and both servers; a restart on the same data folder finds every task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from infra.cluster import EmbeddedCluster
from infra.embedded_nats import EmbeddedNats, NatsServerConfig
from infra.embedded_postgres import EmbeddedPostgres, PostgresConfig
from infra.processes import kill_stale, remove_pidfile, write_pidfile
from infra.settings import Settings
from infra.supervisor import ChildSpec, Supervisor

log = logging.getLogger("ordo.up")


def _child(name: str, *args: str, env: dict[str, str]) -> ChildSpec:
    return ChildSpec(name=name, argv=[sys.executable, "-m", "infra.cli", *args], env=env)


async def run_local(settings: Settings, data_dir: Path, port: int, workers: int, cluster: int = 1) -> int:
    """Run until SIGINT/SIGTERM. `data_dir` must exist (the caller creates it)."""
    own_pid = data_dir / "ordo-up.pid"
    kill_stale(own_pid)
    write_pidfile(own_pid, os.getpid(), sys.argv[0])
    nats_server: EmbeddedNats | EmbeddedCluster | None = None
    postgres: EmbeddedPostgres | None = None
    try:
        nats_url = settings.nats_url
        if not nats_url and cluster > 1:
            # N nats-servers forming one JetStream cluster on loopback; streams at R3 (or R5).
            nats_server = EmbeddedCluster(data_dir / "nats-cluster", cluster, settings.sync_always)
            settings = settings.with_(replicas=3 if cluster < 5 else 5)
        elif not nats_url:
            nats_server = EmbeddedNats(
                NatsServerConfig(data_dir=data_dir / "nats", sync_always=settings.sync_always)
            )
        if nats_server is not None:
            nats_server.start()  # on this thread: pdeathsig follows the thread that forked
            nats_url = nats_server.url
            log.info("embedded nats-server at %s (data in %s)", nats_url, data_dir / "nats")
        database_url = settings.database_url
        if not database_url:
            postgres = EmbeddedPostgres(PostgresConfig(data_dir=data_dir / "postgres"))
            postgres.start()
            database_url = postgres.url
            log.info("embedded PostgreSQL at %s", database_url)
        env = settings.with_(nats_url=nats_url, database_url=database_url, http_port=port).to_env()
        specs = [
            _child("projector", "projector", env=env),
            _child("scheduler", "scheduler", env=env),
            _child("gateway", "gateway", "--port", str(port), env=env),
            *(_child(f"worker-{i + 1}", "worker", env=env) for i in range(workers)),
        ]
        supervisor = Supervisor(specs, log, pid_dir=data_dir / "pids")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: loop.create_task(supervisor.shutdown()))
        print(f"UI: http://{settings.http_host}:{port}/", flush=True)
        await supervisor.run()
        return 0
    finally:
        if postgres is not None:
            await asyncio.to_thread(postgres.stop)
        if nats_server is not None:
            await asyncio.to_thread(nats_server.stop)
        remove_pidfile(own_pid)
