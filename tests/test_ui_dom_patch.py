"""`dom.patch`, the in-place re-render of the live views, in real Chromium: a control that comes and
goes does not hand its place (focus and click) to the next one, a row moved down moves alone (the
rows it passes keep their focus), a form control keeps what the reader typed, an open <details>
stays open, and a focused control the render removes or disables hands the focus to its neighbour.
The module is loaded from the gateway as the UI loads it."""

from __future__ import annotations

from tests.conftest import System
from tests.test_ui import Page, browser, ui

__all__ = ["browser", "ui"]

SCENARIOS = """
async () => {
  const { h, patch } = await import("/js/dom.js");
  const box = h("div");
  document.body.append(box);
  const out = {};

  // A pager: "Older" focused; the next render adds "Newer" before it.
  patch(box, h("button", { "data-key": "older" }, "Older"));
  box.firstChild.focus();
  patch(box, h("button", { "data-key": "newer" }, "Newer"), h("button", { "data-key": "older" }, "Older"));
  out.pager = document.activeElement.textContent;

  // Rows A..E, the focus in C; A moves to the end: only A moves.
  const rows = (ids) => ids.map((id) => h("div", { "data-id": id }, h("button", {}, id)));
  patch(box, rows(["A", "B", "C", "D", "E"]));
  box.querySelector('[data-id="C"] button').focus();
  let moved = 0;
  const seen = new MutationObserver((list) => { for (const m of list) moved += m.removedNodes.length; });
  seen.observe(box, { childList: true });
  patch(box, rows(["B", "C", "D", "E", "A"]));
  await Promise.resolve();
  seen.disconnect();
  out.moved = moved;
  out.rowFocus = document.activeElement.textContent;
  out.order = [...box.children].map((r) => r.dataset.id).join("");

  // A checkbox the reader ticked, an input they typed in, a <details> they opened.
  patch(box, h("input", { type: "checkbox", "data-key": "c" }), h("input", { "data-key": "t", value: "" }),
    h("details", { "data-key": "d" }, h("summary", {}, "more")));
  box.querySelector('[data-key="c"]').checked = true;
  box.querySelector('[data-key="t"]').value = "typed";
  box.querySelector("details").open = true;
  document.activeElement.blur();
  patch(box, h("input", { type: "checkbox", "data-key": "c" }), h("input", { "data-key": "t", value: "" }),
    h("details", { "data-key": "d" }, h("summary", {}, "more")));
  out.checked = box.querySelector('[data-key="c"]').checked;
  out.typed = box.querySelector('[data-key="t"]').value;
  out.open = box.querySelector("details").open;
  // The view's own value changes: it is shown.
  patch(box, h("input", { type: "checkbox", "data-key": "c" }),
    h("input", { "data-key": "t", value: "new" }));
  out.viewValue = box.querySelector('[data-key="t"]').value;

  // A listener moves to the node kept: the click runs the newest render's handler.
  let clicked = null;
  patch(box, h("button", { "data-key": "b", onclick: () => { clicked = 1; } }, "b"));
  patch(box, h("button", { "data-key": "b", onclick: () => { clicked = 2; } }, "b"));
  box.firstChild.click();
  out.clicked = clicked;

  // The focused control disabled by the render: the focus goes to its neighbour, not the page.
  const bar = () => [h("button", { "data-key": "x", disabled: out.done }, "Cancel"),
    h("button", { "data-key": "y" }, "Copy")];
  out.done = false;
  patch(box, bar());
  box.firstChild.focus();
  out.done = true;
  patch(box, bar());
  out.afterDisabled = document.activeElement.textContent;
  // A focused row removed: the focus goes to the row that took its place.
  patch(box, rows(["A", "B", "C"]));
  box.querySelector('[data-id="B"] button').focus();
  patch(box, rows(["A", "C"]));
  out.afterRemoved = document.activeElement.textContent;
  // A focused <summary> (no `disabled`, not a button) stays focused through a render.
  const gone = () => [h("details", { "data-key": "g" }, h("summary", {}, "3 stopped")),
    h("button", { "data-key": "d" }, "Drain")];
  patch(box, gone());
  box.querySelector("summary").focus();
  patch(box, gone());
  out.summaryKept = document.activeElement.tagName;
  box.remove();
  return out;
}
"""


async def test_patch_keeps_focus_order_form_state_and_listeners(ui: Page, system: System) -> None:
    await ui.open("/overview")
    await ui.page.locator("#conn").wait_for(state="attached")
    out = await ui.page.evaluate(SCENARIOS)
    assert out["pager"] == "Older", out  # the focus stays on its own button, not the one now in its place
    assert out["order"] == "BCDEA" and out["moved"] == 1 and out["rowFocus"] == "C", out
    assert out["checked"] is True and out["typed"] == "typed" and out["open"] is True, out
    assert out["viewValue"] == "new", out
    assert out["clicked"] == 2, out
    assert out["afterDisabled"] == "Copy" and out["afterRemoved"] == "C", out
    assert out["summaryKept"] == "SUMMARY", out
