"""Live views re-rendered by events keep what the reader is doing: the focused control stays focused
(and a click in progress lands) because a refresh patches the rows in place instead of building the
table again. A schedule's page refreshes for its own tasks only. Real Chromium, real system."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.conftest import System
from tests.helpers import eventually
from tests.test_ui import Page, browser, submit, ui

__all__ = ["browser", "ui"]

# The focused control: its data-action (or tag) and the row it is in (a task, schedule or queue).
FOCUSED = """() => {
  const a = document.activeElement, row = a?.closest("tr");
  return [a?.dataset.action ?? a?.tagName, row?.dataset.id ?? row?.dataset.queue ?? null];
}"""


async def _schedule(system: System, sid: str) -> None:
    """Create the schedule and read it back once the read model has it (`consistency=wait`): a page
    opened sooner reads it as 404, which the browser logs as a console error."""
    body = {"cron": "0 0 1 1 *", "task": {"type": "demo.echo"}, "id": sid, "description": f"about {sid}"}
    r = await system.http.post("/v1/schedules", json=body)
    assert r.status_code == 201, r.text
    r = await system.http.get(f"/v1/schedules/{sid}", params={"consistency": "wait"})
    assert r.status_code == 200, r.text


async def _trigger(system: System, sid: str) -> str:
    r = await system.http.post(f"/v1/schedules/{sid}:trigger")
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


async def test_the_schedule_list_keeps_the_focus_through_live_refreshes(ui: Page, system: System) -> None:
    await _schedule(system, "patch-list-a")
    await _schedule(system, "patch-list-b")
    page = ui.page
    await ui.open("/schedules")
    button = page.locator('#schedules-table tr[data-id="patch-list-a"] button[data-action="trigger"]')
    await button.focus()
    for sid in (
        "patch-list-b",
        "patch-list-a",
    ):  # each trigger submits a task tagged with its schedule: the list re-reads
        task_id = await _trigger(system, sid)
        await page.locator(f'#schedules-table tr[data-id="{sid}"] a[href="#/tasks/{task_id}"]').wait_for()
        assert await page.evaluate(FOCUSED) == ["trigger", "patch-list-a"]
    assert (
        await page.locator(
            '#schedules-table tr[data-id="patch-list-b"] td[data-label="last fired"]'
        ).inner_text()
        != ""
    )


async def test_a_schedule_page_keeps_the_focus_and_reads_again_only_for_its_own_tasks(
    ui: Page, system: System
) -> None:
    await _schedule(system, "patch-page")
    await _schedule(system, "patch-other")
    page = ui.page
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if "/v1/schedules/patch-page" in r.url else None)
    await ui.open("/schedules/patch-page")
    await page.locator("#decisions tbody tr").first.wait_for()
    # Its description is on its page, and its id (it has no name) is not repeated in a heading.
    assert await page.inner_text("#description") == "about patch-page"
    assert await page.locator("h2", has_text="patch-page").count() == 0
    await page.wait_for_function("window.ordo.lastSeq !== null")  # the live stream has started
    await page.locator('button[data-action="trigger"]').focus()
    task_id = await _trigger(system, "patch-page")
    await page.locator(f'#decisions a[href="#/tasks/{task_id}"]').wait_for()
    assert await page.evaluate(FOCUSED) == ["trigger", None]
    # Another schedule's task reaches the page's live stream: nothing of this page changed.
    other = await _trigger(system, "patch-other")

    async def projected() -> bool:
        r = await system.http.get(f"/v1/tasks/{other}/events")
        return r.status_code == 200 and bool(r.json()["events"])

    await eventually(projected, timeout=60, what="the other schedule's task in the read model")
    seq = (await system.http.get(f"/v1/tasks/{other}/events")).json()["events"][0]["seq"]
    await page.wait_for_function("seq => (window.ordo.lastSeq ?? 0) >= seq", arg=seq)
    settled = len(reads)
    mine = await _trigger(system, "patch-page")
    await page.locator(f'#decisions a[href="#/tasks/{mine}"]').wait_for()
    # One refresh (the schedule and its page of decisions) for this schedule's task; before, any
    # task's `submitted` read the page again, and the other schedule's made a second refresh.
    assert len(reads[settled:]) == 2, reads[settled:]
    assert await page.evaluate(FOCUSED) == ["trigger", None]


async def test_the_overview_queue_table_keeps_the_focus(ui: Page, system: System) -> None:
    page = ui.page
    await submit(system, {"type": "demo.echo", "queue": "patch-q"})  # unserved: it stays queued
    await ui.open("/overview")
    button = page.locator('#queues-table tr[data-queue="patch-q"] button[data-action="pause"]')
    await button.focus()
    await submit(system, {"type": "demo.echo", "queue": "patch-q"})
    await page.locator(
        '#queues-table tr[data-queue="patch-q"] td[data-label="depth"]', has_text="2"
    ).wait_for()
    assert await page.evaluate(FOCUSED) == ["pause", "patch-q"]


async def test_a_schedule_paused_from_the_list_shows_paused_when_the_read_model_is_slow(
    ui: Page, system: System
) -> None:
    """A schedule's own events reach no live stream: after Pause the view reads until the read model
    shows it. The read model is held back by a lock on its schedules table (reads still pass), so the
    view's first read after the click is stale."""
    await _schedule(system, "patch-slow-pause")
    page = ui.page
    await ui.open("/schedules")
    row = page.locator('#schedules-table tr[data-id="patch-slow-pause"]')
    await row.locator('.badge[data-status="active"]').wait_for()
    reads: list[str] = []
    page.on(
        "response",
        lambda r: reads.append(r.url) if r.request.method == "GET" and "/v1/schedules" in r.url else None,
    )
    lock = await asyncpg.connect(system.settings.database_url)
    try:
        tx = lock.transaction()
        await tx.start()
        await lock.execute("LOCK TABLE schedules IN EXCLUSIVE MODE")  # the projector waits; reads pass
        await row.locator('button[data-action="pause"]').click()
        await page.locator(".toast", has_text="pause accepted").wait_for()
        del reads[:]
        # The view keeps reading while the read model is behind (before, it read once or twice, got
        # the old state and stopped: a paused schedule makes no task event to read again on).
        await eventually(
            lambda: _true(len(reads) >= 3), timeout=15, what="the view reading until it shows the pause"
        )
        await tx.rollback()
    finally:
        await lock.close()
    await row.locator('.badge[data-status="paused"]').wait_for(timeout=30_000)


async def _true(value: bool) -> bool:
    return value


async def test_dead_letters_hold_still_under_the_pointer(ui: Page, system: System) -> None:
    """New dead letters would push the rows down under a pointer about to click Replay: while the
    mouse rests on the list the update is held (and said so), and shown when it leaves."""
    rows = ui.page.locator("#dl-table tbody tr[data-id]")

    async def dead(n: int) -> bool:
        page = (await system.http.get("/v1/dead-letters", params={"type": "demo.fail"})).json()
        return len(page["items"]) == n

    first = await submit(system, {"type": "demo.fail", "max_attempts": 1})
    await eventually(lambda: dead(1), timeout=60, what="the first dead letter")
    await ui.open("/dead-letters")
    await rows.first.wait_for()
    await rows.first.hover()
    second = await submit(system, {"type": "demo.fail", "max_attempts": 1})
    await eventually(lambda: dead(2), timeout=60, what="the second dead letter")
    await ui.page.locator("#dl-held").wait_for(state="visible")
    assert await rows.count() == 1 and await rows.first.get_attribute("data-id") == first
    await ui.page.mouse.move(0, 0)  # the pointer leaves the list: the held update shows
    await ui.page.locator(f'#dl-table tr[data-id="{second}"]').wait_for()
    assert await ui.page.locator("#dl-held").is_hidden()


async def test_a_schedule_page_holds_its_decisions_still_under_the_pointer(ui: Page, system: System) -> None:
    await _schedule(system, "hold-still")
    rows = ui.page.locator("#decisions tbody tr")
    await _trigger(system, "hold-still")
    await ui.open("/schedules/hold-still")
    await eventually(lambda: _count(rows, 2), timeout=30, what="`created` and `triggered` shown")
    await rows.first.hover()
    await _trigger(system, "hold-still")
    await ui.page.locator("#decisions-held").wait_for(state="visible")
    assert await rows.count() == 2
    await ui.page.mouse.move(0, 0)
    await eventually(lambda: _count(rows, 3), timeout=30, what="the held decision shown")
    assert await ui.page.locator("#decisions-held").is_hidden()


async def _count(rows: Any, n: int) -> bool:
    return bool(await rows.count() == n)


async def test_the_live_event_feed_holds_still_under_the_pointer(ui: Page, system: System) -> None:
    await ui.open("/overview")
    items = ui.page.locator("#feed li")

    async def shown() -> bool:  # submits until the live stream is up and shows one
        if await items.count():
            return True
        await submit(system, {"type": "demo.echo"})
        return False

    await eventually(shown, timeout=30, interval=0.5, what="an event in the live feed")
    await items.first.hover()
    top = await items.first.get_attribute("data-seq")
    second = await submit(system, {"type": "demo.echo"})
    await ui.page.locator("#feed-held").wait_for(state="visible")
    assert await items.first.get_attribute("data-seq") == top
    await ui.page.mouse.move(0, 0)
    await ui.page.locator(f'#feed li a[href="#/tasks/{second}"]').first.wait_for()
    assert await ui.page.locator("#feed-held").is_hidden()
