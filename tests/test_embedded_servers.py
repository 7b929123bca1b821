"""Tests for the embedded NATS / PostgreSQL launchers and the process supervisor."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import nats
import pytest

from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.embedded.postgres import EmbeddedPostgres, PostgresConfig
from ordo.embedded.processes import process_alive, wait_pid_gone, write_pidfile
from ordo.infra.settings import Settings
from ordo.pool import WorkerPool
from ordo.supervisor import ChildSpec, Supervisor
from ordo.up import worker_stop_s

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a private loop without touching the thread's current loop

    (unlike ``asyncio.run``, which would reset pytest-asyncio's session loop).
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def kill_quietly(pid: int | None) -> None:
    if pid is not None and process_alive(pid):
        os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------- NATS


def test_nats_start_publish_stop(tmp_path: Path) -> None:
    server = EmbeddedNats(NatsServerConfig(data_dir=tmp_path / "nats", sync_always=True))
    server.start()
    pid = server.pid
    assert pid is not None and server.url.startswith("nats://127.0.0.1:")
    try:

        async def publish() -> int:
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                await js.add_stream(name="TEST", subjects=["test.>"])
                ack = await js.publish("test.one", b"hello")
                return ack.seq
            finally:
                await nc.close()

        assert run_async(publish()) == 1
        assert (tmp_path / "nats" / "jetstream").is_dir()
        assert (tmp_path / "nats" / "nats-server.pid").exists()
    finally:
        server.stop()
    assert wait_pid_gone(pid, 5)
    assert not (tmp_path / "nats" / "nats-server.pid").exists()
    server.stop()  # idempotent


def test_nats_cluster_config_renders(tmp_path: Path) -> None:
    cfg = NatsServerConfig(
        data_dir=tmp_path,
        cluster_name="ordo",
        cluster_port=6222,
        routes=("nats://127.0.0.1:6223",),
        server_name="n1",
    )
    text = EmbeddedNats(cfg).render_config()
    assert 'name: "ordo"' in text and '"127.0.0.1:6222"' in text
    assert 'routes: ["nats://127.0.0.1:6223"]' in text and 'server_name: "n1"' in text


# ------------------------------------------------------------------- PostgreSQL


def _pg_exec(url: str, *sql: str) -> list[object]:
    async def run() -> list[object]:
        conn = await asyncpg.connect(url)
        try:
            return [await conn.fetchval(q) for q in sql]
        finally:
            await conn.close()

    return run_async(run())


def test_postgres_start_query_stop_restart(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    pg = EmbeddedPostgres(PostgresConfig(data_dir=data, fsync=False))
    pg.start()
    pid = pg.pid
    assert pid is not None
    try:
        assert _pg_exec(pg.url, "SELECT 1") == [1]
        _pg_exec(pg.url, "CREATE TABLE kept (v int)", "INSERT INTO kept VALUES (42)")
    finally:
        pg.stop()
    assert wait_pid_gone(pid, 5)
    pg.stop()  # idempotent

    # Restarted with a setting of its own (how a benchmark loads pg_stat_statements).
    pg2 = EmbeddedPostgres(PostgresConfig(data_dir=data, fsync=False, settings=(("work_mem", "7MB"),)))
    pg2.start()
    try:
        assert _pg_exec(pg2.url, "SELECT v FROM kept", "SHOW work_mem") == [42, "7MB"]
    finally:
        pg2.stop()


def test_postgres_restarts_after_postmaster_sigkill(tmp_path: Path) -> None:
    """A SIGKILLed postmaster leaves postmaster.pid behind (and, unreaped, a zombie)."""
    data = tmp_path / "pg"
    crashed = EmbeddedPostgres(PostgresConfig(data_dir=data, fsync=False))
    crashed.start()
    assert crashed.pid is not None
    os.kill(crashed.pid, signal.SIGKILL)
    assert wait_pid_gone(crashed.pid, 5)  # now a zombie: we do not reap it yet
    fresh = EmbeddedPostgres(PostgresConfig(data_dir=data, fsync=False))
    try:
        fresh.start()
        assert _pg_exec(fresh.url, "SELECT 1") == [1]
    finally:
        fresh.stop()
        crashed.stop()


def _refused(**connect: Any) -> bool:
    """True when PostgreSQL refuses the connection for want of the right password."""

    async def attempt() -> bool:
        try:
            conn = await asyncpg.connect(user="postgres", database="postgres", timeout=10, **connect)
        except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
            return True
        await conn.close()
        return False

    return run_async(attempt())


def test_postgres_refuses_every_connection_without_its_password(tmp_path: Path) -> None:
    """F10: no local account gets in as the superuser without the password (TCP or unix socket)."""
    with EmbeddedPostgres(PostgresConfig(data_dir=tmp_path / "pg", fsync=False)) as pg:
        assert _pg_exec(pg.url, "SELECT 1") == [1]
        assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
        assert _refused(host="127.0.0.1", port=pg.port)
        assert _refused(host="127.0.0.1", port=pg.port, password="wrong")
        assert _refused(host=str(pg.data_dir), port=pg.port)  # the unix socket
        assert "trust" not in (pg.data_dir / "pg_hba.conf").read_text().split("scram-sha-256")[-1]


def test_postgres_made_with_trust_requires_a_password_from_its_next_start(tmp_path: Path) -> None:
    """A data folder from before F10 (trust, no password file) is secured on start, data kept."""
    data = tmp_path / "pg"
    with EmbeddedPostgres(PostgresConfig(data_dir=data, fsync=False)) as pg:
        _pg_exec(pg.url, "CREATE TABLE kept (v int)", "INSERT INTO kept VALUES (7)")
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    (tmp_path / "pg.password").unlink()
    with EmbeddedPostgres(PostgresConfig(data_dir=data, fsync=False)) as pg:
        assert _refused(host="127.0.0.1", port=pg.port)
        assert _refused(host=str(pg.data_dir), port=pg.port)
        assert _pg_exec(pg.url, "SELECT v FROM kept") == [7]


def test_postgres_long_path_uses_temp_socket_dir(tmp_path: Path) -> None:
    data = tmp_path / ("d" * 100) / "pg"  # too long for a unix socket path
    with EmbeddedPostgres(PostgresConfig(data_dir=data, fsync=False)) as pg:
        assert _pg_exec(pg.url, "SELECT 1") == [1]


# ---------------------------------------------------------------------- orphans

_ORPHAN_SCRIPT = """
import json, sys, time
from pathlib import Path
import ordo.embedded.nats as en, ordo.embedded.postgres as ep
kind, data, pdeathsig = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
if not pdeathsig:  # simulate a server that survives its parent
    en.child_preexec = ep.child_preexec = lambda sig: (lambda: None)
if kind == "nats":
    server = en.EmbeddedNats(en.NatsServerConfig(data_dir=data))
else:
    server = ep.EmbeddedPostgres(ep.PostgresConfig(data_dir=data, fsync=False))
server.start()
print(json.dumps({"pid": server.pid, "url": server.url}), flush=True)
time.sleep(600)
"""


def _make(kind: str, data: Path) -> EmbeddedNats | EmbeddedPostgres:
    if kind == "nats":
        return EmbeddedNats(NatsServerConfig(data_dir=data))
    return EmbeddedPostgres(PostgresConfig(data_dir=data, fsync=False))


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["pdeathsig", "stale"])
@pytest.mark.parametrize("kind", ["nats", "postgres"])
def test_orphaned_server_dies_or_is_cleaned_up(tmp_path: Path, kind: str, pdeathsig: bool) -> None:
    data = tmp_path / kind
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, kind, str(data), "1" if pdeathsig else "0"],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    orphan: int | None = None
    server = _make(kind, data)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, "child failed to start the server"
        orphan = int(json.loads(line)["pid"])
        parent.kill()
        parent.wait(10)
        if pdeathsig:
            assert wait_pid_gone(orphan, 20), "server survived its SIGKILLed parent"
        else:
            assert process_alive(orphan)
        server.start()  # must clean up a survivor and start fine
        assert not process_alive(orphan)
        if kind == "postgres":
            assert isinstance(server, EmbeddedPostgres)
            assert _pg_exec(server.url, "SELECT 1") == [1]
    finally:
        server.stop()
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        kill_quietly(orphan)


# ------------------------------------------------------------------- supervisor

_FLAKY = """
import os, sys, time
path = sys.argv[1]
with open(path, "a") as f:
    f.write(f"{os.getpid()}\\n")
if len(open(path).read().split()) < 3:
    sys.exit(3)
time.sleep(600)
"""

_STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write("ready")
time.sleep(600)
"""


async def _async_wait(pred: Callable[[], bool], within: float, what: str | Callable[[], str]) -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            desc = what if isinstance(what, str) else what()
            pytest.fail(f"timed out after {within}s waiting for {desc}")
        await asyncio.sleep(0.05)


def _proc_info(pid: int) -> str:
    """Diagnostics for a failed wait: /proc state and cmdline of ``pid``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError as exc:
        return f"pid {pid}: {exc}"
    return f"pid {pid}: stat={stat!r} cmdline={cmdline!r}"


def _task_state(task: asyncio.Task[None]) -> str:
    if not task.done():
        return "running"
    return "cancelled" if task.cancelled() else f"ended: {task.exception()!r}"


def test_supervisor_restarts_and_shuts_down(tmp_path: Path) -> None:
    starts = tmp_path / "starts.txt"
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    stale = subprocess.Popen(["sleep", "600"])  # recorded as a leftover "steady" child
    write_pidfile(pid_dir / "steady.pid", stale.pid, "sleep")
    specs = [
        ChildSpec("flaky", [sys.executable, "-c", _FLAKY, str(starts)], {}),
        ChildSpec("steady", ["sleep", "600"], {"ORDO_TEST": "1"}),
    ]
    sup = Supervisor(specs, logging.getLogger("test.sup"), 0.05, 0.2, pid_dir=pid_dir)

    async def scenario() -> list[int]:
        runner = asyncio.create_task(sup.run())
        await _async_wait(
            lambda: stale.poll() is not None,
            15,
            lambda: f"stale child killed ({_proc_info(stale.pid)}; supervisor {_task_state(runner)})",
        )

        def flaky_settled() -> bool:
            lines = starts.read_text().split() if starts.exists() else []
            return len(lines) >= 3 and sup.pids.get("flaky") == int(lines[-1])

        await _async_wait(flaky_settled, 20, "flaky child restarted twice")
        await _async_wait(lambda: "steady" in sup.pids, 10, "steady child running")
        assert sup.restart_count("flaky") == 2
        assert (pid_dir / "flaky.pid").exists()
        pids = list(sup.pids.values())
        await asyncio.gather(sup.shutdown(), sup.shutdown())  # idempotent, concurrent
        await asyncio.wait_for(runner, 5)
        return pids

    pids = run_async(scenario())
    for pid in pids:
        assert wait_pid_gone(pid, 5)
    assert list(pid_dir.iterdir()) == []


def test_supervisor_kills_child_ignoring_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ready = tmp_path / "ready"
    spec = ChildSpec("stubborn", [sys.executable, "-c", _STUBBORN, str(ready)], {})
    sup = Supervisor([spec], logging.getLogger("test.sup"), pid_dir=tmp_path / "pids", shutdown_grace_s=0.5)

    async def scenario() -> int:
        runner = asyncio.create_task(sup.run())
        await _async_wait(ready.exists, 15, "stubborn child ready")
        pid = sup.pids["stubborn"]
        await sup.shutdown()
        await asyncio.wait_for(runner, 5)
        return pid

    pid = run_async(scenario())
    assert wait_pid_gone(pid, 5)
    assert sup.restart_count("stubborn") == 0


def test_ordo_up_gives_a_stopping_worker_time_to_hand_back_its_tasks() -> None:
    """The supervisor's SIGKILL came at the worker's own shutdown grace (both 10 s): it raced the
    hand-back of the tasks still running, which then waited out their lease and lost an attempt."""
    settings = Settings(shutdown_grace_s=7.0, cancel_grace_s=3.0)
    assert worker_stop_s(settings) >= settings.shutdown_grace_s + settings.cancel_grace_s + 5.0


def test_the_worker_pool_stops_its_workers_with_the_grace_it_was_given(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    spec = ChildSpec("worker-1", [sys.executable, "-c", _STUBBORN, str(ready)], {})
    pool = WorkerPool(lambda n: spec, logging.getLogger("test.pool"), pid_dir=tmp_path / "pids",
                      shutdown_grace_s=0.5)  # fmt: skip

    async def scenario() -> tuple[int, float]:
        await pool.scale(1)
        await _async_wait(ready.exists, 15, "stubborn worker ready")
        (pid,) = pool.pids
        started = time.monotonic()
        await pool.shutdown()  # SIGTERM is ignored: SIGKILL after the pool's grace, not 10 s
        return pid, time.monotonic() - started

    pid, took = run_async(scenario())
    assert wait_pid_gone(pid, 5)
    assert took < 5.0, took
