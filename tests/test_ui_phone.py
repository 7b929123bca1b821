"""Every view on a 390 px phone (and at 1280 px): no sideways scroll (neither the page nor a table or
chart inside it), and every navigation link on screen. Real Chromium against the real system."""

from __future__ import annotations

from typing import Any

from tests.conftest import System
from tests.helpers import eventually
from tests.test_ui import UI_TIMEOUT_MS, Page, browser, status_is, submit

__all__ = ["browser"]

WIDTH = 390


async def _overflow(page: Any, width: int) -> list[str]:
    return list(
        await page.evaluate(
            """w => {
                 const out = [];
                 const clipped = (el) => {  // inside a box that clips it (and does not overflow itself)
                   for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
                     const st = getComputedStyle(p);
                     if (st.overflowX !== 'visible' && p.getBoundingClientRect().right <= w + 1) return true;
                   }
                   return false;
                 };
                 const page = document.documentElement.scrollWidth;
                 if (page > w) out.push(`page ${page}px`);
                 for (const el of document.querySelectorAll('main *')) {
                   const r = el.getBoundingClientRect();
                   const what = `${el.tagName}#${el.id}.${el.className.baseVal ?? el.className}`;
                   if (r.width && r.right > w + 1 && !clipped(el))
                     out.push(`${what} right=${Math.round(r.right)}`);
                   const scrolls = ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
                   if (scrolls && el.scrollWidth > el.clientWidth + 1)
                     out.push(`${what} scrolls sideways (${el.scrollWidth} > ${el.clientWidth})`);
                 }
                 for (const a of document.querySelectorAll('#nav a')) {
                   const r = a.getBoundingClientRect();
                   if (r.left < 0 || r.right > w) out.push(`nav ${a.textContent} off screen`);
                 }
                 return out.slice(0, 8);
               }""",
            width,
        )
    )


async def test_no_sideways_scroll_at_390_px_on_any_view(browser: Any, system: System) -> None:
    flaky = await submit(
        system, {"type": "demo.flaky", "payload": {"fail_times": 1}, "tags": ["customer:acme"]}
    )
    dead = await submit(system, {"type": "demo.fail", "max_attempts": 1})
    r = await system.http.post(
        "/v1/schedules",
        json={
            "cron": "30 2 * * *",
            "timezone": "America/New_York",
            "task": {"type": "demo.echo"},
            "description": "nightly report for a very long customer name that goes on",
        },
    )
    assert r.status_code == 201, r.text
    schedule = r.json()["id"]
    await eventually(status_is(system, flaky, "succeeded"), timeout=60, what="flaky succeeded")
    await eventually(status_is(system, dead, "failed"), timeout=60, what="failed")
    views = {
        "/overview": "#queues-table",
        "/tasks": f'#tasks-table tr[data-id="{flaky}"]',
        f"/tasks/{flaky}": "svg.gantt .bar-run.o-succeeded",
        "/schedules": f'#schedules-table tr[data-id="{schedule}"]',
        f"/schedules/{schedule}": "#policies",
        "/workers": "#workers-table",
        "/dead-letters": f'#dl-table tr[data-id="{dead}"]',
        "/submit": "#submit-form",
    }
    for scheme, width in (("light", WIDTH), ("dark", WIDTH), ("light", 1280)):
        phone = width == WIDTH
        context = await browser.new_context(
            viewport={"width": width, "height": 844}, is_mobile=phone, has_touch=phone, color_scheme=scheme
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        ui = Page(await context.new_page(), system.base_url)
        try:
            for view, ready in views.items():
                await ui.open(view)
                await ui.page.locator(ready).first.wait_for()
                assert await _overflow(ui.page, width) == [], f"{view} ({scheme}, {width}px)"
        finally:
            await context.close()
        assert ui.unexpected_errors() == []
