"""The task list is patched in place by live refreshes: a listed row keeps its DOM element, its
checkbox keeps the keyboard focus and its tick, while its status changes and new rows arrive."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import System
from tests.helpers import eventually
from tests.test_ui import Page, browser, status_is, submit, ui

__all__ = ["browser", "ui"]


async def test_a_listed_row_survives_live_refreshes(ui: Page, system: System) -> None:
    # Running long enough for the page to load and show it running (seconds on a loaded machine).
    sleeper = await submit(system, {"type": "demo.sleep", "payload": {"seconds": 6}})
    await eventually(status_is(system, sleeper, "running"), timeout=60, what="sleep running")
    page = ui.page
    await ui.open("/tasks")
    row = f'#tasks-table tr[data-id="{sleeper}"]'
    await page.locator(f'{row} .badge[data-status="running"]').wait_for()
    await page.focus(f"{row} input[type=checkbox]")
    await page.keyboard.press("Space")  # ticked from the keyboard; focus stays on the box
    await page.evaluate(
        """sel => { window.__row = document.querySelector(sel);
                    window.__box = window.__row.querySelector('input[type=checkbox]');
                    window.__cells = [...window.__row.children]; }""",
        row,
    )
    # two kinds of live refresh: the row's own status change, and new tasks on the first page
    await page.locator(f'{row} .badge[data-status="succeeded"]').wait_for()
    newer = [await submit(system, {"type": "demo.echo", "payload": i}) for i in range(3)]
    for task_id in newer:
        await page.locator(f'#tasks-table tr[data-id="{task_id}"] .badge[data-status="succeeded"]').wait_for()
    kept = await page.evaluate(
        """sel => ({ same: document.querySelector(sel) === window.__row,
                     attached: window.__row.isConnected,
                     cells: window.__cells.every((c, i) => window.__row.children[i] === c),
                     focus: document.activeElement === window.__box,
                     checked: window.__box.checked })""",
        row,
    )
    assert kept == {"same": True, "attached": True, "cells": True, "focus": True, "checked": True}, kept


async def test_the_overview_feed_starts_with_the_events_already_seen(ui: Page, system: System) -> None:
    page = ui.page
    await ui.open("/tasks")
    await page.locator('#conn[data-state="live"]').wait_for()
    task_id = await submit(system, {"type": "demo.echo", "payload": "seen elsewhere"})
    await page.locator(f'#tasks-table tr[data-id="{task_id}"] .badge[data-status="succeeded"]').wait_for()
    await page.click('#nav a[data-view="overview"]')
    feed = page.locator("#feed li")
    await feed.first.wait_for()
    assert await page.locator(f'#feed a[href="#/tasks/{task_id}"]').count() >= 2  # submitted ... succeeded


async def test_a_change_committed_while_the_page_is_being_read_is_shown(ui: Page, system: System) -> None:
    """A page read that saw the task before its success, answered only after the success reached the
    page: the row is not on screen yet when the event comes, and the list reads again after."""
    page = ui.page
    await ui.open("/tasks")
    await page.locator('#conn[data-state="live"]').wait_for()
    sleeper: list[str] = []
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold_one_stale_read(route: Any) -> None:
        response = await route.fetch()
        items = (await response.json()).get("items", []) if response.ok else []
        stale = [t for t in items if sleeper and t["id"] == sleeper[0] and t["status"] != "succeeded"]
        if stale and not held.is_set():
            held.set()
            await release.wait()
        await route.fulfill(response=response)

    await page.route("**/v1/tasks?*", hold_one_stale_read)
    sleeper.append(await submit(system, {"type": "demo.sleep", "payload": {"seconds": 3}}))
    row = f'#tasks-table tr[data-id="{sleeper[0]}"]'

    async def held_read() -> bool:
        return held.is_set()

    await eventually(held_read, timeout=60, what="a read of the page showing the task unfinished")
    await eventually(status_is(system, sleeper[0], "succeeded"), timeout=60, what="sleep succeeded")
    events = (await system.http.get(f"/v1/tasks/{sleeper[0]}/events")).json()["events"]
    last = max(e["seq"] for e in events)

    async def delivered() -> bool:
        return bool(await page.evaluate("s => window.ordo.seqs.includes(s)", last))

    await eventually(delivered, timeout=60, what="the success delivered to the page")
    assert await page.locator(row).count() == 0  # the held read is the one that would show it
    release.set()
    await page.locator(f'{row} .badge[data-status="succeeded"]').wait_for()


async def test_a_task_that_moves_into_a_status_filter_appears_without_a_reload(
    ui: Page, system: System
) -> None:
    """A list filtered by status re-read only for rows it showed and for submits: a task that failed
    (or started running) after the page was read never appeared until a reload."""
    page = ui.page
    await ui.open("/tasks?status=failed")
    await page.locator("#tasks-table").wait_for()
    # delayed: the re-read that its `submitted` brings comes well before it fails
    task_id = await submit(system, {"type": "demo.fail", "max_attempts": 1, "delay": 2})
    await eventually(status_is(system, task_id, "failed"), timeout=60, what="the task failed")
    await page.locator(f'#tasks-table tr[data-id="{task_id}"] .badge[data-status="failed"]').wait_for()


async def test_durations_never_show_sixty_seconds_or_minutes(ui: Page) -> None:
    await ui.open("/tasks")
    await ui.page.locator("#tasks-table").wait_for()
    got = await ui.page.evaluate(
        """async () => { const { dur } = await import("/js/dom.js");
                         return [dur(999.7), dur(59_996), dur(119_600), dur(3_599_700), dur(7_199_999)]; }"""
    )
    assert got == ["1.00s", "1m 0s", "2m 0s", "1h 0m", "2h 0m"]
