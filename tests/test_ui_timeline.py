"""The task timeline between events and after them: a running attempt's bar, elapsed clock and lease
countdown move with no new event; finished attempts draw no lease; a task delayed one hour gets
an axis in minutes and its run-at time; no label overprints another. Real Chromium, real system."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from tests.conftest import System, run_system
from tests.helpers import eventually
from tests.test_ui import Page, browser, status_is, submit, ui

__all__ = ["browser", "ui"]


@pytest.fixture
async def slow_lease(settings: Settings, nc: NATS, handler: CommandHandler) -> AsyncIterator[System]:
    """The system with production lease timing: one lease extension every 10 s."""
    async with run_system(settings.with_(ack_wait_s=30.0, lease_extend_every_s=10.0), nc, handler) as sys_:
        yield sys_


async def _event_count(system: System, task_id: str) -> int:
    return len((await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"])


async def test_a_running_task_page_changes_over_3_s_with_no_new_event(
    browser: Any, slow_lease: System
) -> None:
    system = slow_lease
    task_id = await submit(system, {"type": "demo.sleep", "payload": {"seconds": 25}})
    await eventually(status_is(system, task_id, "running"), timeout=60, what="sleep running")
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    ui = Page(await context.new_page(), system.base_url)
    page = ui.page
    try:
        await ui.open(f"/tasks/{task_id}")
        await page.locator("#task-clock", has_text="running for").wait_for()
        for _ in range(3):  # a lease extension (every 10 s) may fall inside a window: try the next one
            before_events = await _event_count(system, task_id)
            before = await page.evaluate(
                """() => ({ clock: document.querySelector('#task-clock').textContent,
                            bar: +document.querySelector('svg.gantt .bar-run.open').dataset.ms,
                            events: document.querySelector('#scrubber').max })"""
            )
            # within 3 s and with no event, the clock and the open bar move on their own
            await page.wait_for_function(
                """b => document.querySelector('#task-clock').textContent !== b.clock
                       && +document.querySelector('svg.gantt .bar-run.open').dataset.ms >= b.bar + 2000""",
                arg=before,
                timeout=3500,
            )
            after = await page.evaluate(
                """() => ({ clock: document.querySelector('#task-clock').textContent,
                            bar: +document.querySelector('svg.gantt .bar-run.open').dataset.ms,
                            events: document.querySelector('#scrubber').max })"""
            )
            if await _event_count(system, task_id) != before_events or after["events"] != before["events"]:
                continue
            assert after["clock"] != before["clock"], (before, after)
            assert "ack deadline in" in after["clock"], after
            assert after["bar"] >= before["bar"] + 2000, (before, after)
            break
        else:
            pytest.fail("no 3 s window without an event")
    finally:
        await context.close()
    assert ui.unexpected_errors() == []


async def _no_overprint(page: Any) -> None:
    boxes = await page.eval_on_selector_all(
        "svg.gantt text",
        """ts => ts.filter(t => t.textContent).map(t => {
             const b = t.getBBox();
             return [t.textContent, b.x, b.y, b.width, b.height];
           })""",
    )
    for i, (ta, xa, ya, wa, ha) in enumerate(boxes):
        for tb, xb, yb, wb, hb in boxes[i + 1 :]:
            overlap = xa < xb + wb - 0.5 and xb < xa + wa - 0.5 and ya < yb + hb - 0.5 and yb < ya + ha - 0.5
            assert not overlap, f"{ta!r} overprints {tb!r}"


async def test_finished_attempts_have_no_lease_and_a_delayed_task_shows_its_run_at(
    ui: Page, system: System
) -> None:
    flaky = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 1}})
    later = await submit(system, {"type": "demo.echo", "payload": 1, "delay": 3600})
    await eventually(status_is(system, flaky, "succeeded"), timeout=60, what="flaky succeeded")
    page = ui.page
    await ui.open(f"/tasks/{flaky}")
    await page.locator("svg.gantt .bar-run.o-succeeded").wait_for()
    assert await page.locator("svg.gantt .lease, svg.gantt .deadline").count() == 0
    assert "deadline" not in (await page.text_content("svg.gantt") or "")
    await _no_overprint(page)
    await ui.open(f"/tasks/{later}")
    await page.locator("svg.gantt .run-at").wait_for()
    text = await page.text_content("svg.gantt") or ""
    assert "runs at +1h" in text or "runs at +59m" in text, text
    last_tick = await page.locator("svg.gantt .axis text").last.text_content()
    assert last_tick is not None and ("h" in last_tick or "m " in last_tick), last_tick
    await page.locator("#task-clock", has_text="runs in").wait_for()
    await _no_overprint(page)
