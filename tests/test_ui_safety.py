"""Destructive and bulk actions in the UI ask first, and the question names how many tasks and which
filter; the Dead-letters form always shows the filter the list and "Replay all matching" use
(Back included). Real Chromium against the real system."""

from __future__ import annotations

from typing import Any

from tests.conftest import System
from tests.helpers import eventually
from tests.test_ui import Page, browser, status_is, submit, task, ui

__all__ = ["browser", "ui"]


async def _types(system: System, task_id: str) -> list[str]:
    events = (await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"]
    return [e["type"] for e in events]


async def _dialog_text(page: Any) -> str:
    dialog = page.locator("dialog#confirm[open]")
    await dialog.wait_for()
    return str(await dialog.inner_text())


async def test_dead_letters_form_follows_back_and_replay_all_names_count_and_filter(
    ui: Page, system: System
) -> None:
    fails = [await submit(system, {"type": "demo.fail", "max_attempts": 1}) for _ in range(2)]
    flaky = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 5}, "max_attempts": 1})
    for task_id in [*fails, flaky]:
        await eventually(status_is(system, task_id, "failed"), timeout=60, what="dead letter")
    page = ui.page
    await ui.open("/dead-letters?type=demo.fail")
    await page.locator(f'#dl-table tr[data-id="{fails[0]}"]').wait_for()
    await page.fill("input[name=type]", "demo.flaky")
    await page.press("input[name=type]", "Enter")
    await page.locator(f'#dl-table tr[data-id="{flaky}"]').wait_for()
    await page.go_back()
    # the list, the URL and the form agree again
    await page.locator(f'#dl-table tr[data-id="{fails[0]}"]').wait_for()
    assert await page.input_value("input[name=type]") == "demo.fail"
    assert await page.locator(f'#dl-table tr[data-id="{flaky}"]').count() == 0
    # a filter typed but not applied: mass replay is refused until it is
    await page.fill("input[name=type]", "demo.flaky")
    assert await page.locator('button[data-action="replay-all"]').is_disabled()
    assert await page.locator("#dl-dirty").is_visible()
    await page.fill("input[name=type]", "demo.fail")
    assert await page.locator('button[data-action="replay-all"]').is_enabled()
    # the question names the count and the filter; Keep does nothing
    await page.click('button[data-action="replay-all"]')
    text = await _dialog_text(page)
    assert "Replay 2 dead letters?" in text and "type demo.fail" in text, text
    await page.click('dialog#confirm button[data-confirm="no"]')
    await page.locator("dialog#confirm").wait_for(state="detached")
    assert "replayed" not in await _types(system, fails[0])
    await page.click('button[data-action="replay-all"]')
    await _dialog_text(page)
    await page.click('dialog#confirm button[data-confirm="yes"]')

    async def both_replayed() -> bool:
        return all(["replayed" in await _types(system, t) for t in fails])

    await eventually(both_replayed, timeout=60, what="the two demo.fail letters replayed")
    assert "replayed" not in await _types(system, flaky)


async def test_the_c_key_asks_before_cancelling_a_running_task(ui: Page, system: System) -> None:
    task_id = await submit(system, {"type": "demo.sleep", "payload": {"seconds": 30}})
    await eventually(status_is(system, task_id, "running"), timeout=60, what="sleep running")
    page = ui.page
    await ui.open(f"/tasks/{task_id}")
    await page.locator('#task-status .badge[data-status="running"]').wait_for()
    await page.keyboard.press("c")
    text = await _dialog_text(page)
    assert "Cancel this running task?" in text and task_id in text, text
    await page.keyboard.press("Escape")
    await page.locator("dialog#confirm").wait_for(state="detached")
    assert "cancel_requested" not in await _types(system, task_id)
    assert (await task(system, task_id))["status"] == "running"
    await page.keyboard.press("c")
    await _dialog_text(page)
    await page.click('dialog#confirm button[data-confirm="yes"]')
    await page.locator('#task-status .badge[data-status="cancelled"]').wait_for()


async def test_bulk_cancel_asks_with_the_count_and_the_filter(ui: Page, system: System) -> None:
    ids = [await submit(system, {"type": "demo.echo", "payload": i, "delay": 3600}) for i in range(2)]
    for task_id in ids:
        await eventually(status_is(system, task_id, "scheduled"), timeout=60, what="scheduled")
    page = ui.page
    await ui.open("/tasks?status=scheduled&type=demo.echo")
    for task_id in ids:
        await page.check(f'#tasks-table tr[data-id="{task_id}"] input[type=checkbox]')
    await page.click('button[data-bulk="cancel"]')
    text = await _dialog_text(page)
    assert "Cancel 2 selected tasks?" in text and "status scheduled, type demo.echo" in text, text
    await page.click('dialog#confirm button[data-confirm="no"]')
    await page.locator("dialog#confirm").wait_for(state="detached")
    assert all([(await task(system, t))["status"] == "scheduled" for t in ids])
    await page.click('button[data-bulk="cancel"]')
    await _dialog_text(page)
    await page.click('dialog#confirm button[data-confirm="yes"]')
    for task_id in ids:
        await eventually(status_is(system, task_id, "cancelled"), timeout=60, what="cancelled")


async def test_drain_asks_first(ui: Page, system: System) -> None:
    page = ui.page
    await ui.open("/workers")
    button = page.locator('#workers button[data-action="drain"]').first
    await button.wait_for()
    worker_id = await page.locator("#workers tr[data-id]").first.get_attribute("data-id")
    await button.click()
    text = await _dialog_text(page)
    assert f"Drain worker {worker_id}?" in text, text
    await page.click('dialog#confirm button[data-confirm="no"]')
    await page.locator("dialog#confirm").wait_for(state="detached")
    workers = (await system.http.get("/v1/workers")).json()["items"]
    assert {w["id"]: w["status"] for w in workers}[worker_id] == "online"
