"""No request, event or handler output can stop the read side (issue 12 part A, audit F1).

The acceptance test goes through the HTTP API with a real worker and projector: a payload holding a
`\\u0000` escape round-trips (payload, echoed result, timeline), a NUL error message is stored, the
inputs PostgreSQL could not store are refused with 422, readiness stays 200 and the next task runs.
The others check DESIGN Revision 2 (a projection is total): an event a projection cannot apply is
recorded in `projection_errors`, skipped by that projection alone, shown on the task, counted in
/readyz and /metrics, and a rebuild skips the same events; an outage is never recorded as poison.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from ordo.domain import events as ev
from ordo.domain.commands import SubmitTask
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.pg import connect
from ordo.infra.settings import Settings
from ordo.projections.reader import LogReader
from ordo.projections.rebuild import Rebuilder
from ordo.projections.registry import FAMILIES, PROJECTIONS, Projection
from ordo.projections.runner import ProjectionRunner, RunnerConfig, apply_batch, checkpoint
from ordo.projections.schema import migrate
from tests.conftest import System, run_system
from tests.helpers import eventually
from tests.test_projections_failover import submissions
from tests.test_rebuild import table_hashes
from tests.test_ui import (
    UI_TIMEOUT_MS,
    browser,  # noqa: F401 - the session's Chromium fixture
)
from tests.test_ui import Page as UiPage

JSON = {"content-type": "application/json"}


async def _task(system: System, task_id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        r = await system.http.get(f"/v1/tasks/{task_id}")
        return r.json() if r.status_code == 200 and r.json()["status"] == status else None

    return await eventually(reached, timeout=60, what=f"task {task_id} {status}")


async def _log_seq(system: System) -> int:
    return int((await system.nc.jetstream().stream_info(sj.EVENTS_STREAM)).state.last_seq)


async def test_nul_and_bad_bytes_never_stop_the_read_side(system: System) -> None:
    http = system.http
    # A payload with a \u0000 escape is valid JSON: stored, run, echoed, read back as given.
    r = await http.post(
        "/v1/tasks", content=b'{"type":"demo.echo","payload":{"note":"a\\u0000b"}}', headers=JSON
    )
    assert r.status_code == 202, r.text
    echoed = await _task(system, r.json()["id"], "succeeded")
    assert echoed["payload"] == {"note": "a\x00b"} and echoed["result"] == {"note": "a\x00b"}
    assert echoed["projection_errors"] == []
    timeline = (await http.get(f"/v1/tasks/{echoed['id']}/events")).json()["events"]
    assert timeline[0]["data"]["payload"] == {"note": "a\x00b"}
    assert timeline[-1]["data"]["result"] == {"note": "a\x00b"}
    # A handler's error message with NUL is stored too.
    r = await http.post(
        "/v1/tasks",
        content=b'{"type":"demo.fail","max_attempts":1,"payload":{"message":"boom\\u0000!"}}',
        headers=JSON,
    )
    assert r.status_code == 202, r.text
    failed = await _task(system, r.json()["id"], "failed")
    assert failed["error"]["message"] == "boom\x00!"
    dead = (await http.get("/v1/dead-letters")).json()["items"]
    assert any(d["task_id"] == failed["id"] for d in dead)

    # What PostgreSQL cannot store is refused at the door, and nothing is appended.
    before = await _log_seq(system)
    deep = b"[" * 2000 + b"]" * 2000
    refused = [
        ("/v1/tasks", b'{"type":"demo.echo","payload":"\xff\xfe"}'),
        ("/v1/tasks", b'{"type":"demo.echo","payload":{"k":"\xc3("}}'),
        ("/v1/tasks", b'{"type":"demo.echo","payload":"\\ud800"}'),
        ("/v1/tasks", b'{"type":"demo.echo","tags":["a\\u0000"]}'),
        ("/v1/tasks", b'{"type":"demo.echo","idempotency_key":"k\\u0000"}'),
        ("/v1/tasks", b'{"type":"demo.echo","payload":' + deep + b"}"),
        ("/v1/tasks:batch", b'{"tasks":[{"type":"demo.echo","payload":' + deep + b"}]}"),
        ("/v1/tasks:batch", b'{"tasks":[{"type":"demo.echo","payload":"\xff"}]}'),
    ]
    for path, body in refused:
        r = await http.post(path, content=body, headers=JSON)
        assert r.status_code == 422, (body[:80], r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert await _log_seq(system) == before

    # The read side is whole: ready, nothing skipped, and the next task runs and is read back.
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["degraded"] is False, ready.text
    r = await http.post("/v1/tasks", json={"type": "demo.echo", "payload": {"after": "poison"}})
    assert (await _task(system, r.json()["id"], "succeeded"))["result"] == {"after": "poison"}


async def _forge(nc: NATS, tenant: str, task_id: str, event: ev.Event) -> int:
    """Append an event raw, as a stale release or a forging credential could (no decider involved)."""
    subject = sj.event_subject(tenant, "default", task_id, ev.event_name(event))
    ack = await nc.jetstream().publish(subject, ev.encode_event(event), stream=sj.EVENTS_STREAM)
    return int(ack.seq)


async def _skipped(dsn: str) -> list[tuple[str, int, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        recs = await conn.fetch(
            "SELECT projection, seq, aggregate_id, event FROM projection_errors ORDER BY seq, projection"
        )
        return [(r["projection"], r["seq"], r["aggregate_id"], r["event"]) for r in recs]
    finally:
        await conn.close()


async def test_an_event_a_projection_cannot_apply_is_recorded_skipped_and_shown(
    settings: Settings, nc: NATS, handler: CommandHandler, caplog: pytest.LogCaptureFixture
) -> None:
    async with run_system(settings, nc, handler, worker=False) as system:
        http = system.http
        r = await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})
        victim = r.json()["id"]
        await _task(system, victim, "scheduled")
        # Out of the int column's range: the tasks projection cannot store it; others can.
        bad_seq = await _forge(nc, settings.tenant, victim, ev.Updated(priority=2**40))
        undecodable = (
            await nc.jetstream().publish(
                sj.event_subject(settings.tenant, "default", victim, "updated"), b"\x00 not JSON"
            )
        ).seq
        # A first event the tasks projection cannot store: no row, yet the task is shown (from the log).
        forged = await _forge(
            nc,
            settings.tenant,
            "forged1",
            ev.Submitted("demo.echo", "default", settings.tenant, priority=2**40),
        )
        r = await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})
        after = r.json()
        await _task(system, after["id"], "scheduled")  # the projector carried on past both

        task = (await http.get(f"/v1/tasks/{victim}")).json()
        assert task["status"] == "scheduled" and task["priority"] == 5
        marks = {(e["projection"], e["seq"], e["event"]) for e in task["projection_errors"]}
        assert ("tasks", bad_seq, "updated") in marks
        assert {p.name for p in PROJECTIONS if p.family == "task"} <= {
            p for p, seq, _ in marks if seq == undecodable
        }
        listed = (await http.get("/v1/tasks", params={"status": "scheduled"})).json()["items"]
        assert [bool(t["projection_errors"]) for t in listed if t["id"] in (victim, after["id"])] == [
            t["id"] == victim for t in listed if t["id"] in (victim, after["id"])
        ]
        shown = (await http.get("/v1/tasks/forged1")).json()
        assert shown["priority"] == 2**40 and shown["status"] == "queued"
        assert [(e["projection"], e["seq"]) for e in shown["projection_errors"]] == [("tasks", forged)]
        # The timeline (another projection) did apply the event the tasks projection skipped.
        timeline = (await http.get(f"/v1/tasks/{victim}/events")).json()["events"]
        assert bad_seq in [e["seq"] for e in timeline]

        ready = await http.get("/readyz")
        body = ready.json()
        assert ready.status_code == 200 and body["ready"] and body["degraded"], body
        assert body["projection_errors"] >= 1 + len([p for p in PROJECTIONS if p.family == "task"])
        metrics = (await http.get("/metrics")).text
        assert 'ordo_projection_errors{projection="tasks"} 3' in metrics, metrics[-2000:]

        # A rebuild runs the same code over the same events: same tables, same skipped events.
        skipped = await _skipped(settings.database_url)
        tables = ("tasks", "task_events", "attempts", "dead_letters", "schedules")
        live = await table_hashes(settings.database_url, tables)
        await system.projector.shutdown()
        await Rebuilder(nc, settings.database_url).run()
        assert await table_hashes(settings.database_url, tables) == live
        assert await _skipped(settings.database_url) == skipped
        # Replayed pipelined (batches of 2 leave the swap only the last ones): an event that cannot
        # be applied fails the pipeline, which goes back to its last commit and applies batch by batch.
        caplog.set_level(logging.INFO, logger="ordo.rebuild")
        await Rebuilder(nc, settings.database_url, batch_size=2).run()
        assert any("one by one" in r.getMessage() for r in caplog.records), "the pipeline never fell back"
        assert await table_hashes(settings.database_url, tables) == live
        assert await _skipped(settings.database_url) == skipped


_PROBE_DDL = "CREATE TABLE IF NOT EXISTS probe_seen (seq bigint PRIMARY KEY)"


def _failing_at(seq: int, sql: str, met: list[int] | None = None) -> Projection:
    """A projection noting each sequence it applies, that runs `sql` (a real PostgreSQL failure)
    when it meets `seq` (noted in `met` each time)."""

    async def apply(conn: asyncpg.Connection, records: list[Any]) -> None:
        for rec in records:
            if rec.seq == seq:
                if met is not None:
                    met.append(seq)
                await conn.execute(sql)
            await conn.execute("INSERT INTO probe_seen VALUES ($1)", rec.seq)

    return Projection("probe", _PROBE_DDL, apply)


async def _seen(conn: asyncpg.Connection) -> list[int]:
    return [r["seq"] for r in await conn.fetch("SELECT seq FROM probe_seen ORDER BY seq")]


async def _task_seqs(handler: CommandHandler, tenant: str, n: int) -> list[int]:
    """Submit n tasks; the log sequence of each one's last event (tickets are not task events)."""
    commands: list[SubmitTask] = submissions(tenant, n)
    return [o.last_seq for o in await handler.submit_many(tenant, commands)]


async def test_a_data_error_is_recorded_but_an_outage_is_not(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    seqs = await _task_seqs(handler, settings.tenant, 6)
    last, victim = max(seqs), seqs[3]

    # A data error (class 22, division by zero) at one event: recorded; the rest applied.
    runner = ProjectionRunner(nc, settings.database_url, RunnerConfig(batch_size=100),
                              projections=(_failing_at(victim, "SELECT 1/0"),))  # fmt: skip
    conn = await connect(settings.database_url)
    await migrate(conn)
    await conn.execute(_PROBE_DDL)
    running = asyncio.create_task(runner.run())
    try:
        await eventually(lambda: _at(conn, last), timeout=30, what="probe checkpoint at the end")
        await runner.shutdown()
        await running
        seen = await _seen(conn)
        assert victim not in seen and max(seen) == last
        rec = await conn.fetchrow("SELECT * FROM projection_errors WHERE projection='probe'")
        assert rec["seq"] == victim and "DivisionByZero" in rec["error"]

        # An outage at one event (the server ends the projector's session): nothing is recorded,
        # the event and those after it are not applied, and the runner tries again once PostgreSQL
        # answers (it meets the event again). Events before it may have been committed in an
        # earlier batch (a batch is what had arrived).
        await conn.execute("DELETE FROM projection_errors; DELETE FROM probe_seen")
        await conn.execute("UPDATE projection_checkpoints SET last_seq=0")
        met: list[int] = []
        outage = _failing_at(victim, "SELECT pg_terminate_backend(pg_backend_pid())", met)
        runner = ProjectionRunner(
            nc, settings.database_url, RunnerConfig(batch_size=100), projections=(outage,)
        )
        running = asyncio.create_task(runner.run())

        async def met_twice() -> bool:
            return len(met) >= 2

        await eventually(met_twice, timeout=30, what="the runner meeting the outage again")
        await runner.shutdown()
        await asyncio.wait_for(running, 30)
        assert await conn.fetchval("SELECT count(*) FROM projection_errors") == 0
        assert await checkpoint(conn, "probe") < victim
        assert all(seq < victim for seq in await _seen(conn))
    finally:
        await conn.close()


async def _at(conn: asyncpg.Connection, seq: int) -> bool:
    return await checkpoint(conn, "probe") >= seq


async def test_apply_batch_in_a_rebuild_transaction_skips_the_same_event(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """apply_batch isolates the failing event inside the caller's transaction (a rebuild's)."""
    seqs = await _task_seqs(handler, settings.tenant, 4)
    last, victim = max(seqs), seqs[1]
    probe = _failing_at(victim, "SELECT 'x'::int")
    conn = await connect(settings.database_url)
    reader = LogReader(nc, FAMILIES, 1)
    await reader.start()
    try:
        await migrate(conn)
        await conn.execute(_PROBE_DDL)
        await conn.execute("INSERT INTO projection_checkpoints (name) VALUES ('probe')")
        batch = await reader.batch(100, upto=last, linger_s=0.5)
        while batch[-1][1].seq < last:
            batch += await reader.batch(100, upto=last, linger_s=0.5)
        async with conn.transaction():
            await apply_batch(conn, (probe,), batch)
        assert await _seen(conn) == [r.seq for f, r in batch if f == "task" and r.seq != victim]
        assert await conn.fetchval("SELECT seq FROM projection_errors WHERE projection='probe'") == victim
        assert await checkpoint(conn, "probe") == last
    finally:
        await reader.close()
        await conn.close()


async def test_the_task_page_says_which_events_the_read_model_skipped(
    browser: Any,  # noqa: F811 - the fixture imported above
    settings: Settings,
    nc: NATS,
    handler: CommandHandler,
) -> None:
    async with run_system(settings, nc, handler, worker=False) as system:
        r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})
        victim = r.json()["id"]
        bad_seq = await _forge(nc, settings.tenant, victim, ev.Updated(priority=2**40))

        async def marked() -> bool:
            return bool((await system.http.get(f"/v1/tasks/{victim}")).json().get("projection_errors"))

        await eventually(marked, timeout=30, what="the skipped event on the task")
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = UiPage(await context.new_page(), system.base_url)
        try:
            await page.open(f"/tasks/{victim}")
            notice = page.page.locator("#task-skipped .notice")
            await notice.wait_for()
            text = await notice.inner_text()
            assert f"seq {bad_seq} updated in tasks" in text and "skipped 1 event" in text
            assert page.unexpected_errors() == []
        finally:
            await context.close()


async def test_a_projector_behind_catches_up_pipelined_and_still_skips_a_bad_event(
    settings: Settings, nc: NATS, handler: CommandHandler, caplog: pytest.LogCaptureFixture
) -> None:
    """A backlog is applied in pipelined catch-up transactions (projections/runner.py `_catch_up`);
    an event the tasks projection cannot store in it makes the runner apply those batches again one
    by one, which records and skips just that event. The tables equal a rebuild's."""
    for i in range(0, 300, 50):
        await handler.submit_many(settings.tenant, submissions(settings.tenant, 50))
        if i == 150:
            victim = submissions(settings.tenant, 1)[0]
            await handler.submit_many(settings.tenant, [victim])
            bad_seq = await _forge(nc, settings.tenant, victim.task_id, ev.Updated(priority=2**40))
    caplog.set_level(logging.INFO, logger="ordo.projector")
    runner = ProjectionRunner(nc, settings.database_url, RunnerConfig(batch_size=20))
    running = asyncio.create_task(runner.run())
    last = int((await nc.jetstream().stream_info(sj.EVENTS_STREAM)).state.last_seq)
    try:
        await eventually(lambda: _true(runner.last_seq >= last), timeout=120, what="caught up")
    finally:
        await runner.shutdown()
        await asyncio.wait_for(running, 30)
    messages = [r.getMessage() for r in caplog.records if r.name == "ordo.projector"]
    assert any(m.startswith("catch-up applies") for m in messages), messages
    skipped = await _skipped(settings.database_url)
    assert [(p, s) for p, s, _, _ in skipped] == [("tasks", bad_seq)], skipped
    tables = ("tasks", "task_events", "attempts", "dead_letters", "queue_depth", "stats_minutely")
    live = await table_hashes(settings.database_url, tables)
    assert live["tasks"][0] == 301 and live["task_events"][0] == 302
    await Rebuilder(nc, settings.database_url).run()
    assert await table_hashes(settings.database_url, tables) == live
    assert await _skipped(settings.database_url) == skipped


async def _true(value: bool) -> bool:
    return value
