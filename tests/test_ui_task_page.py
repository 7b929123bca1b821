"""The task page and the task list as a keyboard and mouse user meets them: shortcuts do only what
their buttons allow, the view key is kept in the URL, a missing task shows only that, a stale error
goes once the values change, an archived task says so, the actions keep the focus through the
task's events, "Newer" after the browser's Back, and a bulk cancel that names the tasks it cannot
cancel. Real Chromium, real system."""

from __future__ import annotations

from tests.conftest import System
from tests.helpers import eventually
from tests.test_ui import Page, browser, status_is, submit, task, ui
from tests.test_ui_operations import _confirm

__all__ = ["browser", "ui"]

# Every fetch the page starts, in order, recorded as it is called (a command's POST is sent at once).
RECORD = """
window.__calls = [];
const fetch_ = window.fetch;
window.fetch = (url, init) => {
  window.__calls.push(`${init?.method ?? "GET"} ${url}`);
  return fetch_(url, init);
};
"""
FOCUSED_ACTION = "() => document.activeElement?.dataset.action ?? document.activeElement?.tagName"


async def test_shortcuts_do_only_what_their_buttons_allow_and_the_view_key_is_kept(
    ui: Page, system: System
) -> None:
    done = await submit(system, {"type": "demo.echo"})
    waiting = await submit(system, {"type": "demo.echo", "delay": 3600})
    await eventually(status_is(system, done, "succeeded"), timeout=60, what="succeeded")
    await eventually(status_is(system, waiting, "scheduled"), timeout=60, what="scheduled")
    page = ui.page
    await page.add_init_script(RECORD)
    await ui.open(f"/tasks/{done}")
    await page.locator('#task-status .badge[data-status="succeeded"]').wait_for()
    assert await page.is_disabled('#task-actions button[data-action="retry"]')
    for key in ("r", "p", "c"):  # Retry, Pause and Cancel are disabled for a succeeded task
        await page.keyboard.press(key)
    await page.keyboard.press("2")
    await page.wait_for_function("location.hash.includes('view=compact')")  # as a click on the tab does
    assert await page.evaluate("window.__calls.filter((c) => c.startsWith('POST'))") == []
    await ui.open(f"/tasks/{waiting}")
    await page.locator('#task-status .badge[data-status="scheduled"]').wait_for()
    await page.keyboard.press("p")  # its Pause button is enabled: the shortcut pauses it
    await eventually(status_is(system, waiting, "paused"), timeout=60, what="paused by the shortcut")


async def test_a_missing_task_shows_only_that(ui: Page, system: System) -> None:
    ui.allowed.append("404")  # the two reads of the task answer 404: the browser logs each
    page = ui.page
    await ui.open("/tasks/0123456789abcdef0123456789abcdef")
    await page.locator(".notice.error", has_text="No task 0123456789abcdef0123456789abcdef").wait_for()
    for panel in ("Attempts", "Details", "Time travel", "Events"):  # no empty skeleton around the notice
        assert await page.locator("h2", has_text=panel).is_hidden(), panel


async def test_the_edit_form_drops_a_stale_error_and_the_actions_keep_the_focus(
    ui: Page, system: System
) -> None:
    waiting = await submit(system, {"type": "demo.echo", "delay": 3600, "priority": 5})
    await eventually(status_is(system, waiting, "scheduled"), timeout=60, what="scheduled")
    page = ui.page
    await ui.open(f"/tasks/{waiting}")
    await page.click('#task-actions button[data-action="edit"]')
    await page.fill("#task-edit textarea[name=payload]", "{bad")
    await page.click("#task-edit button[type=submit]")
    message = page.locator("#task-edit .error-text")
    assert "not valid JSON" in await message.inner_text()
    await page.fill("#task-edit textarea[name=payload]", "{}")
    assert await message.inner_text() == ""  # the error was about the old text
    await page.click("#task-edit button[type=button]")  # Close
    # An event of the task re-renders its head: the focused button stays focused.
    await page.locator('#task-actions button[data-action="pause"]').focus()
    r = await system.http.patch(f"/v1/tasks/{waiting}", json={"priority": 7})
    assert r.status_code == 202, r.text
    await page.locator(".task-head", has_text="priority 7").wait_for()
    assert await page.evaluate(FOCUSED_ACTION) == "pause"


async def test_an_archived_task_says_so_and_is_unarchived(ui: Page, system: System) -> None:
    done = await submit(system, {"type": "demo.echo"})
    await eventually(status_is(system, done, "succeeded"), timeout=60, what="succeeded")
    assert (await system.http.post(f"/v1/tasks/{done}:archive")).status_code == 202

    async def archived() -> bool:
        return (await task(system, done)).get("archived") is True

    await eventually(archived, timeout=60, what="archived in the read model")
    await ui.open(f"/tasks/{done}")
    await ui.page.locator("#task-archived").wait_for()
    # From the keyboard: the focus stays on the button that takes Unarchive's place, not the page.
    await ui.page.locator('#task-actions button[data-action="unarchive"]').focus()
    await ui.page.keyboard.press("Enter")
    await ui.page.locator("#task-archived").wait_for(state="detached")  # `unarchived` re-renders the head
    assert (await task(system, done)).get("archived") is False
    await ui.page.locator('#task-actions button[data-action="archive"]').wait_for()
    assert await ui.page.evaluate(FOCUSED_ACTION) == "archive"


async def test_newer_after_the_browser_back_goes_to_the_newer_page(ui: Page, system: System) -> None:
    queue = "ui-pages-back"
    r = await system.http.post(
        "/v1/tasks:batch", json={"tasks": [{"type": "demo.echo", "queue": queue}] * 120}
    )
    assert r.status_code == 202, r.text
    ids = [t["id"] for t in r.json()["items"]]

    async def listed() -> bool:
        items = (await system.http.get("/v1/tasks", params={"queue": queue, "limit": 500})).json()["items"]
        return len(items) == len(ids)

    await eventually(listed, timeout=60, what="120 tasks listed")
    page = ui.page
    rows = page.locator("#tasks-table tbody tr[data-id]")
    await ui.open(f"/tasks?queue={queue}")
    await page.locator("#tasks-info", has_text="50 tasks on this page").wait_for()
    first = await rows.first.get_attribute("data-id")
    for _ in range(2):  # to the third page
        before = page.url
        await page.click("text=Older →")
        await page.wait_for_function("u => location.href !== u", arg=before)
        await page.locator("#tasks-info", has_text="task").wait_for()
    await page.locator("#tasks-info", has_text="20 tasks on this page").wait_for()
    await page.go_back()  # the second page
    await page.locator("#tasks-info", has_text="50 tasks on this page").wait_for()
    await page.wait_for_function(
        "f => document.querySelector('#tasks-table tbody tr[data-id]')?.dataset.id !== f", arg=first
    )
    second = await rows.first.get_attribute("data-id")
    await page.go_forward()  # the third page again, then reloaded: Newer still knows the second
    await page.locator("#tasks-info", has_text="20 tasks on this page").wait_for()
    await page.reload()
    await page.locator("#tasks-info", has_text="20 tasks on this page").wait_for()
    await page.click("text=← Newer")
    await page.wait_for_function(
        "f => document.querySelector('#tasks-table tbody tr[data-id]')?.dataset.id === f", arg=second
    )
    await page.click("text=← Newer")  # one click: the first page
    await page.wait_for_function(
        "f => document.querySelector('#tasks-table tbody tr[data-id]')?.dataset.id === f", arg=first
    )
    assert await page.is_disabled("text=← Newer")


async def test_a_bulk_cancel_names_the_tasks_it_cannot_cancel(ui: Page, system: System) -> None:
    done = await submit(system, {"type": "demo.echo", "tags": ["ui-bulk-done"]})
    await eventually(status_is(system, done, "succeeded"), timeout=60, what="succeeded")
    page = ui.page
    await ui.open("/tasks?tag=ui-bulk-done")
    await page.locator(f'#tasks-table tr[data-id="{done}"]').wait_for()
    await page.check(f'#tasks-table tr[data-id="{done}"] input[type=checkbox]')
    await page.click('button[data-bulk="cancel"]')
    text = await _confirm(page, answer="no")
    assert "cannot be cancelled" in text, text


async def test_dead_letter_pages_are_in_the_url_with_newer_and_older(ui: Page, system: System) -> None:
    kind = "demo.fail"  # one attempt: each task is dead-lettered at once
    r = await system.http.post("/v1/tasks:batch", json={"tasks": [{"type": kind, "max_attempts": 1}] * 105})
    assert r.status_code == 202, r.text

    async def dead() -> bool:
        page = (await system.http.get("/v1/dead-letters", params={"type": kind, "limit": 500})).json()
        return len(page["items"]) == 105

    await eventually(dead, timeout=90, what="105 dead letters")
    page = ui.page
    rows = page.locator("#dl-table tbody tr[data-id]")
    await ui.open(f"/dead-letters?type={kind}")
    await page.locator('button[data-page="older"]').wait_for()
    assert await rows.count() == 100 and await page.locator('button[data-page="newer"]').count() == 0
    await page.click('button[data-page="older"]')
    await page.wait_for_function("() => location.hash.includes('cursor=')")
    await page.locator('button[data-page="newer"]').wait_for()
    assert await rows.count() == 5
    await page.reload()  # the page is in the URL
    await page.locator('button[data-page="newer"]').wait_for()
    assert await rows.count() == 5
    await page.click('button[data-page="newer"]')
    await page.locator('button[data-page="older"]').wait_for()
    assert await rows.count() == 100 and "cursor=" not in page.url


async def test_an_edit_that_leaves_run_at_alone_keeps_it_to_the_millisecond(ui: Page, system: System) -> None:
    """The form shows run_at in whole seconds and sent it back every time: changing only the
    priority moved the task's run time (to the second below)."""
    waiting = await submit(system, {"type": "demo.echo", "delay": 3600})
    await eventually(status_is(system, waiting, "scheduled"), timeout=60, what="scheduled")
    before = (await task(system, waiting))["run_at"]
    page = ui.page
    await ui.open(f"/tasks/{waiting}")
    await page.click('#task-actions button[data-action="edit"]')
    await page.fill("#task-edit input[name=priority]", "2")
    await page.click("#task-edit button[type=submit]")

    async def edited() -> dict[str, object] | None:
        got = await task(system, waiting)
        return got if got["priority"] == 2 else None

    after = await eventually(edited, timeout=30, what="the priority saved")
    assert after is not None and after["run_at"] == before


async def test_a_finished_task_is_not_labelled_live(ui: Page, system: System) -> None:
    """The scrubber's label was drawn before the task's new status was read: "· live" stayed."""
    sleeper = await submit(system, {"type": "demo.sleep", "payload": {"seconds": 2}})
    page = ui.page
    await ui.open(f"/tasks/{sleeper}")
    await page.locator("#scrub-label", has_text="live").wait_for()
    await eventually(status_is(system, sleeper, "succeeded"), timeout=60, what="succeeded")
    await page.locator("#scrub-label", has_text="latest (finished)").wait_for()


async def test_enter_on_a_focused_link_opens_that_link_not_the_cursor_task(ui: Page, system: System) -> None:
    """Enter on another row's link (or a button) also opened the j/k cursor's task: the page ended
    on the wrong task, with a history entry the user never asked for."""
    first = await submit(system, {"type": "demo.echo", "delay": 3600, "tags": ["enter-key"]})
    second = await submit(system, {"type": "demo.echo", "delay": 3600, "tags": ["enter-key"]})
    page = ui.page
    await ui.open("/tasks?tag=enter-key")
    for task_id in (first, second):
        await page.locator(f'#tasks-table tr[data-id="{task_id}"]').wait_for()
    await page.locator("main").focus()
    await page.keyboard.press("j")  # the cursor on the first row: the newest, `second`
    link = page.locator(f'#tasks-table tr[data-id="{first}"] a')
    await link.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_function(f"location.hash.startsWith('#/tasks/{first}')")
    await page.locator("#task-status").wait_for()
    assert (await page.evaluate("location.hash")).startswith(f"#/tasks/{first}")
    await page.go_back()
    await page.wait_for_function("location.hash.startsWith('#/tasks?')")  # back to the list at once
