"""SSE: disconnect, reconnect with Last-Event-ID, and every later event arrives exactly once."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import System
from tests.sse import SseEvent, read_events


async def _collect(
    http: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str], count: int
) -> list[SseEvent]:
    got: list[SseEvent] = []
    async with http.stream("GET", "/v1/events/stream", headers=headers, params=params) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for event in read_events(r):
            if event.event == "task_event":
                got.append(event)
                if len(got) >= count:
                    break
    return got


async def _submit(system: System, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "payload": {"i": i}})
        assert r.status_code == 202
        ids.append(r.json()["id"])
    return ids


async def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(gateway_only: System) -> None:
    system = gateway_only
    await _submit(system, 5)
    # From the beginning of the log: this tenant's 5 submitted events.
    first = await asyncio.wait_for(_collect(system.http, {}, {"after": "0"}, 5), 30)
    seqs = [int(e.id or 0) for e in first]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert all(e.data["type"] == "submitted" and e.data["seq"] == int(e.id or 0) for e in first)
    # Disconnected; more events happen meanwhile.
    later_ids = await _submit(system, 7)
    resumed = await asyncio.wait_for(_collect(system.http, {"Last-Event-ID": first[-1].id or ""}, {}, 7), 30)
    resumed_seqs = [int(e.id or 0) for e in resumed]
    assert [e.data["task_id"] for e in resumed] == later_ids
    assert resumed_seqs == sorted(resumed_seqs)
    assert min(resumed_seqs) > max(seqs)
    # Exactly the filtered log between the two points: compare with the timeline of each task.
    timeline_seqs = []
    for task_id in later_ids:
        body = (await system.http.get(f"/v1/tasks/{task_id}/events")).json()
        timeline_seqs += [e["seq"] for e in body["events"]]
    assert resumed_seqs == sorted(timeline_seqs)


async def test_a_task_stream_replays_history_then_follows_live(gateway_only: System) -> None:
    system = gateway_only
    (task_id,) = await _submit(system, 1)
    got: list[SseEvent] = []
    async with system.http.stream("GET", f"/v1/tasks/{task_id}/stream") as r:
        assert r.status_code == 200
        async for event in read_events(r):
            if event.event != "task_event":
                continue
            got.append(event)
            if len(got) == 1:
                # History first; then a change made while connected arrives live.
                assert event.data["type"] == "submitted"
                paused = await system.http.post(f"/v1/tasks/{task_id}:pause")
                assert paused.status_code == 202, paused.text
            else:
                break
    assert [e.data["type"] for e in got] == ["submitted", "paused"]
    assert int(got[0].id or 0) < int(got[1].id or 0)
