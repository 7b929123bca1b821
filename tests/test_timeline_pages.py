"""A task's and a schedule's timeline, a page at a time: `after`, `limit`, `order`, `next_after`, and
`ORDO_TIMELINE_PAGE` as the default and the largest page. Real servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from ordo.domain.schedule_commands import DeleteSchedule
from ordo.infra.command_handler import CommandHandler
from ordo.infra.schedule_handler import ScheduleHandler
from ordo.infra.schedule_timers import ScheduleTimers
from ordo.infra.settings import Settings, SettingsError
from tests.conftest import System, run_system
from tests.helpers import eventually

PAGE = 2


@pytest.fixture
async def paged(settings: Settings, nc: NATS, handler: CommandHandler) -> AsyncIterator[System]:
    """The system, no worker, with timelines served two events a page."""
    async with run_system(settings.with_(timeline_page=PAGE), nc, handler, worker=False) as sys_:
        yield sys_


async def _read_all(http: httpx.AsyncClient, path: str, **params: Any) -> list[list[int]]:
    """Every page's sequences, following `next_after` from the first page to the end."""
    pages: list[list[int]] = []
    body = (await http.get(path, params=params)).json()
    while True:
        pages.append([e["seq"] for e in body["events"]])
        if body["next_after"] is None:
            return pages
        body = (await http.get(path, params={**params, "after": body["next_after"]})).json()


async def task_with_five_events(http: httpx.AsyncClient) -> tuple[str, int]:
    sub = (await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})).json()
    await http.post(f"/v1/tasks/{sub['id']}:pause")
    await http.post(f"/v1/tasks/{sub['id']}:resume")
    last = (await http.post(f"/v1/tasks/{sub['id']}:cancel")).json()["seq"]
    return sub["id"], last


async def test_a_task_timeline_pages_by_the_setting_oldest_or_newest_first(paged: System) -> None:
    http = paged.http
    task_id, last = await task_with_five_events(http)
    path = f"/v1/tasks/{task_id}/events"
    first = await http.get(path, params={"min_seq": last})  # the default page is the setting's
    assert first.status_code == 200 and len(first.json()["events"]) == PAGE
    oldest = await _read_all(http, path)
    assert [len(p) for p in oldest] == [2, 2, 1]
    seqs = [s for p in oldest for s in p]
    assert seqs == sorted(seqs) and seqs[-1] == last
    newest = await _read_all(http, path, order="desc")
    assert [s for p in newest for s in p] == seqs[::-1]
    one = (await http.get(path, params={"order": "desc", "limit": 1})).json()
    assert [e["type"] for e in one["events"]] == ["cancelled"] and one["next_after"] == last
    # Past either end: an empty page of a task that exists; an unknown task is still a 404.
    assert (await http.get(path, params={"after": last})).json() == {"events": [], "next_after": None}
    assert (await http.get(path, params={"order": "desc", "after": seqs[0]})).json()["events"] == []
    missing = await http.get("/v1/tasks/0190aaaa-0000-7000-8000-000000000000/events", params={"after": 5})
    assert missing.status_code == 404


async def test_a_page_beyond_the_setting_is_cut_to_it_and_bad_paging_is_a_422(paged: System) -> None:
    http = paged.http
    task_id, last = await task_with_five_events(http)
    path = f"/v1/tasks/{task_id}/events"
    # A client set for other gateways; `min_seq`: all five events are in the read model.
    big = (await http.get(path, params={"limit": 10_000, "min_seq": last})).json()
    assert len(big["events"]) == PAGE and big["next_after"] == big["events"][-1]["seq"]
    for params in ({"limit": 0}, {"limit": 10_001}, {"order": "newest"}, {"after": -1}):
        r = await http.get(path, params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


@contextlib.asynccontextmanager
async def schedule_with_four_decisions(
    system: System, sid: str, settings: Settings, nc: NATS, handler: CommandHandler
) -> AsyncIterator[str]:
    """A yearly schedule `sid` created, paused, resumed and triggered, its trigger in the read
    model; deleted afterwards."""
    http = system.http
    created = await http.post(
        "/v1/schedules", json={"cron": "0 0 1 1 *", "task": {"type": "demo.echo"}, "id": sid}
    )
    assert created.status_code == 201, created.text
    try:
        await http.post(f"/v1/schedules/{sid}:pause")
        await http.post(f"/v1/schedules/{sid}:resume")
        last = (await http.post(f"/v1/schedules/{sid}:trigger")).json()["seq"]

        async def shown() -> bool:
            r = await http.get(f"/v1/schedules/{sid}/events", params={"order": "desc", "limit": 1})
            return r.status_code == 200 and r.json()["events"][0]["seq"] >= last

        await eventually(shown, timeout=60, what="the trigger in the schedule's timeline")
        yield sid
    finally:
        schedules = ScheduleHandler(handler, ScheduleTimers(nc, settings.timer_lead_s))
        await schedules.execute(settings.tenant, DeleteSchedule(schedule_id=sid))


async def test_a_schedule_timeline_pages_like_a_task_s(
    paged: System, settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    http = paged.http
    async with schedule_with_four_decisions(paged, "paged-timeline", settings, nc, handler) as sid:
        path = f"/v1/schedules/{sid}/events"
        oldest = await _read_all(http, path)
        seqs = [s for p in oldest for s in p]
        assert [len(p) for p in oldest][:2] == [2, 2] and seqs == sorted(seqs)
        newest = await _read_all(http, path, order="desc")
        assert [s for p in newest for s in p] == seqs[::-1]
        types = [e["type"] for e in (await http.get(path, params={"order": "desc"})).json()["events"]]
        assert types[0] == "triggered", types
        assert len((await http.get(path, params={"limit": PAGE + 1})).json()["events"]) == PAGE
        assert (await http.get("/v1/schedules/no-such-schedule/events")).status_code == 404


def test_the_timeline_page_setting_is_checked() -> None:
    assert Settings.from_env({"ORDO_TIMELINE_PAGE": "50"}).timeline_page == 50
    for bad in ("0", "10001"):
        with pytest.raises(SettingsError, match="ORDO_TIMELINE_PAGE"):
            Settings.from_env({"ORDO_TIMELINE_PAGE": bad})
