"""Schedules over HTTP with real servers: lifecycle, timeline, bad input, pause/resume, overlap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from ordo.domain.schedule_commands import DeleteSchedule
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.schedule_handler import ScheduleHandler
from ordo.infra.schedule_timers import ScheduleTimers
from ordo.infra.settings import Settings
from tests.conftest import System
from tests.helpers import eventually

# Read-model waits: generous, the session's projector may lag behind a long shared log.
WAIT = 120.0


@pytest.fixture(autouse=True)
async def _delete_schedules_after(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> AsyncIterator[None]:
    """A failed test must not leave a 1-second schedule firing into the session's event log."""
    yield
    store = handler.store
    created, _ = await store.load_raw(f"{sj.SCHED_PREFIX}.{settings.tenant}.*.created")
    schedules = ScheduleHandler(handler, ScheduleTimers(nc, settings.timer_lead_s))
    for raw in created:
        _, sid, _ = sj.parse_schedule_subject(raw.subject)
        await schedules.execute(settings.tenant, DeleteSchedule(schedule_id=sid))


async def _events(system: System, sid: str) -> list[dict[str, Any]]:
    r = await system.http.get(f"/v1/schedules/{sid}/events")
    return r.json()["events"] if r.status_code == 200 else []


async def _types(system: System, sid: str) -> list[str]:
    return [e["type"] for e in await _events(system, sid)]


async def _create(system: System, **body: Any) -> str:
    r = await system.http.post("/v1/schedules", json=body)
    assert r.status_code == 201, r.text
    at = r.json().get("next_fire_at")
    assert at is None or at.endswith("Z"), at  # as every other schedule answer writes times
    return str(r.json()["id"])


async def test_schedule_lifecycle_fires_tasks_with_a_timeline(system: System) -> None:
    sid = await _create(
        system,
        id="every-sec",
        cron="* * * * * *",
        timezone="Europe/Berlin",
        task={"type": "demo.echo", "payload": {"n": 1}},
    )

    async def fired_twice() -> list[dict[str, Any]]:
        evs = [e for e in await _events(system, sid) if e["type"] == "fired"]
        return evs if len(evs) >= 2 else []

    fired = await eventually(fired_twice, timeout=WAIT, what="two ticks fired")
    task_id = fired[0]["data"]["task_id"]

    async def task_done() -> bool:
        r = await system.http.get(f"/v1/tasks/{task_id}")
        return r.status_code == 200 and r.json()["status"] == "succeeded"

    await eventually(task_done, timeout=WAIT, what="the tick's task ran")
    got = (await system.http.get(f"/v1/schedules/{sid}")).json()
    assert got["status"] == "active" and got["cron"] == "* * * * * *" and got["timezone"] == "Europe/Berlin"
    times = [datetime.fromisoformat(t) for t in got["next_fire_times"]]
    assert len(times) == 5 and times == sorted(times) and len(set(times)) == 5
    listed = (await system.http.get("/v1/schedules", params={"limit": 10})).json()
    assert [s["id"] for s in listed["items"]] == [sid] and listed["next_cursor"] is None

    r = await system.http.patch(
        f"/v1/schedules/{sid}", json={"cron": "@hourly", "timezone": "America/New_York"}
    )
    assert r.status_code == 200, r.text
    nxt = datetime.fromisoformat(r.json()["next_fire_at"])
    assert nxt.minute == 0 and nxt.second == 0 and nxt > datetime.now(UTC)

    r = await system.http.post(f"/v1/schedules/{sid}:trigger")
    assert r.status_code == 202
    triggered = r.json()["task_id"]

    async def trig_done() -> bool:
        r = await system.http.get(f"/v1/tasks/{triggered}")
        return r.status_code == 200 and r.json()["status"] == "succeeded"

    await eventually(trig_done, timeout=WAIT, what="triggered task ran")
    assert (await system.http.delete(f"/v1/schedules/{sid}")).status_code == 202

    async def deleted() -> bool:
        return (await _types(system, sid))[-1:] == ["deleted"]

    await eventually(deleted, timeout=WAIT, what="deleted event")
    assert (await system.http.get("/v1/schedules")).json()["items"] == []
    types = await _types(system, sid)
    assert types[0] == "created" and "updated" in types and "triggered" in types
    assert (
        await system.http.post("/v1/schedules", json={"id": sid, "cron": "* * * * *", "task": {"type": "x"}})
    ).status_code == 409


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"cron": "not a cron", "task": {"type": "demo.echo"}}, "fields"),
        ({"cron": "0 0 L * *", "task": {"type": "demo.echo"}}, "day-of-month"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus", "task": {"type": "demo.echo"}}, "time zone"),
        ({"cron": "* * * * *", "start_at": "2030-01-01T00:00:00", "task": {"type": "demo.echo"}}, "timezone"),
        (
            {
                "cron": "* * * * *",
                "start_at": "2030-01-02T00:00:00Z",
                "end_at": "2030-01-01T00:00:00Z",
                "task": {"type": "demo.echo"},
            },
            "end_at",
        ),
        ({"cron": "* * * * *", "task": {"type": "demo.echo"}, "overlap": "sometimes"}, "overlap"),
    ],
)
async def test_bad_schedule_input_is_422_and_appends_nothing(
    gateway_only: System, body: dict[str, Any], fragment: str
) -> None:
    system = gateway_only
    r = await system.http.post("/v1/schedules", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert fragment in r.json()["detail"], r.json()
    tenant = system.settings.tenant
    events, _ = await EventStore(system.nc).load_raw(f"{sj.SCHED_PREFIX}.{tenant}.>")
    assert events == []


async def test_run_at_without_offset_is_422_and_appends_nothing(gateway_only: System) -> None:
    r = await gateway_only.http.post("/v1/tasks", json={"type": "demo.echo", "run_at": "2030-01-01T00:00:00"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    tenant = gateway_only.settings.tenant
    events, _ = await EventStore(gateway_only.nc).load_raw(f"{sj.EVT_PREFIX}.{tenant}.>")
    assert events == []


async def test_pause_and_resume_a_schedule(system: System) -> None:
    sid = await _create(system, cron="* * * * * *", task={"type": "demo.echo"})

    async def fired(n: int) -> bool:
        return (await _types(system, sid)).count("fired") >= n

    await eventually(lambda: fired(1), timeout=WAIT, what="first tick")
    r = await system.http.post(f"/v1/schedules/{sid}:pause")
    assert r.status_code == 202 and r.json()["status"] == "paused" and r.json()["next_fire_at"] is None
    paused_at = datetime.now(UTC)

    async def row_paused() -> bool:
        return bool((await system.http.get(f"/v1/schedules/{sid}")).json().get("status") == "paused")

    await eventually(row_paused, timeout=WAIT, what="paused in the read model")
    assert (await system.http.get(f"/v1/schedules/{sid}")).json()["next_fire_times"] == []
    # Wait (on real ticks of another schedule) until 3 s have passed, then check nothing fired.
    probe = await _create(system, cron="* * * * * *", task={"type": "demo.echo"})

    async def probe_ticks() -> bool:
        evs = [e for e in await _events(system, probe) if e["type"] == "fired"]
        return any(
            datetime.fromisoformat(e["data"]["tick_at"]) > paused_at.replace(microsecond=0) for e in evs[2:]
        )

    await eventually(probe_ticks, timeout=WAIT, what="3 s of probe ticks")
    after_pause = [
        e
        for e in await _events(system, sid)
        if e["type"] == "fired" and datetime.fromisoformat(e["data"]["tick_at"]) > paused_at
    ]
    assert after_pause == []
    r = await system.http.post(f"/v1/schedules/{sid}:resume")
    assert r.status_code == 202 and r.json()["status"] == "active"
    count = (await _types(system, sid)).count("fired")
    await eventually(lambda: fired(count + 2), timeout=WAIT, what="ticks after resume")
    types = await _types(system, sid)
    assert "paused" in types and "resumed" in types
    for s in (sid, probe):
        await system.http.delete(f"/v1/schedules/{s}")


async def _attempt_windows(system: System, task_ids: list[str]) -> list[tuple[datetime, datetime]]:
    out = []
    for tid in task_ids:
        evs = (await system.http.get(f"/v1/tasks/{tid}/events")).json()["events"]
        start = next(datetime.fromisoformat(e["at"]) for e in evs if e["type"] == "attempt_started")
        end = next(datetime.fromisoformat(e["at"]) for e in evs if e["type"] == "succeeded")
        out.append((start, end))
    return out


@pytest.mark.parametrize("policy", ["skip", "allow"])
async def test_overlap_of_a_3s_task_on_a_1s_schedule(system: System, policy: str) -> None:
    sid = await _create(
        system, cron="* * * * * *", overlap=policy, task={"type": "demo.sleep", "payload": {"seconds": 3}}
    )

    async def enough() -> list[dict[str, Any]]:
        evs = await _events(system, sid)
        fired = [e for e in evs if e["type"] == "fired"]
        return evs if len(fired) >= 2 and len(evs) >= 6 else []

    await eventually(enough, timeout=WAIT, what="two runs")
    await system.http.post(f"/v1/schedules/{sid}:pause")
    evs = await _events(system, sid)
    fired = [e["data"]["task_id"] for e in evs if e["type"] == "fired"][:2]

    async def both_done() -> bool:
        for tid in fired:
            r = await system.http.get(f"/v1/tasks/{tid}")
            if r.status_code != 200 or r.json()["status"] != "succeeded":
                return False
        return True

    await eventually(both_done, timeout=WAIT, what="runs finished")
    (s1, e1), (s2, e2) = await _attempt_windows(system, fired)
    skipped = [e for e in evs if e["type"] == "skipped"]
    if policy == "skip":
        assert skipped and all(e["data"]["running_task_id"] in fired for e in skipped)
        assert s2 >= e1, "skip never runs two at once"
    else:
        assert not skipped
        assert s2 < e1, "allow runs them concurrently"
    await system.http.delete(f"/v1/schedules/{sid}")


async def test_a_schedule_read_right_after_its_create_can_wait_for_it(system: System) -> None:
    """A 404 for about 20 ms after the 201, and `consistency=wait` was silently ignored."""
    r = await system.http.post("/v1/schedules", json={"cron": "0 5 * * *", "task": {"type": "demo.echo"}})
    assert r.status_code == 201, r.text
    sid, seq = r.json()["id"], r.json()["seq"]
    try:
        got = await system.http.get(f"/v1/schedules/{sid}", params={"consistency": "wait"})
        assert got.status_code == 200 and got.json()["id"] == sid, got.text
        got = await system.http.get(f"/v1/schedules/{sid}", params={"min_seq": seq})
        assert got.status_code == 200, got.text
    finally:
        assert (await system.http.delete(f"/v1/schedules/{sid}")).status_code in (200, 202)


async def test_a_message_that_is_no_schedule_event_breaks_no_command(gateway_only: System) -> None:
    """A message on a schedule's subjects that is no schedule event (a reply once published there,
    tests/test_nats_permissions.py) made every command on the schedule a 500 for good: the log
    keeps it. A schedule's load leaves it out, as the projection does."""
    sid = await _create(gateway_only, id="junk-beside", cron="0 0 1 1 *", task={"type": "demo.echo"})
    tenant = gateway_only.settings.tenant
    await gateway_only.nc.jetstream().publish(sj.schedule_event_subject(tenant, sid, "deleted"), b"401")
    for method, path in (("POST", f"/v1/schedules/{sid}:trigger"), ("PATCH", f"/v1/schedules/{sid}")):
        body = {"description": "still editable"} if method == "PATCH" else None
        r = await gateway_only.http.request(method, path, json=body)
        assert r.status_code in (200, 202), (method, r.status_code, r.text)
    assert (await gateway_only.http.delete(f"/v1/schedules/{sid}")).status_code in (200, 202, 204)


async def test_a_schedule_past_its_end_says_ended(system: System) -> None:
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    sid = await _create(
        system, id="ends-soon", cron="* * * * * *", end_at=end.isoformat(), task={"type": "demo.echo"}
    )

    async def ended() -> dict[str, Any] | None:
        r = await system.http.get(f"/v1/schedules/{sid}")
        return r.json() if r.status_code == 200 and r.json()["status"] == "ended" else None

    row = await eventually(ended, timeout=WAIT, what="the schedule ended")
    assert row["next_fire_at"] is None and row["next_fire_times"] == [] and row["fired"] >= 1
    listed = (await system.http.get("/v1/schedules")).json()["items"]
    assert next(s for s in listed if s["id"] == sid)["status"] == "ended"


async def test_a_schedule_pause_reads_its_body_a_reason_or_a_422(gateway_only: System) -> None:
    """Its body was never read: any bytes paused the schedule, and a reason was dropped (the
    `paused` event always had `reason: ''`). Now as a queue's pause: a reason or a 422."""
    http, tenant = gateway_only.http, gateway_only.settings.tenant
    sid = await _create(gateway_only, cron="0 0 1 1 *", task={"type": "demo.echo"})
    pause = f"/v1/schedules/{sid}:pause"
    paused_subject = sj.schedule_event_subject(tenant, sid, "paused")
    for body in (b"not json", b'{"foo": 1}', b'{"reason": 5}', b"[]", b'{"reason": "' + b"x" * 501 + b'"}'):
        r = await http.post(pause, content=body)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    big = b'{"reason": "' + b"x" * 200_000 + b'"}'
    assert (await http.post(pause, content=big)).status_code == 413  # read with a limit
    assert (await EventStore(gateway_only.nc).load_raw(paused_subject))[0] == []  # nothing paused

    r = await http.post(pause, json={"reason": "maintenance"})
    assert r.status_code == 202 and r.json()["status"] == "paused", r.text
    got = await http.get(f"/v1/schedules/{sid}", params={"min_seq": r.json()["seq"]})
    assert got.json()["status"] == "paused" and got.json()["paused_reason"] == "maintenance", got.text

    async def paused_event() -> list[dict[str, Any]]:
        return [e for e in await _events(gateway_only, sid) if e["type"] == "paused"]

    events = await eventually(paused_event, timeout=WAIT, what="the paused event in the timeline")
    assert events[0]["data"]["reason"] == "maintenance", events

    r = await http.post(f"/v1/schedules/{sid}:resume")
    got = await http.get(f"/v1/schedules/{sid}", params={"min_seq": r.json()["seq"]})
    assert got.json()["status"] == "active" and got.json()["paused_reason"] is None, got.text
    assert (await http.post(pause)).status_code == 202  # no body: no reason
    raw, _ = await EventStore(gateway_only.nc).load_raw(paused_subject)
    assert len(raw) == 2 and b"maintenance" not in raw[1].data


async def test_a_schedule_s_start_and_end_are_answered_in_utc(gateway_only: System) -> None:
    """`spec.start_at`/`end_at` came back in the offsets they were written in
    (`2026-12-06T20:45:02+05:00`) while every other time the API answers is UTC with a `Z`. The
    stored events keep what was written; the answers say the same instants in UTC."""
    http = gateway_only.http
    start, end = "2026-12-06T20:45:02+05:00", "2031-03-01T08:00:00-03:30"
    r = await http.post(
        "/v1/schedules",
        json={"cron": "0 0 1 1 *", "start_at": start, "end_at": end, "task": {"type": "demo.echo"}},
    )
    assert r.status_code == 201, r.text
    sid, seq = r.json()["id"], r.json()["seq"]
    want = {"start_at": "2026-12-06T15:45:02Z", "end_at": "2031-03-01T11:30:00Z"}
    got = (await http.get(f"/v1/schedules/{sid}", params={"min_seq": seq})).json()
    assert {k: got["spec"][k] for k in want} == want, got["spec"]
    assert got["next_fire_at"].endswith("Z") and got["created_at"].endswith("Z"), got
    listed = next(s for s in (await http.get("/v1/schedules")).json()["items"] if s["id"] == sid)
    assert {k: listed["spec"][k] for k in want} == want, listed["spec"]
    created = next(e for e in await _events(gateway_only, sid) if e["type"] == "created")
    assert {k: created["data"]["spec"][k] for k in want} == want, created["data"]

    r = await http.patch(f"/v1/schedules/{sid}", json={"end_at": "2032-01-01T00:00:00+01:00"})
    assert r.status_code == 200, r.text
    got = (await http.get(f"/v1/schedules/{sid}", params={"min_seq": r.json()["seq"]})).json()
    assert got["spec"]["end_at"] == "2031-12-31T23:00:00Z", got["spec"]
    raw, _ = await EventStore(gateway_only.nc).load_raw(
        sj.schedule_event_subject(gateway_only.settings.tenant, sid, "created")
    )
    assert start.encode() in raw[0].data  # the event is kept as written
