"""Tasks API: batch submit, as_of_seq, list filters and cursors, update, archive, read-your-writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import System
from tests.helpers import eventually


async def _last_seq(system: System) -> int:
    info = await system.nc.jetstream().stream_info("ORDO_EVENTS")
    return int(info.state.last_seq)


async def _fresh(http: httpx.AsyncClient, path: str, params: dict[str, Any]) -> httpx.Response:
    """A read-your-writes GET; a 503 (the projection lags past the wait bound on a loaded machine)
    is retried, as a client honouring Retry-After would."""

    async def probe() -> httpx.Response | None:
        r = await http.get(path, params=params)
        return None if r.status_code == 503 else r

    return await eventually(probe, timeout=120, what=f"read model caught up for {path}")


async def test_batch_of_2500_lands_in_chunks_and_every_task_is_readable(gateway_only: System) -> None:
    http = gateway_only.http
    tasks = [{"type": "demo.echo", "payload": {"i": i}, "queue": f"q{i % 3}"} for i in range(2500)]
    before = await _last_seq(gateway_only)
    r = await http.post("/v1/tasks:batch", json={"tasks": tasks})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["count"] == 2500 and len({i["id"] for i in body["items"]}) == 2500
    assert all(i["status"] == "queued" and i["created"] for i in body["items"])
    # One submitted event per task (it is the task's dispatch too), nothing else.
    assert await _last_seq(gateway_only) == before + 2500
    # Read-your-writes: wait for the batch's sequence, then every task is in the list.
    listed = await _fresh(http, "/v1/tasks", {"min_seq": body["seq"], "limit": 1, "queue": "q1"})
    assert listed.status_code == 200
    seen: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, "queue": "q1"}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get("/v1/tasks", params=params)).json()
        seen |= {t["id"] for t in page["items"]}
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == {i["id"] for n, i in enumerate(body["items"]) if n % 3 == 1}


async def test_an_atomic_batch_is_all_or_nothing_within_one_atomic_batch(gateway_only: System) -> None:
    http = gateway_only.http
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    before = await _last_seq(gateway_only)
    delayed = [{"type": "demo.echo", "run_at": later, "payload": i} for i in range(500)]  # two events each
    r = await http.post("/v1/tasks:batch", json={"tasks": [*delayed, {"type": "demo.echo"}], "atomic": True})
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("atomic-batch-too-large") and "1001" in r.json()["detail"]
    assert (await http.post("/v1/tasks:batch", json={"tasks": delayed, "atomic": "yes"})).status_code == 422
    assert await _last_seq(gateway_only) == before, "nothing appended"
    r = await http.post("/v1/tasks:batch", json={"tasks": delayed, "atomic": True})
    assert r.status_code == 202, r.text
    assert all(i["created"] and i["status"] == "scheduled" for i in r.json()["items"])
    assert await _last_seq(gateway_only) == before + 1000 == r.json()["seq"]


async def test_an_invalid_item_rejects_the_whole_batch_listing_each_bad_index(gateway_only: System) -> None:
    before = await _last_seq(gateway_only)
    tasks: list[Any] = [{"type": "demo.echo"} for _ in range(10)]
    tasks[3] = {"type": "demo.echo", "priority": 42}
    tasks[7] = {"payload": 1}
    tasks[8] = "not an object"
    tasks[9] = {"type": "demo.echo", "payload": "x" * (gateway_only.settings.max_payload_bytes + 1)}
    r = await gateway_only.http.post("/v1/tasks:batch", json={"tasks": tasks})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["index"] for e in r.json()["errors"]] == [3, 7, 8, 9]
    too_many = await gateway_only.http.post(
        "/v1/tasks:batch", json={"tasks": [{"type": "x"}] * (gateway_only.settings.max_batch + 1)}
    )
    assert too_many.status_code == 422
    assert (await gateway_only.http.post("/v1/tasks:batch", json={"tasks": []})).status_code == 422
    assert (await gateway_only.http.post("/v1/tasks:batch", json={"items": []})).status_code == 422
    assert await _last_seq(gateway_only) == before


async def test_batch_idempotency_keys_are_one_task_and_repeat_safely(gateway_only: System) -> None:
    http = gateway_only.http
    tasks = [
        {"type": "demo.echo", "idempotency_key": "k1", "payload": 1},
        {"type": "demo.echo", "idempotency_key": "k1", "payload": 1},
        {"type": "demo.echo", "idempotency_key": "k2"},
    ]
    first = (await http.post("/v1/tasks:batch", json={"tasks": tasks})).json()
    assert first["items"][0]["id"] == first["items"][1]["id"] != first["items"][2]["id"]
    # one task created per key: the item repeating the first one's key is not counted as created
    assert [i["created"] for i in first["items"]] == [True, False, True]
    # The same batch again: the chunk conflicts, is replayed task by task, nothing new is stored.
    before = await _last_seq(gateway_only)
    again = await http.post("/v1/tasks:batch", json={"tasks": tasks})
    assert again.status_code == 202, again.text
    assert [i["id"] for i in again.json()["items"]] == [i["id"] for i in first["items"]]
    assert not any(i["created"] for i in again.json()["items"])
    assert await _last_seq(gateway_only) == before
    clash = [{"type": "demo.echo", "idempotency_key": "k3", "payload": 1}] + [
        {"type": "demo.echo", "idempotency_key": "k3", "payload": 2}
    ]
    r = await http.post("/v1/tasks:batch", json={"tasks": clash})
    assert r.status_code == 422 and r.json()["errors"][0]["index"] == 1


async def test_as_of_seq_folds_the_log_up_to_that_sequence(gateway_only: System) -> None:
    http = gateway_only.http
    sub = (await http.post("/v1/tasks", json={"type": "demo.echo", "priority": 3})).json()
    paused = (await http.post(f"/v1/tasks/{sub['id']}:pause")).json()
    updated = await http.patch(f"/v1/tasks/{sub['id']}", json={"priority": 1, "payload": {"v": 2}})
    assert updated.status_code == 202, updated.text
    at_submit = (await http.get(f"/v1/tasks/{sub['id']}", params={"as_of_seq": sub["seq"]})).json()
    assert at_submit["status"] == "queued" and at_submit["priority"] == 3 and at_submit["payload"] is None
    assert at_submit["last_seq"] == sub["seq"]
    at_pause = (await http.get(f"/v1/tasks/{sub['id']}", params={"as_of_seq": paused["seq"]})).json()
    assert at_pause["status"] == "paused" and at_pause["priority"] == 3
    now = (await http.get(f"/v1/tasks/{sub['id']}", params={"as_of_seq": 2**40})).json()
    assert now["priority"] == 1 and now["payload"] == {"v": 2}
    # The live read model (after waiting for the write) agrees with the fold.
    live = await http.get(f"/v1/tasks/{sub['id']}", params={"consistency": "wait"})
    assert live.status_code == 200
    assert {k: live.json()[k] for k in ("status", "priority", "payload", "last_seq")} == {
        k: now[k] for k in ("status", "priority", "payload", "last_seq")
    }
    before = await http.get(f"/v1/tasks/{sub['id']}", params={"as_of_seq": sub["seq"] - 1})
    assert before.status_code == 404


async def test_a_timeline_reads_a_page_at_a_time_to_its_end(gateway_only: System) -> None:
    """A task that heartbeats for days has more events than one page holds: `next_after` leads on."""
    http = gateway_only.http
    sub = (await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})).json()
    await http.post(f"/v1/tasks/{sub['id']}:pause")
    await http.post(f"/v1/tasks/{sub['id']}:resume")
    last = (await http.post(f"/v1/tasks/{sub['id']}:cancel")).json()["seq"]
    path = f"/v1/tasks/{sub['id']}/events"
    whole = (await http.get(path, params={"min_seq": last})).json()
    kinds = [e["type"] for e in whole["events"]]
    assert kinds == ["submitted", "scheduled", "paused", "resumed", "cancelled"]
    assert whole["next_after"] is None
    pages, after = [], 0
    while after is not None:
        page = (await http.get(path, params={"after": after, "limit": 2})).json()
        pages.append([e["seq"] for e in page["events"]])
        after = page["next_after"]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [seq for p in pages for seq in p] == [e["seq"] for e in whole["events"]]
    end = await http.get(path, params={"after": last})
    assert end.status_code == 200 and end.json() == {"events": [], "next_after": None}
    assert (await http.get("/v1/tasks/nope/events", params={"after": 5})).status_code == 404
    for bad in ({"limit": 0}, {"limit": 10_001}, {"after": -1}):
        assert (await http.get(path, params=bad)).status_code == 422, bad


async def test_update_before_start_then_409_once_running(system: System) -> None:
    http = system.http
    run_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    sub = (await http.post("/v1/tasks", json={"type": "demo.echo", "run_at": run_at})).json()
    assert sub["status"] == "scheduled"
    r = await http.patch(f"/v1/tasks/{sub['id']}", json={"run_at": datetime.now(UTC).isoformat()})
    assert r.status_code == 202 and r.json()["status"] == "queued", r.text

    async def finished() -> bool:
        got = await http.get(f"/v1/tasks/{sub['id']}")
        return got.status_code == 200 and got.json()["status"] == "succeeded"

    await eventually(finished, timeout=60, what="task ran")
    late = await http.patch(f"/v1/tasks/{sub['id']}", json={"priority": 0})
    assert late.status_code == 409 and late.headers["content-type"].startswith("application/problem+json")
    bad = await http.patch(f"/v1/tasks/{sub['id']}", json={})
    assert bad.status_code == 422
    # Archive: hidden from lists, still readable by id and in the log.
    arch = await http.post(f"/v1/tasks/{sub['id']}:archive")
    assert arch.status_code == 202, arch.text
    listed = (await _fresh(http, "/v1/tasks", {"min_seq": arch.json()["seq"]})).json()
    assert sub["id"] not in {t["id"] for t in listed["items"]}
    archived = (await http.get("/v1/tasks", params={"archived": "true"})).json()
    assert sub["id"] in {t["id"] for t in archived["items"]}
    assert (await http.get(f"/v1/tasks/{sub['id']}")).json()["archived"] is True
    queued = (await http.post("/v1/tasks", json={"type": "demo.slow", "delay": 3600})).json()
    assert (await http.post(f"/v1/tasks/{queued['id']}:archive")).status_code == 409
    # Unarchive: listed again; a second one appends nothing.
    back = await http.post(f"/v1/tasks/{sub['id']}:unarchive")
    assert back.status_code == 202, back.text
    listed = (await _fresh(http, "/v1/tasks", {"min_seq": back.json()["seq"]})).json()
    assert sub["id"] in {t["id"] for t in listed["items"]}
    assert (await http.get(f"/v1/tasks/{sub['id']}")).json()["archived"] is False
    timeline = (await _fresh(http, f"/v1/tasks/{sub['id']}/events", {"min_seq": back.json()["seq"]})).json()[
        "events"
    ]
    assert [e["type"] for e in timeline][-2:] == ["archived", "unarchived"]
    again = await http.post(f"/v1/tasks/{sub['id']}:unarchive")
    assert again.status_code == 202 and again.json()["seq"] == back.json()["seq"], again.text
    assert (
        await http.post(f"/v1/tasks/{queued['id']}:unarchive")
    ).status_code == 202  # not archived: as it is


async def test_list_filters_compose(gateway_only: System) -> None:
    http = gateway_only.http
    items = [
        {"type": "mail.send", "queue": "mail", "tags": ["red", "x"]},
        {"type": "mail.send", "queue": "mail", "tags": ["blue"]},
        {"type": "pdf.render", "queue": "docs", "tags": ["red"]},
        {"type": "pdf.render", "queue": "docs", "delay": 3600},
    ]
    body = (await http.post("/v1/tasks:batch", json={"tasks": items})).json()
    ids = [i["id"] for i in body["items"]]
    seq = body["seq"]

    async def ids_for(**params: Any) -> list[str]:
        r = await _fresh(http, "/v1/tasks", {"min_seq": seq, **params})
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["items"]]

    assert set(await ids_for(queue="mail")) == {ids[0], ids[1]}
    assert set(await ids_for(type="pdf.render")) == {ids[2], ids[3]}
    assert set(await ids_for(tag="red")) == {ids[0], ids[2]}
    assert set(await ids_for(status="scheduled")) == {ids[3]}
    assert set(await ids_for(status="scheduled,queued")) == set(ids)
    assert set(await ids_for(q="MAIL")) == {ids[0], ids[1]}
    assert set(await ids_for(q=ids[2][-8:])) == {ids[2]}
    assert await ids_for(q="%") == []
    assert set(await ids_for(tag="red", queue="docs")) == {ids[2]}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await ids_for(created_after=future) == []
    assert set(await ids_for(created_before=future, updated_before=future)) == set(ids)
    oldest_first = await ids_for(sort="created_at", limit=2)
    newest_first = await ids_for(sort="-created_at", limit=2)
    assert oldest_first != newest_first
    # A cursor is bound to its sort.
    page = (await http.get("/v1/tasks", params={"limit": 1, "sort": "updated_at"})).json()
    wrong = await http.get("/v1/tasks", params={"cursor": page["next_cursor"], "sort": "created_at"})
    assert wrong.status_code == 400
    assert (await http.get("/v1/tasks", params={"sort": "id; DROP TABLE tasks"})).status_code == 422
    assert (await http.get("/v1/tasks", params={"limit": 100_000})).status_code == 422


async def test_consistency_wait_is_bounded_and_answers_503_when_behind(gateway_only: System) -> None:
    http = gateway_only.http
    sub = (await http.post("/v1/tasks", json={"type": "demo.echo"})).json()
    # Immediately after the write, a waiting read sees it (no polling by the client).
    r = await http.get(f"/v1/tasks/{sub['id']}", headers={"Ordo-Min-Seq": str(sub["seq"])})
    assert r.status_code == 200 and r.json()["last_seq"] == sub["seq"]
    # A sequence no write answered (beyond the log) is the client's error.
    beyond = await http.get(f"/v1/tasks/{sub['id']}", params={"min_seq": sub["seq"] + 10_000})
    assert beyond.status_code == 422 and beyond.json()["type"].endswith("/invalid-min-seq")
    # The projection stops: a waiting read answers 503 + Retry-After after the bound, not stale data.
    await gateway_only.projector.shutdown()
    late = (await http.post("/v1/tasks", json={"type": "demo.echo"})).json()
    far = await http.get(f"/v1/tasks/{late['id']}", params={"min_seq": late["seq"]}, timeout=60)
    assert far.status_code == 503 and far.headers["retry-after"] == "1"
    assert far.json()["type"].endswith("/read-model-behind")
    eventual = await http.get(f"/v1/tasks/{sub['id']}")
    assert eventual.status_code == 200  # without asking to wait, the read answers at once
    assert (await http.get("/v1/tasks", headers={"Ordo-Consistency": "eventual"})).status_code == 200
    assert (await http.get("/v1/tasks", headers={"Ordo-Min-Seq": "abc"})).status_code == 400


async def test_a_batch_reusing_a_key_with_another_body_is_409_and_appends_nothing(
    gateway_only: System,
) -> None:
    http = gateway_only.http
    first = await http.post("/v1/tasks", json={"type": "demo.echo", "idempotency_key": "same", "payload": 1})
    assert first.status_code == 202
    before = await _last_seq(gateway_only)
    tasks = [{"type": "demo.echo"}] * 1500 + [{"type": "demo.echo", "idempotency_key": "same", "payload": 2}]
    r = await http.post("/v1/tasks:batch", json={"tasks": tasks})
    assert r.status_code == 409 and [e["index"] for e in r.json()["errors"]] == [1500]
    assert await _last_seq(gateway_only) == before
