"""The UI's follow-ups of an edit that sends only what changed (commit c0de588): a `?seq=` that is not
one of the task's events shows the latest and says so; event rows answer Enter and Space as a click
does; a bulk cancel shows its progress, allows one bulk action at a time and asks before the page is
left; the focus returns where it was after the help or the sign-in form closes; the queues panel's
empty state; the chart's axis labels are distinct; a dead-letter answer older than the newest load is
dropped. Real Chromium against the real system; requests are held with `page.route`, never slept on."""

from __future__ import annotations

import asyncio
from typing import Any

from ordo.embedded.processes import free_port
from tests.conftest import System
from tests.helpers import eventually
from tests.test_ui import Page, browser, status_is, submit, ui
from tests.test_ui_gateway import _page, gateway
from tests.test_ui_operations import _confirm

__all__ = ["browser", "ui"]

FOCUSED = "() => { const a = document.activeElement; return a?.id || a?.dataset.seq || a?.tagName; }"
BULK_COUNT = ".bulkbar > span.muted.small:not(#tasks-info)"
# Whether leaving the page now would ask first (a `beforeunload` listener that prevents it).
LEAVE = """() => {
  const e = new Event("beforeunload", { cancelable: true });
  dispatchEvent(e);
  return e.defaultPrevented;
}"""
# Every response body the page reads, by URL, recorded once it is read: the code awaiting it has run
# (its continuation is a chain of microtasks) by the time a later evaluation sees the URL here.
RECORD_READS = """
window.__read = [];
const text_ = Response.prototype.text;
Response.prototype.text = function () {
  const url = this.url;
  return text_.call(this).then((t) => { window.__read.push(url); return t; });
};
"""


async def _events(system: System, task_id: str) -> list[dict[str, Any]]:
    r = await system.http.get(f"/v1/tasks/{task_id}/events")
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


async def test_a_seq_that_is_not_the_tasks_shows_the_latest_and_says_so(ui: Page, system: System) -> None:
    """A `?seq=` of another task's event put the scrubber on the first event, labelled as no position
    at all, with nothing said; now the page shows the latest, says so and drops it from the URL."""
    mine = await submit(system, {"type": "demo.echo", "payload": "mine"})
    other = await submit(system, {"type": "demo.echo", "payload": "other"})
    for task_id in (mine, other):
        await eventually(status_is(system, task_id, "succeeded"), timeout=60, what="succeeded")
    own = [e["seq"] for e in await _events(system, mine)]
    foreign = next(e["seq"] for e in await _events(system, other) if e["seq"] not in own)
    page = ui.page
    await ui.open(f"/tasks/{mine}?seq={foreign}")
    label = page.locator("#scrub-label", has_text="seq")
    await label.wait_for()  # drawn after the check of the cursor
    text = await label.inner_text()
    assert text.startswith(f"event {len(own)} of {len(own)}") and "latest (finished)" in text, text
    toast = page.locator("#toasts .toast", has_text=f"sequence {foreign} is not one of this task's events")
    await toast.wait_for()
    assert "showing the latest" in await toast.inner_text()
    assert "seq=" not in page.url, page.url
    assert await page.input_value("#scrubber") == str(len(own) - 1)
    assert await page.locator("#events-view tr.ev.at-cursor").count() == 0


async def test_event_rows_answer_enter_and_space_as_a_click_does(ui: Page, system: System) -> None:
    """The rows of the event list scrubbed on a click only: they were not focusable, and a key did
    nothing. Each answers Enter and Space now, as its click does, and keeps the focus through the
    rows' redraw (a keyboard user could press once, then had to find the list again)."""
    task_id = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 1}})
    await eventually(status_is(system, task_id, "succeeded"), timeout=60, what="flaky succeeded")
    seqs = [e["seq"] for e in await _events(system, task_id)]
    assert len(seqs) >= 3, seqs
    page = ui.page
    await ui.open(f"/tasks/{task_id}")
    await page.locator('#task-status .badge[data-status="succeeded"]').wait_for()
    # Whether the key's own action (Space scrolls) was prevented, seen last on its way up.
    await page.evaluate(
        "() => addEventListener('keydown', (e) => { window.__prevented = e.defaultPrevented; })"
    )
    await page.locator(f'#events-view tr.ev[data-seq="{seqs[0]}"]').focus()
    for key, seq in (("Enter", seqs[0]), ("Space", seqs[1])):
        # A keyboard user's way: the first row focused, Enter, then Tab to the next row and Space.
        assert await page.evaluate(FOCUSED) == str(seq), f"the row of seq {seq} has no focus"
        await page.keyboard.press(key)
        # The row's handler scrubs at once (in the key's own event): a short wait is enough.
        await page.wait_for_function("s => location.hash.includes(`seq=${s}`)", arg=seq, timeout=10_000)
        await page.locator(f'#events-view tr.ev.at-cursor[data-seq="{seq}"]').wait_for()
        await page.locator(f'#asof[data-seq="{seq}"]').wait_for()  # the state then, as a click shows it
        assert await page.evaluate("() => window.__prevented") is True, f"{key} also did its own default"
        # The rows are drawn anew: the focus stays on the row (it fell to <body>).
        assert await page.evaluate(FOCUSED) == str(seq), f"{key} dropped the focus of row {seq}"
        await page.keyboard.press("Tab")


async def test_a_bulk_cancel_shows_its_progress_and_asks_before_the_page_is_left(
    ui: Page, system: System
) -> None:
    """A bulk cancel ran silently: nothing said how far it was, a second one could start beside it and
    leaving the page dropped the rest without a word. Each command is held here until released."""
    tag = "ui-bulk-progress"
    ids = [await submit(system, {"type": "demo.echo", "delay": 3600, "tags": [tag]}) for _ in range(3)]
    for task_id in ids:
        await eventually(status_is(system, task_id, "scheduled"), timeout=60, what="scheduled")
    page = ui.page
    held: list[tuple[Any, asyncio.Event]] = []

    async def hold(route: Any) -> None:
        gate = asyncio.Event()
        held.append((route, gate))
        await gate.wait()
        await route.continue_()

    await page.route(lambda url: url.endswith(":cancel"), hold)
    await ui.open(f"/tasks?tag={tag}")
    for task_id in ids:
        await page.check(f'#tasks-table tr[data-id="{task_id}"] input[type=checkbox]')
    count = page.locator(BULK_COUNT)
    await count.filter(has_text="3 selected").wait_for()
    await page.click('button[data-bulk="cancel"]')
    assert "Cancel 3 selected tasks?" in await _confirm(page)

    async def all_held() -> bool:
        return len(held) == len(ids)

    await eventually(all_held, timeout=60, what="the three cancels sent")
    # None answered yet: the progress stands still at nothing sent.
    assert await count.inner_text() == "Cancel: 0 of 3 sent…"
    # One bulk action at a time: neither bulk button starts another while this one runs.
    assert await page.is_disabled('button[data-bulk="cancel"]'), "a second bulk cancel can start"
    assert await page.is_disabled('button[data-bulk="retry"]'), "a bulk retry can start beside it"
    assert await page.evaluate(LEAVE) is True, "leaving the page mid-way is not asked about"
    for done, (_, gate) in enumerate(held, start=1):
        gate.set()
        if done < len(ids):
            await count.filter(has_text=f"Cancel: {done} of 3 sent…").wait_for()
    await page.locator("#toasts .toast", has_text="cancel: 3 accepted").wait_for()
    await page.wait_for_function(
        "s => !document.querySelector(s).textContent.includes('sent')", arg=BULK_COUNT
    )
    assert await page.evaluate(LEAVE) is False, "still asks once the bulk action is over"
    for task_id in ids:
        await eventually(status_is(system, task_id, "cancelled"), timeout=60, what="cancelled")


async def test_the_focus_returns_where_it_was_when_the_help_closes(ui: Page, system: System) -> None:
    """The help took the focus when it opened and kept it, hidden, when it closed (Escape or "?")."""
    page = ui.page
    await ui.open("/overview")
    await page.locator('#conn[data-state="live"]').wait_for()
    link = '#nav a[data-view="tasks"]'
    for close in ("Escape", "?"):
        await page.locator(link).focus()
        await page.keyboard.press("?")
        await page.locator("#help[open]").wait_for()
        assert await page.evaluate(FOCUSED) == "help"
        await page.keyboard.press(close)
        await page.locator("#help[open]").wait_for(state="detached")
        assert await page.evaluate(f"() => document.activeElement === document.querySelector('{link}')"), (
            f"after {close}: {await page.evaluate(FOCUSED)}"
        )
    # Opened with its button: the focus goes back to the button.
    await page.click("#help-button")
    await page.locator("#help[open]").wait_for()
    await page.keyboard.press("Escape")
    await page.locator("#help[open]").wait_for(state="detached")
    assert await page.evaluate(FOCUSED) == "help-button"


async def test_the_focus_goes_to_sign_in_when_the_form_is_escaped(browser: Any, system: System) -> None:
    """The sign-in form, shown at start, escaped: the focus fell to <body>; now it is on the page's
    own "Sign in", which opens the form again."""
    settings = system.settings.with_(auth=True)
    async with gateway(settings, free_port()) as base:
        context, ui_ = await _page(browser, base)
        page = ui_.page
        try:
            await ui_.open("/overview")
            await page.locator("dialog#signin[open] input[name=api_key]").wait_for()
            assert await page.evaluate("() => document.activeElement?.name") == "api_key"
            await page.keyboard.press("Escape")
            await page.locator("dialog#signin[open]").wait_for(state="detached")
            # The dialog's `close` event, which moves the focus, comes in a task after [open] is gone.
            try:
                await page.wait_for_function(
                    "() => document.activeElement?.id === 'open-signin'", timeout=10_000
                )
            except Exception as exc:
                raise AssertionError(f"the focus is on {await page.evaluate(FOCUSED)}, not Sign in") from exc
            await page.keyboard.press("Enter")  # the focused "Sign in" opens the form again
            await page.locator("dialog#signin[open] input[name=api_key]").wait_for()
        finally:
            await context.close()
    assert ui_.unexpected_errors() == []


async def test_the_queues_panel_says_there_are_no_queues_yet(ui: Page, system: System) -> None:
    """A system without tasks has no queues: the panel showed a table of headers and no row."""
    page = ui.page
    await ui.open("/overview")
    shown = page.locator("#queues .notice, #queues-table")
    await shown.first.wait_for()
    assert "No queues yet" in await page.inner_text("#queues"), "an empty table instead of a notice"
    assert await page.locator("#queues-table").count() == 0
    task_id = await submit(system, {"type": "demo.echo"})
    await eventually(status_is(system, task_id, "succeeded"), timeout=60, what="succeeded")

    async def listed() -> bool:
        r = await system.http.get("/v1/queues")
        return any(q["name"] == "default" for q in r.json()["items"])

    await eventually(listed, timeout=60, what="the default queue listed")
    await page.reload()
    await page.locator('#queues-table tr[data-queue="default"]').wait_for()
    assert "No queues yet" not in await page.inner_text("#queues")


async def test_the_charts_axis_labels_are_distinct(ui: Page, system: System) -> None:
    """The left axis is labelled at 0, half and the top: with at most one task a minute it read
    "0 / 1 / 1" (the half rounded up to the top)."""
    page = ui.page
    await ui.open("/overview")
    labels = page.locator('#throughput svg.chart g.grid text[text-anchor="end"]')
    await labels.first.wait_for()
    shown = await labels.evaluate_all("els => els.map((e) => e.textContent)")  # SVG: no innerText
    assert len(shown) == 3 and len(set(shown)) == 3, shown  # an empty hour
    by_peak = await page.evaluate(
        """async () => {
             const { throughputChart } = await import("/js/chart.js");
             const end = Date.now();
             const out = {};
             for (let peak = 0; peak <= 9; peak += 1) {
               const minute = { t: end, submitted: peak, succeeded: peak, failed: 0 };
               const svg = throughputChart([minute], { end });
               const left = svg.querySelectorAll('g.grid text[text-anchor="end"]');
               out[peak] = [...left].map((t) => t.textContent);
             }
             return out;
           }"""
    )
    for peak, texts in by_peak.items():
        assert len(texts) == 3 and len(set(texts)) == 3, f"peak {peak}: {texts}"
        assert int(texts[-1]) >= int(peak), f"peak {peak} above the top label: {texts}"


async def test_an_older_dead_letter_answer_arriving_last_is_dropped(ui: Page, system: System) -> None:
    """Two filters applied in turn: the first one's answer, held until the second's was shown, used to
    replace it (the rows of a filter no longer applied, under the form of the new one)."""
    fail = await submit(system, {"type": "demo.fail", "max_attempts": 1})
    flaky = await submit(system, {"type": "demo.flaky", "payload": {"fail_times": 5}, "max_attempts": 1})

    async def both_dead() -> bool:
        items = (await system.http.get("/v1/dead-letters")).json()["items"]
        return {fail, flaky} <= {d["task_id"] for d in items}

    await eventually(both_dead, timeout=60, what="two dead letters")
    page = ui.page
    await page.add_init_script(RECORD_READS)
    await ui.open("/dead-letters?type=demo.flaky")
    await page.locator(f'#dl-table tr[data-id="{flaky}"]').wait_for()
    await page.locator('#conn[data-state="live"]').wait_for()
    held: list[Any] = []
    release = asyncio.Event()

    async def hold_the_first(route: Any) -> None:
        if held:  # a later read of that filter (a live refresh) goes through
            await route.continue_()
            return
        held.append(route)
        await release.wait()
        await route.continue_()

    await page.route(lambda url: "/v1/dead-letters?" in url and "type=demo.fail" in url, hold_the_first)

    async def apply(kind: str) -> None:
        await page.fill("input[name=type]", kind)
        await page.press("input[name=type]", "Enter")
        await page.wait_for_function("k => location.hash.includes(`type=${k}`)", arg=kind)

    await apply("demo.fail")

    async def first_held() -> bool:
        return bool(held)

    await eventually(first_held, timeout=60, what="the demo.fail read held")
    reads = "k => window.__read.filter((u) => u.includes(`/v1/dead-letters?type=${k}`)).length"
    before = await page.evaluate(reads, "demo.flaky")
    await apply("demo.flaky")
    await page.wait_for_function(f"n => ({reads})('demo.flaky') > n", arg=before)  # the newer answer shown
    before = await page.evaluate(reads, "demo.fail")  # a live refresh's read of it may have gone through
    release.set()
    await page.wait_for_function(f"n => ({reads})('demo.fail') > n", arg=before)  # the held answer read
    older = await page.locator(f'#dl-table tr[data-id="{fail}"]').count()
    assert older == 0, "the older answer (demo.fail) replaced the newer one (demo.flaky)"
    assert await page.locator(f'#dl-table tr[data-id="{flaky}"]').count() == 1
    assert await page.input_value("input[name=type]") == "demo.flaky"
