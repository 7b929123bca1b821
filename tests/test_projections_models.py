"""The attempts, dead-letter, queue and per-minute stats read models, through their HTTP routes."""

from __future__ import annotations

from typing import Any

import msgspec

from ordo.infra import subjects as sj
from ordo.infra.pg import connect as pg_connect
from ordo.projections import attempts
from ordo.projections.rebuild import Rebuilder
from tests.conftest import System
from tests.helpers import eventually
from tests.test_rebuild import table_hashes


async def _dead(system: System, **params: Any) -> dict[str, Any]:
    r = await system.http.get("/v1/dead-letters", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _stats(system: System, **params: Any) -> dict[str, Any]:
    r = await system.http.get("/v1/stats", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_attempts_dead_letters_stats_and_replay(system: System) -> None:
    http = system.http
    ok = [
        (await http.post("/v1/tasks", json={"type": "demo.echo", "payload": i})).json()["id"]
        for i in range(3)
    ]
    bad = [
        (await http.post("/v1/tasks", json={"type": "demo.fail", "max_attempts": 2})).json()["id"]
        for _ in range(2)
    ]
    later = (await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600, "queue": "q2"})).json()[
        "id"
    ]
    assert (await http.post(f"/v1/tasks/{later}:cancel")).status_code == 202

    async def settled() -> dict[str, Any] | None:
        s = await _stats(system)
        by = s["by_status"]
        return s if (by["succeeded"], by["failed"], by["cancelled"]) == (3, 2, 1) else None

    stats = await eventually(settled, timeout=60, what="3 succeeded, 2 failed, 1 cancelled")
    assert set(stats["by_status"]) >= {"queued", "running", "retrying", "scheduled", "paused", "cancelling"}
    assert sum(stats["by_status"].values()) == 6
    assert stats["queues"]["q2"]["depth"]["cancelled"] == 1
    assert stats["queues"]["default"]["depth"]["failed"] == 2, stats["queues"]
    t = stats["totals"]
    counts = (t["submitted"], t["started"], t["succeeded"], t["failed"], t["attempts_failed"], t["cancelled"])
    assert counts == (6, 7, 3, 2, 4, 1)
    assert t["p50_ms"] is not None and 0 <= t["p50_ms"] <= t["p95_ms"] <= t["p99_ms"]
    fail_rows = [m for m in stats["series"] if m["type"] == "demo.fail"]
    assert sum(m["attempts_failed"] for m in fail_rows) == 4 and all(
        m["queue"] == "default" for m in fail_rows
    )
    assert set(stats["lag"]) >= {"tasks", "attempts", "rollups"}
    only_q2 = await _stats(system, queue="q2")
    assert only_q2["by_status"]["cancelled"] == 1 and only_q2["by_status"]["succeeded"] == 0
    assert only_q2["totals"]["submitted"] == 1 and list(only_q2["queues"]) == ["q2"]

    # attempts: one row per attempt, closed by its outcome, times from the log
    conn = await pg_connect(system.settings.database_url)
    try:
        rows = await attempts.for_task(conn, system.settings.tenant, bad[0])
        assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "failed"), (2, "failed")]
        assert all(r["worker_id"] and r["duration_ms"] >= 0 and r["error"]["kind"] for r in rows)
        (one,) = await attempts.for_task(conn, system.settings.tenant, ok[0])
        assert one["outcome"] == "succeeded" and one["finished_at"] >= one["started_at"]
        assert await attempts.for_task(conn, system.settings.tenant, later) == []
        assert await attempts.for_task(conn, "another-tenant", bad[0]) == []
    finally:
        await conn.close()

    # dead letters: filters, cursor, replay one, replay by filter
    body = await _dead(system)
    assert sorted(d["task_id"] for d in body["items"]) == sorted(bad) and body["next_cursor"] is None
    first = body["items"][0]
    assert first["type"] == "demo.fail" and first["attempts"] == 2 and first["queue"] == "default"
    assert first["error_kind"] and first["reason"]
    page1 = await _dead(system, limit=1)
    page2 = await _dead(system, limit=1, cursor=page1["next_cursor"])
    assert [page1["items"][0]["task_id"], page2["items"][0]["task_id"]] == [
        d["task_id"] for d in body["items"]
    ]
    assert page2["next_cursor"] is None
    assert (await _dead(system, type="demo.echo"))["items"] == []
    assert len((await _dead(system, queue="default", error_kind=first["error_kind"]))["items"]) == 2
    assert (await http.get("/v1/dead-letters", params={"cursor": "nope"})).status_code == 400
    assert (await http.get("/v1/dead-letters", params={"queue": "Bad Queue"})).status_code == 422

    assert (await http.post(f"/v1/dead-letters/{ok[0]}:replay")).status_code == 409
    assert (await http.post("/v1/dead-letters/nosuchtask:replay")).status_code == 404
    r = await http.post(f"/v1/dead-letters/{bad[0]}:replay")
    assert r.status_code == 202 and r.json()["status"] == "queued", r.text

    async def refailed() -> bool:
        items = (await _dead(system))["items"]
        again = [d for d in items if d["task_id"] == bad[0]]
        return len(items) == 2 and bool(again) and again[0]["attempts"] == 4

    await eventually(refailed, timeout=60, what="the replayed task failed again and is back")

    for invalid in ({"limit": 0}, {"queue": "Bad Queue"}, {"nope": 1}, [1]):
        r = await http.post("/v1/dead-letters:replay", json=invalid)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), (
            r.text
        )
    r = await http.post("/v1/dead-letters:replay", json={"type": "demo.fail", "limit": 10})
    assert r.status_code == 202, r.text
    assert sorted(x["id"] for x in r.json()["replayed"]) == sorted(bad) and r.json()["skipped"] == []


async def test_stats_window_is_validated(gateway_only: System) -> None:
    http = gateway_only.http
    assert (await http.get("/v1/stats", params={"since": "2026-01-01T00:00:00"})).status_code == 422
    r = await http.get("/v1/stats", params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"})
    assert r.status_code == 422
    assert (await http.get("/v1/stats", params={"minutes": 0})).status_code == 422
    body = (await http.get("/v1/stats")).json()
    assert body["by_status"]["queued"] == 0 and body["series"] == [] and body["totals"]["p50_ms"] is None


async def test_a_task_event_is_shown_as_the_log_holds_it(system: System) -> None:
    """The timeline stores each event's JSON as it came (issue 14), not a re-encoding of what the
    projector decoded: a field this version does not know and the writer's spacing are kept."""
    http = system.http
    task_id = (await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})).json()["id"]
    assert (await http.post(f"/v1/tasks/{task_id}:cancel")).status_code == 202
    raw = b'{ "event" : "archived",  "note": "from a newer writer" }'
    subject = sj.event_subject(system.settings.tenant, "default", task_id, "archived")
    seq = (await system.nc.jetstream().publish(subject, raw, stream=sj.EVENTS_STREAM)).seq

    async def shown() -> dict[str, Any] | None:
        r = await http.get(f"/v1/tasks/{task_id}/events")
        events = r.json()["events"] if r.status_code == 200 else []  # 404 until the task is projected
        return next((e for e in events if e["seq"] == seq), None)

    entry = await eventually(shown, timeout=30, what="the forged event in the timeline")
    assert entry["type"] == "archived" and entry["data"] == {"note": "from a newer writer"}
    conn = await pg_connect(system.settings.database_url)
    try:
        stored = await conn.fetchval("SELECT data::text FROM task_events WHERE seq = $1", seq)
    finally:
        await conn.close()
    assert stored == raw.decode()


class _Result(msgspec.Struct):
    result: msgspec.Raw = msgspec.Raw(b"")


def _long_json(tag: str, size: int = 3000) -> str:
    """A JSON object of about `size` characters as a client might send it: spacing, key order, an
    escape and text beyond ASCII, none of which a re-encoding would keep."""
    items = ", ".join(f'"k{i:04d}" : {{"n": {i}, "s": "{tag}-é-\\u00e9-{i}"}}' for i in range(size // 40))
    return "{ " + items + ' , "nul": "a\\u0000b" }'


async def test_a_long_payload_and_result_are_stored_as_given_in_every_row_version(system: System) -> None:
    """Long payloads and results travel to PostgreSQL apart from their rows (projections/json_text.py
    `taken_apart`) and a row version that does not change the payload does not send it: the
    tables hold each text exactly as the log does, through every version, and a rebuild gives the
    same tables."""
    http = system.http
    payload = _long_json("p")
    body = '{"type": "demo.echo", "payload": ' + payload + "}"
    r = await http.post("/v1/tasks", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text
    echoed = r.json()["id"]
    # A task updated before it runs: its payload replaced by another long one, then cancelled.
    r = await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600, "payload": {"first": 1}})
    updated = r.json()["id"]
    second = _long_json("u")
    r = await http.patch(
        f"/v1/tasks/{updated}",
        content=('{"payload": ' + second + "}").encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 202, r.text
    assert (await http.post(f"/v1/tasks/{updated}:cancel")).status_code == 202

    async def status(task_id: str, wanted: str) -> bool:
        r = await http.get(f"/v1/tasks/{task_id}")
        return r.status_code == 200 and r.json()["status"] == wanted

    await eventually(lambda: status(echoed, "succeeded"), timeout=60, what="the echo task succeeded")
    await eventually(lambda: status(updated, "cancelled"), timeout=60, what="the updated task cancelled")
    conn = await pg_connect(system.settings.database_url)
    try:
        rows = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, payload::text AS payload, result::text AS result, last_seq FROM tasks"
                " WHERE id = ANY($1::text[])",
                [echoed, updated],
            )
        }
        logged = {
            r["seq"]: r["data"]
            for r in await conn.fetch(
                "SELECT seq, data::text AS data FROM task_events WHERE task_id = ANY($1::text[])",
                [echoed, updated],
            )
        }
    finally:
        await conn.close()
    assert rows[echoed]["payload"] == payload
    assert rows[updated]["payload"] == second and rows[updated]["result"] is None
    # Every event as the log holds it; the result as the handler's `succeeded` holds it.
    js = system.nc.jetstream()
    results = []
    for seq, data in logged.items():
        msg = await js.get_msg(sj.EVENTS_STREAM, seq)
        assert data == (msg.data or b"").decode(), seq
        if result := bytes(msgspec.json.decode(data, type=_Result).result):
            results.append(result.decode())
    assert any(payload in data for data in logged.values())
    assert results == [rows[echoed]["result"]] and len(results[0]) > 2000
    # The API reads them back as the JSON they are.
    shown = (await http.get(f"/v1/tasks/{echoed}")).json()
    assert shown["payload"]["nul"] == "a\x00b" and shown["result"]["k0001"]["s"] == "p-é-é-1"

    tables = ("tasks", "task_events")
    live = await table_hashes(system.settings.database_url, tables)
    await system.projector.shutdown()
    await Rebuilder(system.nc, system.settings.database_url, batch_size=2).run()
    assert await table_hashes(system.settings.database_url, tables) == live
