"""Screenshots for the README: overview, task list and a task timeline, light and dark, written to
docs/screenshots/ by a real browser run against the real system (set ORDO_SCREENSHOTS=0 to skip
writing them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.conftest import System
from tests.helpers import eventually
from tests.test_ui import UI_TIMEOUT_MS, Page, browser, status_is, submit

__all__ = ["browser"]
OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


async def test_screenshots_light_and_dark(browser: Any, system: System, tmp_path: Path) -> None:
    out = OUT if os.environ.get("ORDO_SCREENSHOTS", "1") != "0" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    flaky = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 2}, "tags": ["demo"]})
    ids = [
        await submit(system, {"type": "demo.echo", "payload": {"n": i}, "priority": i % 10})
        for i in range(12)
    ]
    ids.append(await submit(system, {"type": "demo.fail", "max_attempts": 2}))
    ids.append(await submit(system, {"type": "demo.sleep", "payload": {"seconds": 30}}))
    paused = await submit(system, {"type": "demo.echo", "payload": "later", "delay": 3600})
    await system.http.post(f"/v1/tasks/{paused}:pause")
    await eventually(status_is(system, flaky, "succeeded"), timeout=60, what="flaky succeeded")
    await eventually(status_is(system, ids[-2], "failed"), timeout=60, what="fail failed")
    await eventually(status_is(system, ids[-1], "running"), timeout=60, what="sleep running")
    for scheme in ("light", "dark"):
        context = await browser.new_context(viewport={"width": 1280, "height": 820}, color_scheme=scheme)
        context.set_default_timeout(UI_TIMEOUT_MS)
        ui = Page(await context.new_page(), system.base_url)
        page = ui.page
        try:
            await ui.open("/overview")
            await page.locator("#throughput svg.chart, #throughput .notice").first.wait_for()
            await page.locator("#queues table, #queues .notice").first.wait_for()
            await page.screenshot(path=str(out / f"overview-{scheme}.png"))
            await ui.open("/tasks")
            await page.locator(f'#tasks-table tr[data-id="{flaky}"]').wait_for()
            await page.screenshot(path=str(out / f"tasks-{scheme}.png"))
            await ui.open(f"/tasks/{flaky}")
            await page.locator("svg.gantt .bar-run.o-succeeded").wait_for()
            await page.eval_on_selector(
                "#scrubber", "el => { el.value = '3'; el.dispatchEvent(new Event('input')); }"
            )
            await page.locator("#asof-status .badge").wait_for()
            await page.screenshot(path=str(out / f"timeline-{scheme}.png"), full_page=True)
        finally:
            await context.close()
        assert ui.unexpected_errors() == []
    for name in ("overview", "tasks", "timeline"):
        for scheme in ("light", "dark"):
            png = out / f"{name}-{scheme}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert png.stat().st_size < 1_500_000
