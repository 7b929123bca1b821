"""Operations the API has, now in the UI: tag filter, several statuses, sorting and "select all
matching" on the task list; task edit and archive; queue pause/resume and the warning for a queue no
worker serves; run-time percentiles; schedule create / edit / delete with its zone and policies;
Kill asks first. Real Chromium against the real system."""

from __future__ import annotations

from typing import Any

from tests.conftest import System
from tests.helpers import eventually
from tests.test_ui import Page, browser, status_is, submit, task, ui

__all__ = ["browser", "ui"]


async def _confirm(page: Any, answer: str = "yes") -> str:
    dialog = page.locator("dialog#confirm[open]")
    await dialog.wait_for()
    text = str(await dialog.inner_text())
    await page.click(f'dialog#confirm button[data-confirm="{answer}"]')
    await page.locator("dialog#confirm").wait_for(state="detached")
    return text


async def test_task_list_tag_several_statuses_sort_and_select_all_matching(ui: Page, system: System) -> None:
    ids = [
        await submit(system, {"type": "demo.echo", "payload": i, "delay": 3600, "tags": ["ops-x"]})
        for i in range(3)
    ]
    other = await submit(system, {"type": "demo.echo", "delay": 3600, "tags": ["ops-y"]})
    for task_id in [*ids, other]:
        await eventually(status_is(system, task_id, "scheduled"), timeout=60, what="scheduled")
    page = ui.page
    await ui.open("/tasks?tag=ops-x&sort=created_at")
    rows = page.locator("#tasks-table tbody tr[data-id]")
    await page.locator(f'#tasks-table tr[data-id="{ids[2]}"]').wait_for()
    assert await rows.count() == 3
    assert await rows.first.get_attribute("data-id") == ids[0]  # oldest first
    assert await page.input_value("input[name=tag]") == "ops-x"
    await page.select_option("select[name=status]", "scheduled,queued,paused,retrying")
    await page.locator("#tasks-table").wait_for()
    await eventually(
        lambda: _url_has(page, "status=scheduled%2Cqueued"), timeout=30, what="status list in the URL"
    )
    await page.click('button[data-bulk="select-all"]')
    await page.locator(".bulkbar", has_text="3 selected (all matching)").wait_for()
    await page.click('button[data-bulk="cancel"]')
    text = await _confirm(page)
    assert (
        "Cancel 3 selected tasks?" in text
        and "tag ops-x" in text
        and "scheduled/queued/paused/retrying" in text
    ), text
    for task_id in ids:
        await eventually(status_is(system, task_id, "cancelled"), timeout=60, what="cancelled")
    assert (await task(system, other))["status"] == "scheduled"


async def _url_has(page: Any, part: str) -> bool:
    return part in page.url


async def test_edit_a_waiting_task_and_archive_a_finished_one(ui: Page, system: System) -> None:
    waiting = await submit(system, {"type": "demo.echo", "payload": {"v": 1}, "delay": 3600, "priority": 5})
    done = await submit(system, {"type": "demo.echo", "payload": 1})
    await eventually(status_is(system, waiting, "scheduled"), timeout=60, what="scheduled")
    await eventually(status_is(system, done, "succeeded"), timeout=60, what="succeeded")
    page = ui.page
    await ui.open(f"/tasks/{waiting}")
    await page.click('#task-actions button[data-action="edit"]')
    await page.fill("#task-edit input[name=priority]", "2")
    await page.fill("#task-edit textarea[name=payload]", '{"v": 2}')
    await page.click("#task-edit button[type=submit]")

    async def edited() -> bool:
        t = await task(system, waiting)
        return t.get("priority") == 2 and t.get("payload") == {"v": 2}

    await eventually(edited, timeout=30, what="task edited")
    await ui.open(f"/tasks/{done}")
    await page.click('#task-actions button[data-action="archive"]')
    assert "Archive this task?" in await _confirm(page)

    async def archived() -> bool:
        listed = (await system.http.get("/v1/tasks", params={"limit": 500})).json()["items"]
        return all(t["id"] != done for t in listed)

    await eventually(archived, timeout=30, what="archived task off the list")


async def test_queue_pause_resume_unserved_warning_and_percentiles(ui: Page, system: System) -> None:
    done = await submit(system, {"type": "demo.echo", "payload": 1})
    await eventually(status_is(system, done, "succeeded"), timeout=60, what="succeeded")
    await submit(system, {"type": "demo.echo", "queue": "emails"})
    page = ui.page
    await ui.open("/overview")
    await page.locator('#queues-table tr[data-queue="emails"] [data-warning="unserved"]').wait_for()
    await page.click('#queues-table tr[data-queue="emails"] button[data-action="pause"]')
    assert "Pause queue emails?" in await _confirm(page)

    async def paused(want: bool) -> bool:
        items = (await system.http.get("/v1/queues")).json()["items"]
        return any(q["name"] == "emails" and q["paused"] is want for q in items)

    await eventually(lambda: paused(True), timeout=30, what="emails paused")
    await page.click('#queues-table tr[data-queue="emails"] button[data-action="resume"]')
    await eventually(lambda: paused(False), timeout=30, what="emails resumed")
    totals = (await system.http.get("/v1/stats")).json()["totals"]
    if totals.get("p50_ms") is not None:
        await page.locator("#latency", has_text="/").wait_for()
        assert (await page.inner_text("#latency")).count("/") == 2


async def test_schedule_create_edit_delete_in_its_own_zone(ui: Page, system: System) -> None:
    page = ui.page
    await ui.open("/schedules")
    await page.click("details.create summary")
    form = page.locator("#schedule-new")
    await form.locator("input[name=cron]").fill("30 2 * * *")
    await form.locator("input[name=timezone]").fill("America/New_York")
    await form.locator("input[name=task_type]").fill("demo.echo")
    await form.locator("select[name=overlap]").select_option("allow")
    await form.locator("button[type=submit]").click()
    await page.locator("#policies", has_text="overlap allow").wait_for()
    next_fire = await page.inner_text("#next-fire")
    assert "02:30:00 E" in next_fire and "local" in next_fire, next_fire  # EST/EDT, the schedule's own clock
    schedule = page.url.split("/schedules/")[1]
    await page.click("details.create summary")
    await page.locator("#schedule-edit select[name=catchup]").select_option("run_once")
    await page.click("#schedule-edit button[type=submit]")
    await page.locator("#policies", has_text="catch-up run_once").wait_for()
    await page.click('button[data-action="delete"]')
    assert "Delete schedule" in await _confirm(page)
    await page.locator("#schedules, #schedules-table").first.wait_for()

    async def deleted() -> bool:
        r = await system.http.get(f"/v1/schedules/{schedule}")
        return r.status_code == 404 or r.json().get("status") == "deleted" or r.json().get("deleted") is True

    await eventually(deleted, timeout=30, what="schedule deleted")


async def test_kill_asks_first(ui: Page, system: System) -> None:
    page = ui.page
    await ui.open("/workers")
    button = page.locator('#workers button[data-action="kill"]').first
    await button.wait_for()
    await button.click()
    text = await _confirm(page, "no")
    assert "Kill worker" in text and "redelivered" in text, text


async def test_submit_warns_about_a_type_or_queue_no_worker_serves(ui: Page, system: System) -> None:
    page = ui.page
    await ui.open("/submit")
    await page.locator('#task-types option[value="demo.sleep"]').first.wait_for(state="attached")
    await page.fill("input[name=type]", "no.such.type")
    await page.locator("#type-warning", has_text="No online worker has a handler for no.such.type").wait_for()
    await page.fill("input[name=type]", "demo.echo")
    await page.locator("#type-warning:empty").wait_for(state="attached")
    await page.fill("input[name=queue]", "emails")
    await page.locator("#queue-warning", has_text="No online worker serves queue emails").wait_for()


async def test_saving_a_schedule_with_default_policies_does_not_wait_out_its_check(
    ui: Page, system: System
) -> None:
    """The save waited until the read model showed the values sent, and the API leaves defaults
    out (`skip`): it never matched, and the save took the check's whole 10 s."""
    r = await system.http.post("/v1/schedules", json={"cron": "0 5 * * *", "task": {"type": "demo.echo"}})
    schedule = r.json()["id"]
    # Opened before the read model has it, the page reads it as 404 (a console error).
    r = await system.http.get(f"/v1/schedules/{schedule}", params={"consistency": "wait"})
    assert r.status_code == 200, r.text
    page = ui.page
    await ui.open(f"/schedules/{schedule}")
    await page.click("details.create summary")
    await page.locator("#schedule-edit input[name=cron]").fill("0 6 * * *")
    await page.click("#schedule-edit button[type=submit]")
    # well within the check's 10 s: the edit form closes once the saved values show
    await page.locator("#schedule-edit").wait_for(state="hidden", timeout=6000)
    got = (await system.http.get(f"/v1/schedules/{schedule}")).json()
    assert "6" in got["cron"], got
