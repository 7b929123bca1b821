"""`ordo up`'s server watch: a SIGKILLed nats-server or postmaster comes back on its data folder and
port, clients reconnect by themselves, and an outage is one log line down and one back."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import nats.errors
import pytest

from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.embedded.postgres import EmbeddedPostgres, PostgresConfig
from ordo.embedded.processes import wait_pid_gone
from ordo.embedded.watch import ServerWatch, WatchConfig
from ordo.infra.logs import OncePerOutage
from ordo.infra.nats_conn import connect
from ordo.infra.pg import create_pool
from ordo.infra.settings import Settings
from tests.helpers import eventually

FAST = WatchConfig(check_every_s=0.1, backoff_initial_s=0.1, backoff_max_s=1.0)


def _settings(url: str) -> Settings:
    return Settings(nats_url=url, database_url="postgresql://unused/none", tenant="watch")


async def test_a_sigkilled_nats_server_is_back_on_its_port_with_its_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedNats(NatsServerConfig(data_dir=tmp_path / "nats", sync_always=True))
    watch = ServerWatch({"nats-server": server}, logging.getLogger("test.watch"), FAST)
    await watch.start()
    watching = asyncio.create_task(watch.run())
    url, first = server.url, server.pid
    assert first is not None
    caplog.set_level(logging.DEBUG, logger="ordo.nats")
    nc = await connect(_settings(url), name="watched")
    try:
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.one", b"before")

        os.kill(first, signal.SIGKILL)
        await eventually(lambda: _true(watch.restarts["nats-server"] == 1), 30, what="server restarted")
        second = server.pid
        assert server.url == url and second not in (None, first)

        async def published() -> bool:
            try:
                await js.publish("kept.two", b"after", timeout=1)
                return True
            except (nats.errors.Error, TimeoutError):
                return False

        await eventually(published, 30, what="the client reconnected by itself")
        assert (await js.stream_info("KEPT")).state.messages == 2
    finally:
        await nc.close()
        await watch.shutdown()
        await watching
    assert second is not None and wait_pid_gone(second, 5)

    lines = [r for r in caplog.records if r.name == "ordo.nats" and r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0].split(" after")[0] for r in lines] == [
        "watched: NATS connection lost",
        "watched: NATS connection back",
    ], [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records if r.name == "ordo.nats")


async def test_a_sigkilled_postmaster_is_back_and_the_pool_recovers(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(PostgresConfig(data_dir=tmp_path / "pg", fsync=False))
    watch = ServerWatch({"PostgreSQL": pg}, logging.getLogger("test.watch"), FAST)
    await watch.start()
    watching = asyncio.create_task(watch.run())
    url, first = pg.url, pg.pid
    assert first is not None
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        await pool.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (5)")
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: _true(watch.restarts["PostgreSQL"] == 1), 60, what="postmaster restarted")
        assert pg.url == url and pg.pid != first

        async def answers() -> bool:
            try:
                return bool(await pool.fetchval("SELECT v FROM kept") == 5)
            except Exception:  # noqa: BLE001 - asyncpg's or ReadModelUnavailable: not back yet
                return False

        await eventually(answers, 60, what="the pool answers again")
    finally:
        await pool.close()
        await watch.shutdown()
        await watching


async def test_a_server_that_will_not_start_again_is_retried_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken-nats-server"
    broken.write_text("#!/bin/sh\necho 'cannot start'\nexit 1\n")
    broken.chmod(0o755)
    server = EmbeddedNats(NatsServerConfig(data_dir=tmp_path / "nats"))
    logger = logging.getLogger("test.watch.broken")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    watch = ServerWatch({"nats-server": server}, logger, FAST)
    await watch.start()
    watching = asyncio.create_task(watch.run())
    try:
        first = server.pid
        assert first is not None
        monkeypatch.setenv("ORDO_NATS_SERVER", str(broken))  # every restart fails until it is gone
        os.kill(first, signal.SIGKILL)

        def failures() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "did not start" in r.getMessage()]

        await eventually(lambda: _true(len(failures()) >= 4), 30, what="four failed restarts")
        monkeypatch.delenv("ORDO_NATS_SERVER")
        await eventually(lambda: _true(watch.restarts["nats-server"] == 1), 30, what="server restarted")
    finally:
        await watch.shutdown()
        await watching
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3, warnings  # down, the first failed start, back
    assert "exited with code -9" in warnings[0] and "did not start" in warnings[1]
    assert "\n" not in warnings[1] and "back" in warnings[2]
    assert all(r.levelno == logging.DEBUG for r in failures()[1:])


async def test_a_server_that_will_not_start_does_not_hold_back_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken-nats-server"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    nats_server = EmbeddedNats(NatsServerConfig(data_dir=tmp_path / "nats"))
    pg = EmbeddedPostgres(PostgresConfig(data_dir=tmp_path / "pg", fsync=False))
    watch = ServerWatch({"nats-server": nats_server, "PostgreSQL": pg}, logging.getLogger("test.watch"), FAST)
    await watch.start()
    watching = asyncio.create_task(watch.run())
    try:
        nats_pid, pg_pid = nats_server.pid, pg.pid
        assert nats_pid is not None and pg_pid is not None
        monkeypatch.setenv("ORDO_NATS_SERVER", str(broken))
        os.kill(nats_pid, signal.SIGKILL)
        os.kill(pg_pid, signal.SIGKILL)
        await eventually(lambda: _true(watch.restarts["PostgreSQL"] == 1), 60, what="PostgreSQL restarted")
        assert watch.restarts["nats-server"] == 0  # still failing, retried on its own
        monkeypatch.delenv("ORDO_NATS_SERVER")
        await eventually(lambda: _true(watch.restarts["nats-server"] == 1), 30, what="nats-server restarted")
    finally:
        await asyncio.gather(watch.shutdown(), watch.shutdown())  # idempotent, concurrent
        await watching
    assert nats_server.process is None and pg.process is None


def test_once_per_outage_keeps_one_line_without_traceback() -> None:
    now = [0.0]
    keep = OncePerOutage(quiet_s=90.0, clock=lambda: now[0])

    def record(at: float) -> logging.LogRecord:
        now[0] = at
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError:
            info = sys.exc_info()
            return logging.LogRecord("asyncpg.pool", logging.WARNING, "p", 1, "floor; retrying", (), info)

    first = record(0.0)
    assert keep.filter(first) and first.exc_info is None
    assert "ConnectionRefusedError" in first.getMessage()
    assert [keep.filter(record(t)) for t in (1.0, 3.0, 7.0, 67.0)] == [False] * 4  # one outage
    assert keep.filter(record(67.0 + 91.0))  # a later outage gets its own line


async def _true(value: bool) -> bool:
    return value


def test_periodic_ordo_warnings_are_one_line_per_outage_and_other_messages_pass() -> None:
    now = [0.0]
    only = frozenset({"event store unavailable: %s"})
    keep = OncePerOutage(quiet_s=90.0, clock=lambda: now[0], messages=only)

    def record(msg: str, at: float) -> logging.LogRecord:
        now[0] = at
        return logging.LogRecord("ordo.gateway", logging.WARNING, "p", 1, msg, ("x",), None)

    assert keep.filter(record("event store unavailable: %s", 0.0))
    assert not keep.filter(record("event store unavailable: %s", 6.0))  # the same outage
    assert all(keep.filter(record("unexpected error on %s", t)) for t in (7.0, 8.0))  # never deduplicated
    assert keep.filter(record("event store unavailable: %s", 6.0 + 91.0))  # a later outage
