"""Screenshots for the README, light and dark, desktop (1280 px) and phone (390 px): overview, task
list, a task timeline (a running attempt with its live clock) and dead letters, written to
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
SIZES = {"": {"width": 1280, "height": 820}, "-phone": {"width": 390, "height": 844}}
NAMES = ("overview", "tasks", "timeline", "dead-letters")


async def test_screenshots_light_and_dark_desktop_and_phone(
    browser: Any, system: System, tmp_path: Path
) -> None:
    out = OUT if os.environ.get("ORDO_SCREENSHOTS", "1") != "0" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    flaky = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 2}, "tags": ["demo"]})
    ids = [
        await submit(
            system, {"type": "demo.echo", "payload": {"n": i}, "priority": i % 10, "tags": ["billing"]}
        )
        for i in range(12)
    ]
    ids.append(await submit(system, {"type": "demo.fail", "max_attempts": 2}))
    sleeper = await submit(system, {"type": "demo.sleep", "payload": {"seconds": 120}})
    paused = await submit(system, {"type": "demo.echo", "payload": "later", "delay": 3600})
    await submit(system, {"type": "demo.echo", "payload": "for nobody", "queue": "emails"})
    await system.http.post(f"/v1/tasks/{paused}:pause")
    await eventually(status_is(system, flaky, "succeeded"), timeout=60, what="flaky succeeded")
    await eventually(status_is(system, ids[-1], "failed"), timeout=60, what="fail failed")
    await eventually(status_is(system, sleeper, "running"), timeout=60, what="sleep running")
    for scheme in ("light", "dark"):
        for suffix, viewport in SIZES.items():
            context = await browser.new_context(
                viewport=viewport, color_scheme=scheme, is_mobile=bool(suffix), device_scale_factor=1
            )
            context.set_default_timeout(UI_TIMEOUT_MS)
            ui = Page(await context.new_page(), system.base_url)
            page = ui.page
            try:
                await ui.open("/overview")
                await page.locator("#throughput svg.chart, #throughput .notice").first.wait_for()
                await page.locator("#queues table, #queues .notice").first.wait_for()
                await page.screenshot(path=str(out / f"overview-{scheme}{suffix}.png"))
                await ui.open("/tasks")
                await page.locator(f'#tasks-table tr[data-id="{flaky}"]').wait_for()
                await page.screenshot(path=str(out / f"tasks-{scheme}{suffix}.png"))
                await ui.open(f"/tasks/{sleeper}")
                await page.locator("#task-clock", has_text="running for").wait_for()
                await page.locator("svg.gantt .bar-run.open").wait_for()
                await page.screenshot(path=str(out / f"timeline-{scheme}{suffix}.png"), full_page=not suffix)
                await ui.open("/dead-letters")
                await page.locator(f'#dl-table tr[data-id="{ids[-1]}"]').wait_for()
                await page.screenshot(path=str(out / f"dead-letters-{scheme}{suffix}.png"))
            finally:
                await context.close()
            assert ui.unexpected_errors() == []
    for name in NAMES:
        for scheme in ("light", "dark"):
            for suffix in SIZES:
                png = out / f"{name}-{scheme}{suffix}.png"
                assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                assert png.stat().st_size < 1_500_000
