"""`ordo rebuild`: replaying the log into shadow tables gives the live tables row for row.

The rebuild runs as `python -m ordo.cli rebuild` in a child process whose wall clock reads a day
ahead (libfaketime, LD_PRELOAD, `FAKETIME=+1d`), while the gateway keeps answering and, in the
second half, while tasks keep changing. A grep also proves the projection code never reads the clock
(PostgreSQL's own now() is not shifted by faking the child's clock).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import libfaketime
import pytest

from ordo.projections.rebuild import REBUILD_LOCK, Rebuilder, RebuildError, select
from ordo.projections.registry import PROJECTIONS
from ordo.projections.runner import lag
from tests.conftest import System
from tests.helpers import eventually
from tests.rebuild_workload import drive

ROOT = Path(__file__).resolve().parent.parent


async def table_hashes(dsn: str, tables: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    """(row count, md5 of every row's text in order) per table: equal hashes = equal rows."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        out = {}
        for table in tables:
            rec = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) AS h"
                f" FROM (SELECT t::text AS x FROM {table} t) rows"
            )
            out[table] = (rec["n"], rec["h"])
        return out
    finally:
        await conn.close()


async def index_definitions(dsn: str) -> set[tuple[str, str]]:
    """(index name, definition) of every index in the live schema: the swapped tables keep them all."""
    conn = await asyncpg.connect(dsn)
    try:
        recs = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        )
        return {(r["indexname"], r["indexdef"]) for r in recs}
    finally:
        await conn.close()


async def table_oids(dsn: str, tables: tuple[str, ...]) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: await conn.fetchval("SELECT $1::regclass::oid", t) for t in tables}
    finally:
        await conn.close()


async def caught_up(system: System) -> None:
    pool = await asyncpg.create_pool(system.settings.database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        seen: dict[str, int] = {}

        async def zero() -> bool:
            seen.update(await lag(pool, system.nc))
            return not any(seen.values())

        try:
            await eventually(zero, timeout=300, what="projections caught up")
        except AssertionError as exc:
            raise AssertionError(f"lag stayed {seen}") from exc
    finally:
        await pool.close()


async def rebuild_in_child(system: System, tmp_path: Path, *names: str, batch: int = 1000) -> str:
    """Run `ordo rebuild` in a child process whose clock is a day ahead; returns its stdout."""
    _, preload = libfaketime.get_reload_information()  # LD_PRELOAD of the vendored libfaketime
    env = {**os.environ, **system.settings.to_env(), **preload, "FAKETIME": "+1d", "PYTHONPATH": str(ROOT)}
    env["ORDO_PROJECTION_BATCH"] = str(batch)
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import datetime, time; print(datetime.datetime.now(), time.time())",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    shifted, _ = await probe.communicate()
    child_now = float(shifted.split()[-1])
    assert child_now - time.time() > 86_000, "the child's clock is not a day ahead"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ordo.cli", "rebuild", *names,
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


async def keep_reading(http: httpx.AsyncClient, stop: asyncio.Event) -> list[int]:
    """Gateway reads during a rebuild: every status code seen."""
    codes: list[int] = []
    while not stop.is_set():
        for path in ("/v1/tasks?limit=5", "/v1/stats", "/v1/dead-letters?limit=5"):
            codes.append((await http.get(path)).status_code)
        await asyncio.sleep(0.02)
    return codes


def all_tables() -> tuple[str, ...]:
    """Every table the registered projections own, discovered the way a rebuild does."""
    return tuple(sorted(t for p in PROJECTIONS for t in _tables_in(p.ddl)))


def _tables_in(ddl: str) -> list[str]:
    return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl)


@pytest.mark.timeout(600)
async def test_rebuild_is_row_for_row_equal_while_the_gateway_serves(
    gateway_only: System, tmp_path: Path
) -> None:
    system = gateway_only
    tables = all_tables()
    paths = await drive(system.handler, system.settings.tenant, 1000)
    assert {
        "succeeded",
        "retried-succeeded",
        "dead-letter",
        "cancelled-running",
        "replayed-succeeded",
    } <= set(paths)
    await caught_up(system)
    before = await table_hashes(system.settings.database_url, tables)
    oids = await table_oids(system.settings.database_url, tables)
    indexes = await index_definitions(system.settings.database_url)
    assert any(name == "tasks_status_newest" for name, _ in indexes)
    assert before["tasks"][0] == 1000 and before["dead_letters"][0] == 200
    assert before["task_events"][0] > 5_000

    stop = asyncio.Event()
    reads = asyncio.create_task(keep_reading(system.http, stop))
    out = await rebuild_in_child(system, tmp_path)
    stop.set()
    codes = await reads
    assert "events/s" in out, out
    assert codes and set(codes) == {200}, codes

    after = await table_hashes(system.settings.database_url, tables)
    assert after == before
    new_oids = await table_oids(system.settings.database_url, tables)
    assert all(new_oids[t] != oids[t] for t in tables), "the tables were not swapped"
    # The secondary indexes, dropped while the log was replayed, were built again before the swap.
    assert await index_definitions(system.settings.database_url) == indexes

    # While tasks keep changing: the rebuild catches up and swaps under the live projector, and the
    # result equals a quiet rebuild from scratch afterwards.
    writes = asyncio.create_task(drive(system.handler, system.settings.tenant, 1500, concurrency=16))
    await eventually(lambda: _some_events(system), what="writes under way")
    out = await rebuild_in_child(system, tmp_path, "tasks", "rollups")
    assert not writes.done(), "the writes finished before the rebuild: the test proves nothing"
    await writes
    await caught_up(system)
    live = await table_hashes(system.settings.database_url, tables)
    assert live["tasks"][0] == 2500
    # Other batch boundaries than the live projector's: the rows must not depend on them.
    await rebuild_in_child(system, tmp_path, batch=37)
    assert await table_hashes(system.settings.database_url, tables) == live


async def _some_events(system: System) -> bool:
    r = await system.http.get("/v1/stats")
    return r.status_code == 200 and r.json()["by_status"]["queued"] + r.json()["by_status"]["running"] > 0


async def test_a_rebuild_reports_its_progress(gateway_only: System, caplog: pytest.LogCaptureFixture) -> None:
    system = gateway_only
    await drive(system.handler, system.settings.tenant, 40)
    await caught_up(system)
    caplog.set_level(logging.INFO, logger="ordo.rebuild")
    rebuilder = Rebuilder(system.nc, system.settings.database_url, batch_size=10, progress_every_s=0)
    report = await rebuilder.run()
    lines = [r.getMessage() for r in caplog.records if r.name == "ordo.rebuild"]
    progress = re.compile(r"replayed \d+ events, log sequence (\d+) of")
    done = [int(m[1]) for line in lines if (m := progress.match(line))]
    assert len(done) >= 3 and done == sorted(done) and done[-1] >= report.checkpoint - 10, lines
    built = re.compile(r"built \d+ indexes in [\d.]+ s \(\d+ connections\)")
    assert any(built.fullmatch(line) for line in lines), lines


async def test_a_second_rebuild_is_refused_and_unknown_names_are_errors(gateway_only: System) -> None:
    conn = await asyncpg.connect(gateway_only.settings.database_url)
    try:
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK)
        try:
            await Rebuilder(gateway_only.nc, gateway_only.settings.database_url).run()
        except RebuildError as exc:
            assert "another rebuild" in str(exc)
        else:
            raise AssertionError("a concurrent rebuild was not refused")
    finally:
        await conn.close()
    try:
        select(["tasks", "nope"])
    except RebuildError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("an unknown projection was accepted")
    # The read models that became one projection (docs/decisions.md 38) select it by their old names;
    # it brings the projection it reads (`needs`, decision 46), and the order is the registry's.
    assert [p.name for p in select(["dead_letters", "counters", "tasks"])] == [
        "tasks",
        "task_events",
        "rollups",
    ]
    assert [p.name for p in select(["rollups"])] == ["task_events", "rollups"]


_CLOCK_READS = re.compile(
    r"datetime\.now|datetime\.utcnow|date\.today|time\.time\(|\bnow\(\)|current_timestamp|clock_timestamp"
    r"|statement_timestamp|transaction_timestamp|localtimestamp|current_date|current_time\b",
    re.IGNORECASE,
)


def test_no_projection_reads_the_clock() -> None:
    """Every registered projection's module and the machinery that applies them (runner, reader,
    rebuild, schema, registry) is free of wall-clock reads, in Python and in SQL."""
    modules = {sys.modules[p.apply.__module__].__file__ for p in PROJECTIONS}
    modules |= {
        str(ROOT / "projections" / f"{m}.py")
        for m in (
            "runner",
            "reader",
            "rebuild",
            "schema",
            "registry",
            "batch_apply",
            "batch_statement",
            "memory",
        )
    }
    assert len(modules) >= len(PROJECTIONS)
    offenders = [
        f"{Path(str(path)).name}:{n}: {line.strip()}"
        for path in sorted(str(m) for m in modules)
        for n, line in enumerate(Path(path).read_text().splitlines(), 1)
        if _CLOCK_READS.search(line)
    ]
    assert offenders == []
    assert _CLOCK_READS.search("x = datetime.now(UTC)") and _CLOCK_READS.search("DEFAULT now()")
