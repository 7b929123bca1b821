"""The viewer with timelines served a page at a time (`ORDO_TIMELINE_PAGE` of 2): a task's page reads
every page and shows its whole life; a schedule's page shows its latest decisions, newest first, and
says that older ones exist. Real Chromium, real system."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from tests.conftest import System, run_system
from tests.test_timeline_pages import schedule_with_four_decisions, task_with_five_events
from tests.test_ui import UI_TIMEOUT_MS, Page, browser

__all__ = ["browser"]


@pytest.fixture
async def paged(settings: Settings, nc: NATS, handler: CommandHandler) -> AsyncIterator[System]:
    async with run_system(settings.with_(timeline_page=2), nc, handler, worker=False) as sys_:
        yield sys_


@pytest.fixture
async def ui(browser: Any, paged: System) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield Page(await context.new_page(), paged.base_url)
    finally:
        await context.close()


async def test_a_task_page_reads_every_page_of_its_timeline(ui: Page, paged: System) -> None:
    http = paged.http
    task_id, last = await task_with_five_events(http)
    events = (await http.get(f"/v1/tasks/{task_id}/events", params={"min_seq": last})).json()
    assert len(events["events"]) == 2 and events["next_after"] is not None  # the gateway pages by 2
    await ui.open(f"/tasks/{task_id}")
    await ui.page.locator(f'tr.ev[data-seq="{last}"]').wait_for()
    kinds = await ui.page.eval_on_selector_all("tr.ev .ev-type", "cells => cells.map(c => c.textContent)")
    assert kinds == ["submitted", "scheduled", "paused", "resumed", "cancelled"]
    assert ui.unexpected_errors() == []


async def test_a_schedule_page_shows_its_latest_decisions_first(
    ui: Page, paged: System, settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    async with schedule_with_four_decisions(paged, "ui-paged-timeline", settings, nc, handler) as sid:
        await ui.open(f"/schedules/{sid}")
        await ui.page.locator("#decisions-shown").wait_for()
        rows = await ui.page.eval_on_selector_all(
            "#decisions tbody tr", "rows => rows.map(r => r.cells[1].textContent)"
        )
        assert rows == ["triggered", "resumed"], rows  # the newest two, newest first
        # The chart is drawn at its box's width (a fixed 1,000 units shrank its labels to 4 px on a phone).
        drawn, box = await ui.page.evaluate(
            "() => { const c = document.querySelector('.gantt-wrap svg');"
            " return [c.viewBox.baseVal.width, c.parentNode.clientWidth]; }"
        )
        assert abs(drawn - box) <= 1, (drawn, box)
        await ui.page.click("#decisions-older")
        await ui.page.locator("#decisions-shown", has_text="older decisions").wait_for()
        rows = await ui.page.eval_on_selector_all(
            "#decisions tbody tr", "rows => rows.map(r => r.cells[1].textContent)"
        )
        assert rows == ["paused", "created"], rows
        assert await ui.page.is_disabled("#decisions-older")  # the oldest page
        await ui.page.click("#decisions-newer")
        await ui.page.locator("#decisions-shown", has_text="The latest").wait_for()
        assert await ui.page.is_disabled("#decisions-newer")
        # A double click on Older turns one page: Newer then comes back to the latest.
        await ui.page.dblclick("#decisions-older")
        await ui.page.locator("#decisions-shown", has_text="older decisions").wait_for()
        await ui.page.click("#decisions-newer")
        await ui.page.locator("#decisions-shown", has_text="The latest").wait_for()
        assert ui.unexpected_errors() == []
