"""No console error on any view, signed in or signed out, and none right after a 1,000-task batch
from the Submit page (its watch list reads each task only once the read model holds it).
Signed out, the page asks `/auth/state` (never a 401), shows "signed out" and a way back to the
form after Escape. Real Chromium against the real system."""

from __future__ import annotations

from typing import Any

from ordo.embedded.processes import free_port
from tests.conftest import System
from tests.test_ui import Page, browser, submit, ui
from tests.test_ui_gateway import _admin_key, _page, gateway

__all__ = ["browser", "ui"]
VIEWS = ["/overview", "/tasks", "/schedules", "/workers", "/dead-letters", "/submit"]


async def _visit_every_view(page: Any, ui: Page, task_id: str) -> None:
    for view in [*VIEWS, f"/tasks/{task_id}"]:
        await ui.open(view)
        await page.locator("main h1").first.wait_for()
        await page.locator("main .panel").first.wait_for()


async def test_no_console_error_on_any_view_after_a_1000_task_batch(ui: Page, system: System) -> None:
    page = ui.page
    await ui.open("/submit")
    await page.fill("input[name=copies]", "1000")
    await page.click("#submit-button")
    await page.locator("#submit-result", has_text="Submitted 1000 tasks").wait_for()
    await page.locator("#submitted tr[data-read]").nth(4).wait_for()
    one = await submit(system, {"type": "demo.echo", "payload": 1})
    await _visit_every_view(page, ui, one)
    await ui.open("/tasks")
    await page.locator("#tasks-table tbody tr[data-id]").first.wait_for()
    assert ui.errors == [], ui.errors


async def test_signed_out_logs_nothing_and_escape_is_not_a_dead_end(browser: Any, system: System) -> None:
    settings = system.settings.with_(auth=True)
    async with gateway(settings, free_port()) as base:
        secret, _ = await _admin_key(settings)
        context, ui = await _page(browser, base)
        page = ui.page
        try:
            for view in VIEWS:
                await ui.open(view)
                await page.locator("dialog#signin[open]").wait_for()
                await page.locator('#conn[data-state="signed-out"]', has_text="signed out").wait_for()
            await page.keyboard.press("Escape")
            await page.locator("dialog#signin[open]").wait_for(state="detached")
            await page.locator("#signed-out h1").wait_for()
            await page.click("#open-signin")
            await page.fill("dialog#signin[open] input[name=api_key]", secret)
            await page.click("dialog#signin button[type=submit]")
            await page.locator("#submit-form").wait_for()
            await page.locator('#conn[data-state="live"]').wait_for()
            task_id = await submit(system, {"type": "demo.echo", "payload": 1})
            await _visit_every_view(page, ui, task_id)
        finally:
            await context.close()
    assert ui.errors == [], ui.errors
