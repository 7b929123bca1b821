// Dead letters: tasks that exhausted their attempts, with error summaries; replay one, or every one
// matching a filter. Without the dead-letter routes, failed tasks are listed and retried instead.
import { h, put, clear, absTime, ago, notice, shortId, toast } from "../dom.js";
import { get, post, qs, enc } from "../api.js";
import { has } from "../caps.js";
import { coalesce } from "../live.js";
import { go } from "../router.js";

export function mount(root, { params }) {
  let state = { ...params };
  const native = has("GET", "/v1/dead-letters");
  const box = h("div", { id: "dead-letters" });
  const fQueue = h("input", { name: "queue", placeholder: "queue", size: 10, value: state.queue || "" });
  const fType = h("input", { name: "type", placeholder: "type", size: 14, value: state.type || "" });
  const fKind = h("input", { name: "error_kind", placeholder: "error kind", size: 14, value: state.error_kind || "", disabled: !native });
  const bulkBtn = h("button", { class: "primary", "data-action": "replay-all", onclick: replayAll }, "Replay all matching");
  const form = h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); go(["dead-letters"], { queue: fQueue.value.trim(), type: fType.value.trim(), error_kind: fKind.value.trim() }); } },
    h("label", {}, "Queue", fQueue), h("label", {}, "Type", fType), h("label", {}, "Error kind", fKind), h("button", { type: "submit" }, "Filter"), bulkBtn);
  root.append(h("div", { class: "panel" }, h("h1", {}, "Dead letters"),
    native ? null : notice("The dead-letter routes are not available on this gateway: showing failed tasks; replay uses the task's retry."),
    form, box));
  let cursor = null;

  const filter = () => ({ queue: state.queue, type: state.type, error_kind: native ? state.error_kind : undefined });
  async function load() {
    let items, next;
    try {
      if (native) ({ items, next_cursor: next } = await get(`/v1/dead-letters${qs({ ...filter(), limit: 100, cursor })}`));
      else ({ items, next_cursor: next } = await get(`/v1/tasks${qs({ status: "failed", queue: state.queue, type: state.type, limit: 100, cursor })}`));
    } catch (e) { put(box, notice(e.message, "error")); return; }
    const rows = items.map((d) => native ? d : { task_id: d.id, type: d.type, queue: d.queue, attempts: d.attempts,
      error_kind: d.error?.kind ?? "", error: d.error, dead_at: d.finished_at ?? d.updated_at });
    bulkBtn.disabled = !rows.length;
    put(box, rows.length ? [h("div", { class: "table-wrap" }, h("table", { id: "dl-table" },
      h("thead", {}, h("tr", {}, ["task", "type", "queue", "attempts", "error", "dead since", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map((d) => h("tr", { "data-id": d.task_id },
        h("td", { class: "mono" }, h("a", { href: `#/tasks/${enc(d.task_id)}`, title: d.task_id }, shortId(d.task_id))),
        h("td", {}, d.type), h("td", {}, d.queue), h("td", { class: "num" }, d.attempts),
        h("td", { class: "wrap small" }, h("b", {}, d.error_kind || d.error?.kind || ""), " ", d.error?.message ?? d.reason ?? ""),
        h("td", { title: absTime(d.dead_at) }, ago(d.dead_at)),
        h("td", {}, h("button", { "data-action": "replay", onclick: () => replay(d.task_id) }, "Replay"))))))),
      next ? h("div", { class: "pager" }, h("button", { onclick: () => { cursor = next; load(); } }, "Older →")) : null]
      : notice("No dead letters match."));
  }
  async function replay(id) {
    try {
      await post(native ? `/v1/dead-letters/${enc(id)}:replay` : `/v1/tasks/${enc(id)}:retry`);
      toast(`replayed ${shortId(id)}`);
    } catch (e) { toast(e.message, "error"); }
    refresh();
  }
  async function replayAll() {
    if (!confirm("Replay every dead letter matching this filter?")) return;
    if (native && has("POST", "/v1/dead-letters:replay")) {
      try { const r = await post("/v1/dead-letters:replay", Object.fromEntries(Object.entries(filter()).filter(([, v]) => v)));
        toast(`replayed ${(r.replayed || []).length} dead letters${r.skipped?.length ? `, ${r.skipped.length} skipped` : ""}`); }
      catch (e) { toast(e.message, "error"); }
    } else {
      for (const tr of box.querySelectorAll("tr[data-id]")) await replay(tr.dataset.id);
    }
    refresh();
  }
  const refresh = coalesce(load, 500);
  load();
  return {
    update(p) { state = { ...p }; cursor = null; load(); },
    onEvent(e) { if (["dead_lettered", "failed", "replayed"].includes(e.type)) refresh(); },
  };
}
