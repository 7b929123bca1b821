"""Accessibility of every view, light and dark, checked in real Chromium by a small checker of our own
(axe-core is not in the registries CI uses without Node.js tooling): the checks behind axe's
"serious" rules that apply to this UI — text contrast (AA: 4.5:1, 3:1 for large text; the primary
button hovered too), one <h1> per view, banner/navigation/main landmarks, a skip link, the current
page marked in the nav, and a name for every control, link and table."""

from __future__ import annotations

from typing import Any

from tests.conftest import System
from tests.helpers import eventually
from tests.test_ui import UI_TIMEOUT_MS, Page, browser, status_is, submit

__all__ = ["browser"]

CHECK = r"""
() => {
  const problems = [];
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [r, g, b, a];
  };
  const over = (top, under) => top.slice(0, 3).map((v, i) => v * top[3] + under[i] * (1 - top[3])).concat(1);
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const ratio = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    const st = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && st.visibility !== 'hidden' && st.display !== 'none'
      && !el.closest('[hidden], #toasts, svg, dialog:not([open])');
  };
  // contrast of every element that holds text itself
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || seen.has(el) || !visible(el)) continue;
    seen.add(el);
    if (el.closest('button:disabled, input:disabled, select:disabled, option, .skip')) continue;
    const st = getComputedStyle(el);
    let fg = parse(st.color);
    if (!fg) continue;
    let opacity = 1;
    for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
    const bg = background(el);
    fg = over([...fg.slice(0, 3), fg[3] * opacity], bg);
    const size = parseFloat(st.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
    const need = large ? 3 : 4.5;
    const got = ratio(fg, bg);
    const what = `"${n.textContent.trim().slice(0, 30)}" (${el.tagName}.${el.className})`;
    if (got < need) problems.push(`contrast ${got.toFixed(2)} < ${need}: ${what}`);
  }
  // structure
  const h1 = document.querySelectorAll('main h1');
  if (h1.length !== 1) problems.push(`${h1.length} <h1> in main`);
  if (!document.querySelector('header')) problems.push('no banner');
  if (!document.querySelector('nav[aria-label]')) problems.push('no labelled navigation');
  if (document.querySelectorAll('main').length !== 1) problems.push('not exactly one main');
  const first = document.querySelector('body a, body button, body input');
  if (!first || !first.classList.contains('skip')) problems.push('the first focusable is not a skip link');
  if (!document.querySelector('#nav a[aria-current="page"]')) problems.push('no current page in the nav');
  // names
  const byId = (id) => (id ? document.getElementById(id)?.textContent : '');
  const name = (el) => (el.getAttribute('aria-label')
    || byId(el.getAttribute('aria-labelledby'))
    || (el.labels && [...el.labels].map((l) => l.textContent).join(' '))
    || (['BUTTON', 'A'].includes(el.tagName) ? el.textContent : '')
    || el.getAttribute('title') || '').trim();
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a[href]')) {
    if (!visible(el) && !el.closest('table.cards thead')) continue;
    if (!name(el)) problems.push(`no name: ${el.outerHTML.slice(0, 80)}`);
  }
  for (const t of document.querySelectorAll('main table')) {
    if (!t.getAttribute('aria-label') && !t.querySelector('caption')) problems.push(`unnamed table #${t.id}`);
  }
  const ids = [...document.querySelectorAll('[id]')].map((e) => e.id);
  const dup = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (dup.length) problems.push(`duplicate ids: ${[...new Set(dup)].join(', ')}`);
  return problems;
}
"""


async def test_no_serious_accessibility_problem_on_any_view(browser: Any, system: System) -> None:
    flaky = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 1}})
    dead = await submit(system, {"type": "demo.fail", "max_attempts": 1})
    cancelled = await submit(system, {"type": "demo.echo", "delay": 3600})
    await submit(system, {"type": "demo.echo", "delay": 3600})
    await system.http.post(f"/v1/tasks/{cancelled}:cancel")
    r = await system.http.post(
        "/v1/schedules",
        json={"cron": "*/2 * * * *", "timezone": "Europe/Berlin", "task": {"type": "demo.echo"}},
    )
    schedule = r.json()["id"]
    await eventually(status_is(system, flaky, "succeeded"), timeout=60, what="flaky succeeded")
    await eventually(status_is(system, dead, "failed"), timeout=60, what="failed")
    await eventually(status_is(system, cancelled, "cancelled"), timeout=60, what="cancelled")
    views = {
        "/overview": "#queues-table",
        "/tasks": f'#tasks-table tr[data-id="{cancelled}"]',
        f"/tasks/{flaky}": "svg.gantt .bar-run.o-succeeded",
        "/schedules": f'#schedules-table tr[data-id="{schedule}"]',
        f"/schedules/{schedule}": "#policies",
        "/workers": "#workers-table",
        "/dead-letters": f'#dl-table tr[data-id="{dead}"]',
        "/submit": "#submit-form",
    }
    for scheme in ("light", "dark"):
        for width in (1280, 390):
            context = await browser.new_context(viewport={"width": width, "height": 860}, color_scheme=scheme)
            context.set_default_timeout(UI_TIMEOUT_MS)
            ui = Page(await context.new_page(), system.base_url)
            page = ui.page
            try:
                for view, ready in views.items():
                    await ui.open(view)
                    await page.locator(ready).first.wait_for()
                    await page.evaluate("document.getAnimations().forEach(a => a.finish())")
                    assert await page.evaluate(CHECK) == [], f"{view} {scheme} {width}px"
                # the primary button, hovered, stays readable
                await page.hover("#submit-button")
                await page.evaluate("document.getAnimations().forEach(a => a.finish())")
                assert await page.evaluate(CHECK) == [], f"hovered Submit, {scheme}"
                # the skip link (the first Tab stop) moves the keyboard to the content
                await ui.open("/tasks")
                await page.locator("#tasks-table").wait_for()
                await page.keyboard.press("Tab")
                assert await page.evaluate("document.activeElement.id") == "skip"
                await page.keyboard.press("Enter")
                assert await page.evaluate("document.activeElement.id") == "view"
            finally:
                await context.close()
            assert ui.unexpected_errors() == []
