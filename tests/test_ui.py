"""The web UI in a real headless Chromium (Debian's `chromium`, driven by Playwright; never a
downloaded browser) against the real system: gateway + projector + scheduler + worker.

Every test asserts that the page logged no console error. Without Chromium the tests are skipped
with a clear message, except under CI=true, where a missing browser fails the run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import System
from tests.helpers import eventually

CHROMIUM = os.environ.get("ORDO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 60_000  # generous: CI machines and shared 2-core hosts are slow


def _require_browser() -> Any:
    """Playwright's async API, or skip (fail under CI=true) with the reason."""
    problem = None
    try:
        from playwright import async_api
    except ImportError:
        problem = "the `playwright` Python package is not installed (pip install -e '.[dev]')"
    if problem is None and not Path(CHROMIUM).exists():
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ORDO_CHROMIUM)"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests cannot run under CI=true: {problem}")
        pytest.skip(f"browser tests skipped: {problem}")
    return async_api


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    async_api = _require_browser()
    async with async_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


class Page:
    """A browser page on the system's gateway that records console errors and uncaught exceptions."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        self.allowed: list[str] = []
        page.on(
            "console",
            lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    async def open(self, hash_: str) -> None:
        await self.page.goto(f"{self.base_url}/#{hash_}")

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


@pytest.fixture
async def ui(browser: Any, system: System) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = Page(await context.new_page(), system.base_url)
    try:
        yield page
    finally:
        await context.close()
    assert page.unexpected_errors() == [], "the page logged console errors"


async def submit(system: System, body: dict[str, Any]) -> str:
    r = await system.http.post("/v1/tasks", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def task(system: System, task_id: str) -> dict[str, Any]:
    r = await system.http.get(f"/v1/tasks/{task_id}")
    return dict(r.json()) if r.status_code == 200 else {}


def status_is(system: System, task_id: str, *statuses: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return (await task(system, task_id)).get("status") in statuses

    return probe


async def test_submit_from_the_form_and_watch_it_succeed_without_reload(ui: Page, system: System) -> None:
    page = ui.page
    await ui.open("/submit")
    await page.evaluate("window.__noReload = true")
    await page.fill("input[name=type]", "demo.echo")
    await page.fill("textarea[name=payload]", "{oops")
    assert "not valid JSON" in await page.inner_text("#payload-error")
    await page.fill("textarea[name=payload]", '{"from": "the form"}')
    await page.click("#submit-button")
    link = page.locator("#submitted-link")
    await link.wait_for()
    task_id = await link.inner_text()
    await page.locator(f'#submitted tr[data-id="{task_id}"] .badge[data-status="succeeded"]').wait_for()
    assert await page.evaluate("window.__noReload") is True
    assert (await task(system, task_id))["result"] == {"from": "the form"}


async def test_flaky_task_shows_two_attempt_bars_and_the_retry_gap(ui: Page, system: System) -> None:
    task_id = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 1}})
    page = ui.page
    await ui.open(f"/tasks/{task_id}")  # opened while it runs: the chart grows live
    try:
        await page.locator('#task-status .badge[data-status="succeeded"]').wait_for()
    except Exception as exc:  # say whether the task or the page is behind
        _, history, _ = await system.handler.load(system.settings.tenant, task_id)
        log = [(e.seq, e.name, e.stored_at.isoformat()) for e in history]
        api = (await system.http.get(f"/v1/tasks/{task_id}")).json().get("status")
        raise AssertionError(f"page never showed succeeded; API says {api}; log: {log}") from exc
    await page.locator("svg.gantt .bar-run.o-succeeded").wait_for()
    assert await page.locator("svg.gantt .bar-run").count() >= 2
    assert await page.locator("svg.gantt .bar-run.o-failed").count() == 1
    assert await page.locator("svg.gantt .gap-backoff").count() >= 1
    assert "backoff" in (await page.text_content("svg.gantt .gap") or "")
    # the compact view: one row per attempt
    await page.click('.tabs button[data-view="compact"]')
    assert await page.locator("table.compact tbody tr").count() == 2
    assert "view=compact" in page.url


async def _scrub_to(page: Any, index: int) -> None:
    """Drag the time-travel slider to the event at `index` (as a user's drag does: an input event)."""
    await page.eval_on_selector(
        "#scrubber", "(el, i) => { el.value = String(i); el.dispatchEvent(new Event('input')); }", index
    )


async def test_scrub_to_the_first_event_shows_queued(ui: Page, system: System) -> None:
    task_id = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 1}})
    await eventually(status_is(system, task_id, "succeeded"), timeout=60, what="flaky succeeded")
    page = ui.page
    await ui.open(f"/tasks/{task_id}")
    await page.locator('#task-status .badge[data-status="succeeded"]').wait_for()
    await _scrub_to(page, 0)
    await page.locator('#asof-status .badge[data-status="queued"]').wait_for()
    # the header shows the status then beside the status now
    await page.locator('#head-asof .badge[data-status="queued"]').wait_for()
    assert await page.locator('#task-status .badge[data-status="succeeded"]').count() == 1
    assert "seq=" in page.url  # the scrubbed position is in the link


async def test_scrubber_shows_exactly_what_as_of_seq_returns(ui: Page, system: System) -> None:
    task_id = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 1}})
    await eventually(status_is(system, task_id, "succeeded"), timeout=60, what="flaky succeeded")
    events = (await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"]
    page = ui.page
    await ui.open(f"/tasks/{task_id}")
    await page.locator('#task-status .badge[data-status="succeeded"]').wait_for()
    for i, event in enumerate(events):
        await _scrub_to(page, i)
        await page.locator(f'#asof[data-seq="{event["seq"]}"]').wait_for()
        shown = json.loads(await page.inner_text("#asof-json"))
        expected = (await system.http.get(f"/v1/tasks/{task_id}", params={"as_of_seq": event["seq"]})).json()
        assert shown == expected, f"as of seq {event['seq']}"


async def test_cancel_a_running_task_from_the_ui(ui: Page, system: System) -> None:
    task_id = await submit(system, {"type": "demo.sleep", "payload": {"seconds": 30}})
    await eventually(status_is(system, task_id, "running"), timeout=60, what="sleep running")
    page = ui.page
    await ui.open(f"/tasks/{task_id}")
    await page.locator('#task-status .badge[data-status="running"]').wait_for()
    await page.click('#task-actions button[data-action="cancel"]')
    await page.click('dialog#confirm button[data-confirm="yes"]')
    await page.locator('#task-status .badge[data-status="cancelled"]').wait_for()
    assert (await task(system, task_id))["status"] == "cancelled"


async def test_filter_the_task_list_and_see_new_tasks_live(ui: Page, system: System) -> None:
    echo = [await submit(system, {"type": "demo.echo", "payload": i}) for i in range(3)]
    failed = await submit(system, {"type": "demo.fail", "max_attempts": 1})
    for task_id in [*echo, failed]:
        await eventually(status_is(system, task_id, "succeeded", "failed"), timeout=60, what="finished")
    page = ui.page
    await ui.open("/tasks")
    await page.locator(f'#tasks-table tr[data-id="{failed}"]').wait_for()
    await page.select_option("select[name=status]", "failed")
    await page.locator(f'#tasks-table tr[data-id="{echo[0]}"]').wait_for(state="detached")
    rows = page.locator("#tasks-table tbody tr[data-id]")
    assert await rows.count() == 1
    assert await rows.first.get_attribute("data-id") == failed
    assert "status=failed" in page.url
    # by type, and a new matching task appears live, then changes status in place
    await page.select_option("select[name=status]", "")
    await page.fill("input[name=type]", "demo.echo")
    await page.press("input[name=type]", "Enter")
    await page.locator(f'#tasks-table tr[data-id="{failed}"]').wait_for(state="detached")
    assert await rows.count() == 3
    new = await submit(system, {"type": "demo.echo", "payload": "live"})
    await page.locator(f'#tasks-table tr[data-id="{new}"] .badge[data-status="succeeded"]').wait_for()
    # a link reproduces the view
    await page.goto(page.url)
    await page.locator(f'#tasks-table tr[data-id="{new}"]').wait_for()
    assert await page.input_value("input[name=type]") == "demo.echo"


async def test_a_search_reads_the_list_in_stretches_and_says_so_on_an_empty_one(
    ui: Page, system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search is checked on a stretch of the list per page (tasks.SCAN_WINDOW). The page goes on
    by itself through up to ten empty stretches; past them it says so and offers Older."""
    from ordo.projections import tasks as task_list

    wanted = await submit(system, {"type": "demo.echo", "payload": "wanted"})
    newer = [await submit(system, {"type": "demo.echo", "payload": i}) for i in range(12)]
    for task_id in [wanted, *newer]:
        await eventually(status_is(system, task_id, "succeeded"), timeout=60, what="succeeded")
    page = ui.page
    empty = page.locator("#tasks-table tr.empty")
    row = page.locator(f'#tasks-table tr[data-id="{wanted}"]')

    async def search() -> None:
        await ui.open("/tasks")
        await page.locator(f'#tasks-table tr[data-id="{newer[-1]}"]').wait_for()
        await page.fill("input[name=q]", wanted)
        await page.press("input[name=q]", "Enter")

    # Stretches of 10 tasks: the first has no match, the page goes on to the next by itself.
    monkeypatch.setattr(task_list, "SCAN_WINDOW", 10)
    await search()
    await row.wait_for()
    assert await empty.count() == 0
    # Stretches of 1 task: ten of them hold only the 12 newer tasks; the page says so.
    monkeypatch.setattr(task_list, "SCAN_WINDOW", 1)
    await page.fill("input[name=q]", "")
    await page.press("input[name=q]", "Enter")
    await search()
    await empty.wait_for()
    assert "searched so far" in (await empty.inner_text())
    await page.get_by_role("button", name="Older →").click()
    await row.wait_for()
    await empty.wait_for(state="detached")


async def test_bulk_retry_from_the_task_list(ui: Page, system: System) -> None:
    ids = [await submit(system, {"type": "demo.fail", "max_attempts": 1}) for _ in range(2)]
    for task_id in ids:
        await eventually(status_is(system, task_id, "failed"), timeout=60, what="failed")
    page = ui.page
    await ui.open("/tasks?status=failed")
    for task_id in ids:
        await page.check(f'#tasks-table tr[data-id="{task_id}"] input[type=checkbox]')
    await page.click('button[data-bulk="retry"]')
    await page.click('dialog#confirm button[data-confirm="yes"]')

    async def replayed() -> bool:
        for task_id in ids:
            types = [
                e["type"] for e in (await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"]
            ]
            if "replayed" not in types:
                return False
        return True

    await eventually(replayed, timeout=60, what="both tasks replayed")


async def test_replay_a_dead_letter(ui: Page, system: System) -> None:
    task_id = await submit(system, {"type": "demo.fail", "max_attempts": 1})
    await eventually(status_is(system, task_id, "failed"), timeout=60, what="failed")
    page = ui.page
    await ui.open("/dead-letters")
    await page.click(f'#dl-table tr[data-id="{task_id}"] button[data-action="replay"]')

    async def replayed() -> bool:
        types = [e["type"] for e in (await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"]]
        return "replayed" in types

    await eventually(replayed, timeout=60, what="dead letter replayed")
    # it fails again (demo.fail) and is listed once more, live
    await eventually(status_is(system, task_id, "failed"), timeout=60, what="failed again")
    await page.locator(f'#dl-table tr[data-id="{task_id}"]').wait_for()


async def test_keyboard_navigation_and_theme(ui: Page, system: System) -> None:
    page = ui.page
    await ui.open("/overview")
    await page.locator("#counts, #throughput").first.wait_for()
    await page.keyboard.press("g")
    await page.keyboard.press("t")
    await page.locator("#tasks-table").wait_for()
    assert page.url.endswith("#/tasks")
    before = await page.evaluate("document.documentElement.dataset.theme")
    await page.keyboard.press("Shift+T")
    after = await page.evaluate("document.documentElement.dataset.theme")
    assert {before, after} == {"light", "dark"}
    await page.keyboard.press("?")
    assert await page.locator("#help[open]").count() == 1


async def test_narrow_screen_has_no_page_level_horizontal_scroll(browser: Any, system: System) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = Page(await context.new_page(), system.base_url)
    task_id = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 1}})
    await eventually(status_is(system, task_id, "succeeded"), timeout=60, what="flaky succeeded")
    try:
        for view in ("/overview", "/tasks", f"/tasks/{task_id}", "/submit"):
            await page.open(view)
            await page.page.locator("main .panel").first.wait_for()
            width = await page.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 392, f"{view} is {width}px wide on a 390px screen"
    finally:
        await context.close()
    assert page.unexpected_errors() == []


async def test_overview_shows_counts_and_the_chart(ui: Page, system: System) -> None:
    task_id = await submit(system, {"type": "demo.echo", "payload": 1})
    await eventually(status_is(system, task_id, "succeeded"), timeout=60, what="succeeded")
    page = ui.page
    await ui.open("/overview")
    if (await system.http.get("/v1/stats")).status_code != 200:
        await page.locator("#counts .notice").wait_for()
        pytest.xfail("GET /v1/stats is not on this gateway yet: the overview says 'not available'")
    await page.locator('#counts a[data-status="succeeded"]').wait_for()
    await page.locator("#throughput svg.chart").wait_for()
    before = int(await page.inner_text('#counts a[data-status="succeeded"] .n'))
    await submit(system, {"type": "demo.echo", "payload": 2})

    async def grew() -> bool:
        return int(await page.inner_text('#counts a[data-status="succeeded"] .n')) > before

    await eventually(grew, timeout=30, what="live count")


async def test_the_keyboard_cursor_stays_on_its_task_when_new_tasks_arrive(ui: Page, system: System) -> None:
    """j/k moved a row position: a task arriving at the top slid the cursor onto another task, and
    `x` (select, for a bulk cancel) or Enter then took that one."""
    tasks = [await submit(system, {"type": "demo.echo", "delay": 3600}) for _ in range(2)]
    page = ui.page
    await ui.open("/tasks")
    await page.locator(f'#tasks-table tr[data-id="{tasks[0]}"]').wait_for()
    await page.locator("body").press("j")  # the newest task: the top row
    on = page.locator("#tasks-table tr.cursor")
    await on.wait_for()
    first = await on.get_attribute("data-id")
    arrived = await submit(system, {"type": "demo.echo", "delay": 3600})
    await page.locator(f'#tasks-table tbody tr[data-id="{arrived}"]').wait_for()
    assert await page.locator("#tasks-table tbody tr[data-id]").first.get_attribute("data-id") == arrived
    assert await on.get_attribute("data-id") == first  # still on its task, now the second row
    await page.locator("body").press("x")
    await page.locator(f'#tasks-table tr.selected[data-id="{first}"]').wait_for()
    assert await page.locator(f'#tasks-table tr.selected[data-id="{arrived}"]').count() == 0
    assert ui.unexpected_errors() == []
