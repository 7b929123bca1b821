// Dead letters: tasks that exhausted their attempts, with error summaries; replay one, or every one
// matching a filter. Without the dead-letter routes, failed tasks are listed and retried instead.
// The URL is the applied filter: the form is refilled from it on every change (Back included), and
// "Replay all matching" acts on it only while the form shows exactly that filter. The page shown is in
// the URL too (`cursor`): a reload or a shared link lands on it, and Back returns to the page before.
import { h, patch, absTime, ago, notice, shortId, toast } from "../dom.js";
import { get, post, qs, enc } from "../api.js";
import { has } from "../caps.js";
import { coalesce, holdWhileHovered } from "../live.js";
import { go } from "../router.js";
import { confirmAction, describeFilter } from "../confirm.js";
import { rememberNewer, newerOf } from "../pages.js";

const MAX_BULK = 1000; // the gateway's bulk replay limit

export function mount(root, { params }) {
  let state = { ...params };
  const native = has("GET", "/v1/dead-letters");
  const box = h("div", { id: "dead-letters" });
  const fQueue = h("input", { name: "queue", placeholder: "queue", size: 10 });
  const fType = h("input", { name: "type", placeholder: "type", size: 14 });
  const fKind = h("input", { name: "error_kind", placeholder: "error kind", size: 14, disabled: !native });
  const bulkBtn = h("button", { type: "button", class: "danger", "data-action": "replay-all", onclick: replayAll }, "Replay all matching…");
  const dirtyNote = h("span", { class: "small muted", id: "dl-dirty", hidden: true }, "Apply the filter first: the list shows the applied one.");
  const form = h("form", { class: "filters", role: "search", "aria-label": "dead-letter filter",
    onsubmit: (ev) => { ev.preventDefault(); go(["dead-letters"], { ...formFilter(), cursor: "" }); } },
    h("label", {}, "Queue", fQueue), h("label", {}, "Type", fType), h("label", {}, "Error kind", fKind),
    h("button", { type: "submit", class: "primary" }, "Filter"), h("span", { class: "spacer" }), dirtyNote, bulkBtn);
  form.addEventListener("input", syncDirty);
  const heldNote = h("p", { class: "held-note", id: "dl-held", hidden: true, role: "status" }, "New changes are held while the pointer is on the list; they show when it leaves.");
  root.append(h("div", { class: "panel" }, h("h1", {}, "Dead letters"),
    native ? null : notice("The dead-letter routes are not available on this gateway: showing failed tasks; replay uses the task's retry."),
    form, heldNote, box));
  let shown = 0;

  const applied = () => ({ queue: state.queue || "", type: state.type || "", error_kind: native ? state.error_kind || "" : "" });
  const formFilter = () => ({ queue: fQueue.value.trim(), type: fType.value.trim(), error_kind: native ? fKind.value.trim() : "" });
  const isDirty = () => JSON.stringify(formFilter()) !== JSON.stringify(applied());
  function fillForm() { const a = applied(); fQueue.value = a.queue; fType.value = a.type; fKind.value = a.error_kind; syncDirty(); }
  function syncDirty() {
    const dirty = isDirty();
    dirtyNote.hidden = !dirty;
    bulkBtn.disabled = dirty || shown === 0;
  }
  const apiFilter = () => Object.fromEntries(Object.entries(applied()).filter(([, v]) => v));

  const toPage = (cursor) => go(["dead-letters"], { ...applied(), cursor });
  const list = () => `dead-letters ${JSON.stringify(applied())}`; // the pages of one filter
  const older = (next) => h("button", { "data-page": "older", "data-key": "older", onclick: () => { rememberNewer(list(), next, state.cursor || ""); toPage(next); } }, "Older →");
  const newerButton = () => (state.cursor ? h("button", { "data-page": "newer", "data-key": "newer", onclick: () => toPage(newerOf(list(), state.cursor)) }, "← Newer") : null);
  let generation = 0; // the newest load's number: an older answer arriving last is dropped
  async function load() {
    const mine = ++generation;
    const cursor = state.cursor || null;
    let items, next;
    try {
      if (native) ({ items, next_cursor: next } = await get(`/v1/dead-letters${qs({ ...apiFilter(), limit: 100, cursor })}`));
      else ({ items, next_cursor: next } = await get(`/v1/tasks${qs({ status: "failed", queue: state.queue, type: state.type, limit: 100, cursor })}`));
    } catch (e) { if (mine === generation) patch(box, notice(e.message, "error")); return; }
    if (mine !== generation) return;
    const rows = items.map((d) => native ? d : { task_id: d.id, type: d.type, queue: d.queue, attempts: d.attempts,
      error_kind: d.error?.kind ?? "", error: d.error, dead_at: d.finished_at ?? d.updated_at });
    shown = rows.length;
    syncDirty();
    // Patched in place: a refresh keeps the focus on a Replay button and a click in progress.
    patch(box, rows.length ? [h("div", { class: "table-wrap" }, h("table", { id: "dl-table", class: "cards", "aria-label": "dead letters" },
      h("thead", {}, h("tr", {}, ["task", "type", "queue", "attempts", "error", "dead since", "action"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((d) => h("tr", { "data-id": d.task_id },
        h("td", { class: "mono", "data-label": "task" }, h("a", { href: `#/tasks/${enc(d.task_id)}`, title: d.task_id }, shortId(d.task_id))),
        h("td", { "data-label": "type" }, d.type), h("td", { "data-label": "queue" }, d.queue), h("td", { class: "num", "data-label": "attempts" }, d.attempts),
        h("td", { class: "wrap small", "data-label": "error" }, h("b", {}, d.error_kind || d.error?.kind || ""), " ", d.error?.message ?? d.reason ?? ""),
        h("td", { title: absTime(d.dead_at), "data-label": "dead since" }, ago(d.dead_at)),
        h("td", { "data-label": "" }, h("button", { "data-action": "replay", "aria-label": `replay ${d.task_id}`, onclick: () => replay(d.task_id) }, "Replay"))))))),
      next || cursor ? h("div", { class: "pager" }, newerButton(), next ? older(next) : null) : null]
      : next ? [notice("No matches among the tasks searched so far."), h("div", { class: "pager" }, newerButton(), older(next))]
      : [notice(cursor ? "No more dead letters on this page." : "No dead letters match."), cursor ? h("div", { class: "pager" }, newerButton()) : null]);
  }
  async function replay(id) {
    try {
      await post(native ? `/v1/dead-letters/${enc(id)}:replay` : `/v1/tasks/${enc(id)}:retry`);
      toast(`replayed ${shortId(id)}`);
    } catch (e) { toast(e.message, "error"); }
    refresh();
  }
  /** How many dead letters the applied filter matches (counted up to MAX_BULK + 1). */
  async function countMatching() {
    if (!native) return box.querySelectorAll("tr[data-id]").length;
    let n = 0;
    let c = null;
    do {
      const page = await get(`/v1/dead-letters${qs({ ...apiFilter(), limit: 500, cursor: c })}`);
      n += page.items.length;
      c = page.next_cursor;
    } while (c && n <= MAX_BULK);
    return n;
  }
  async function replayAll() {
    if (isDirty()) { syncDirty(); return; }
    const filter = apiFilter();
    const n = await countMatching();
    if (!n) { toast("No dead letters match this filter."); refresh(); return; }
    const take = Math.min(n, MAX_BULK);
    const scope = describeFilter(filter, "no filter: every dead letter");
    const ok = await confirmAction({
      title: `Replay ${n > MAX_BULK ? `the ${MAX_BULK.toLocaleString()} oldest of over ${MAX_BULK.toLocaleString()}` : take.toLocaleString()} dead letter${take === 1 ? "" : "s"}?`,
      lines: [`Filter: ${scope}.`, "Each runs again with the same id and a fresh budget of its max_attempts (attempt numbers continue)."],
      action: `Replay ${take.toLocaleString()}`,
    });
    if (!ok) return;
    if (native && has("POST", "/v1/dead-letters:replay")) {
      try {
        const r = await post("/v1/dead-letters:replay", { ...filter, limit: take });
        toast(`replayed ${(r.replayed || []).length} dead letters (${scope})${r.skipped?.length ? `, ${r.skipped.length} skipped` : ""}`);
      } catch (e) { toast(e.message, "error"); }
    } else {
      for (const tr of box.querySelectorAll("tr[data-id]")) await replay(tr.dataset.id);
    }
    refresh();
  }
  const refresh = coalesce(load, 500);
  const liveRefresh = holdWhileHovered(box, refresh, heldNote); // rows stay put under the pointer
  fillForm();
  load();
  return {
    update(p) { state = { ...p }; fillForm(); load(); },
    onEvent(e) { if (["dead_lettered", "failed", "replayed"].includes(e.type)) liveRefresh(); },
    onLiveStart() { liveRefresh(); },
  };
}
