"""Submit over HTTP -> event log -> worker -> projection -> HTTP read, in one event loop."""

from __future__ import annotations

from typing import Any

from tests.conftest import System
from tests.helpers import eventually


async def _task(system: System, task_id: str) -> dict[str, Any]:
    r = await system.http.get(f"/v1/tasks/{task_id}")
    return r.json() if r.status_code == 200 else {}


async def test_echo_task_succeeds_with_its_timeline(system: System) -> None:
    r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "payload": {"x": 1}})
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]

    async def succeeded() -> dict[str, Any] | None:
        task = await _task(system, task_id)
        return task if task.get("status") == "succeeded" else None

    task = await eventually(succeeded, what="task succeeded")
    assert task["result"] == {"x": 1}
    assert task["attempts"] == 1 and task["type"] == "demo.echo" and task["priority"] == 5
    assert task["created_at"] <= task["started_at"] <= task["finished_at"]
    events = (await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"]
    assert [e["type"] for e in events] == ["submitted", "attempt_started", "succeeded"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    listed = (await system.http.get("/v1/tasks", params={"limit": 10})).json()
    assert listed["items"][0]["id"] == task_id and listed["next_cursor"] is None


async def test_list_is_newest_first_with_a_cursor(system: System) -> None:
    ids = []
    for i in range(5):
        r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "payload": i})
        ids.append(r.json()["id"])

    async def all_listed() -> bool:
        body = (await system.http.get("/v1/tasks", params={"limit": 50})).json()
        return len(body["items"]) == 5

    await eventually(all_listed, what="5 tasks listed")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await system.http.get("/v1/tasks", params=params)).json()
        seen += [t["id"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    bad = await system.http.get("/v1/tasks", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400


async def test_failing_task_is_retried_then_failed_and_dead_lettered(system: System) -> None:
    r = await system.http.post("/v1/tasks", json={"type": "demo.fail", "max_attempts": 2})
    task_id = r.json()["id"]

    async def failed() -> dict[str, Any] | None:
        task = await _task(system, task_id)
        return task if task.get("status") == "failed" else None

    task = await eventually(failed, what="task failed")
    assert task["attempts"] == 2
    events = (await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"]
    assert [e["type"] for e in events] == [
        "submitted", "attempt_started", "attempt_failed", "retry_scheduled", "queued",
        "attempt_started", "attempt_failed", "failed", "dead_lettered",
    ]  # fmt: skip


async def test_delayed_task_waits_until_due(system: System) -> None:
    r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "delay": 1.5})
    assert r.status_code == 202 and r.json()["status"] == "scheduled"
    task_id = r.json()["id"]

    async def succeeded() -> dict[str, Any] | None:
        task = await _task(system, task_id)
        return task if task.get("status") == "succeeded" else None

    task = await eventually(succeeded, what="delayed task succeeded")
    events = (await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"]
    assert [e["type"] for e in events] == [
        "submitted", "scheduled", "queued", "attempt_started", "succeeded",
    ]  # fmt: skip
    from datetime import datetime

    run_at = datetime.fromisoformat(events[1]["data"]["run_at"])
    started = datetime.fromisoformat(events[3]["at"])
    assert started >= run_at, "a delayed task never starts early"
    assert task["run_at"] is not None
