// Workers: online / draining / lost, heartbeats, in-flight tasks, processed and failed counts; drain,
// and (under `ordo up`, local mode) scale the pool and kill a worker process — the resilience demo.
// Heartbeats are not task events, so the list is re-read every 5 s as well as on task events. A worker
// whose heartbeat is overdue is marked late before the registry calls it lost (3 periods); one killed
// from here shows as killed, without its buttons, until the registry sees it gone.
import { h, patch, statusBadge, ago, absTime, notice, shortId, toast } from "../dom.js";
import { get, post, enc } from "../api.js";
import { has } from "../caps.js";
import { coalesce } from "../live.js";
import { confirmAction } from "../confirm.js";

const cell = (label, attrs, ...children) => h("td", { "data-label": label, ...attrs }, ...children);

export function mount(root) {
  const box = h("div", { id: "workers" });
  const tools = h("div", { class: "row", id: "worker-tools" });
  root.append(h("div", { class: "panel" }, h("div", { class: "row" }, h("h1", {}, "Workers"), h("span", { class: "spacer" }), tools), box));
  if (!has("GET", "/v1/workers")) { box.append(notice("Workers are not available on this gateway (GET /v1/workers).")); return {}; }
  const canDrain = has("POST", "/v1/workers/{worker_id}:drain");
  const canKill = has("POST", "/v1/workers/{worker_id}:kill");
  const canScale = has("POST", "/v1/workers:scale");
  let online = 0;
  const killed = new Set(); // killed from this page, still online in the registry (its heartbeat has not lapsed yet)
  if (canScale) {
    const count = h("input", { type: "number", min: 0, max: 64, name: "count", id: "scale-count", "aria-label": "worker processes", style: "width:5rem" });
    tools.append(h("form", { class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      const n = Number(count.value);
      if (!Number.isInteger(n) || n < 0) return;
      const ok = await confirmAction({ title: `Scale to ${n} worker process${n === 1 ? "" : "es"}?`,
        lines: [`${online} online now. ${n < online ? "Extra workers finish their tasks and stop." : "New workers start and take work."}`], action: `Scale to ${n}`, danger: n < online });
      if (!ok) return;
      try { await post("/v1/workers:scale", { count: n }); toast(`scaling to ${n}`); } catch (e) { toast(e.message, "error"); }
      refresh();
    } }, h("label", { class: "inline" }, "Processes", count), h("button", { type: "submit" }, "Scale…")));
  }
  async function act(w, action) {
    const kill = action === "kill";
    const ok = await confirmAction({ title: `${kill ? "Kill" : "Drain"} worker ${w.id}?`,
      lines: [kill ? `1 worker process (pid ${w.pid ?? "?"}) is killed at once; its ${w.in_flight ?? 0} task(s) in flight are redelivered at their ack deadline.`
        : `1 worker, ${w.in_flight ?? 0} task(s) in flight: it finishes them, takes no new work, then stops.`],
      action: kill ? "Kill" : "Drain" });
    if (!ok) return;
    try {
      await post(`/v1/workers/${enc(w.id)}:${action}`);
      if (kill) killed.add(w.id);
      toast(`${kill ? "killed" : "draining"} ${w.id}`);
      refresh();
    } catch (e) { toast(e.message, "error"); }
  }
  async function load() {
    let items;
    try { items = (await get("/v1/workers")).items; } catch (e) { patch(box, notice(e.message, "error")); return; }
    online = items.filter((w) => w.status === "online").length;
    const count = document.getElementById("scale-count");
    if (count && document.activeElement !== count && !count.value) count.value = String(online);
    if (!items.length) { patch(box, notice("No worker has reported a heartbeat yet.")); return; }
    // Running workers first; stopped and lost ones fold away under a count (they pile up otherwise).
    const gone = items.filter((w) => ["offline", "lost"].includes(w.status));
    for (const w of gone) killed.delete(w.id);
    const running = items.filter((w) => !gone.includes(w));
    patch(box, table(running, "workers-table", "workers"),
      gone.length ? h("details", { class: "create", id: "workers-gone" }, h("summary", {}, `${gone.length} stopped or lost worker${gone.length === 1 ? "" : "s"}`),
        table(gone, "workers-gone-table", "stopped or lost workers")) : null);
  }
  function table(items, id, label) {
    return h("div", { class: "table-wrap" }, h("table", { id, class: "cards", "aria-label": label },
      h("thead", {}, h("tr", {}, ["worker", "status", "heartbeat", "queues", "in flight", "processed", "succeeded", "failed", "cpu", "memory", "actions"]
        .map((c, i) => h("th", { scope: "col", class: i >= 4 && i <= 9 ? "num" : "" }, c)))),
      h("tbody", {}, items.map((w) => h("tr", { "data-id": w.id },
        cell("worker", { class: "mono", title: `${w.host ?? ""} pid ${w.pid ?? ""}` }, w.id),
        cell("status", {}, statusBadge(killed.has(w.id) ? "killed" : w.status)),
        cell("heartbeat", { title: absTime(w.last_heartbeat) }, ago(w.last_heartbeat), lateNote(w)),
        cell("queues", { class: "wrap" }, (w.queues || []).join(", ")),
        cell("in flight", { class: "num wrap" }, `${w.in_flight ?? 0}/${w.concurrency ?? "?"}`,
          (w.tasks || []).slice(0, 5).map((t) => [" ", h("a", { class: "mono small", href: `#/tasks/${enc(t.task_id)}` }, shortId(t.task_id))])),
        cell("processed", { class: "num" }, w.processed ?? ""), cell("succeeded", { class: "num" }, w.succeeded ?? ""), cell("failed", { class: "num" }, w.failed ?? ""),
        cell("cpu", { class: "num" }, w.cpu_pct !== undefined && w.cpu_pct !== null ? `${Number(w.cpu_pct).toFixed(0)}%` : ""),
        cell("memory", { class: "num" }, w.rss_bytes ? `${(w.rss_bytes / 1048576).toFixed(0)} MiB` : ""),
        cell("", { class: "actions" }, killed.has(w.id) ? null : h("span", { class: "row" },
          canDrain && w.status === "online" ? h("button", { "data-action": "drain", "data-key": "drain", onclick: () => act(w, "drain") }, "Drain…") : null,
          canKill && w.pid && ["online", "draining"].includes(w.status) ? h("button", { class: "danger", "data-action": "kill", "data-key": "kill", onclick: () => act(w, "kill") }, "Kill…") : null)))))));
  }
  /** "late" when a live worker's heartbeat is more than one and a half periods old: killed, hung or cut off. */
  function lateNote(w) {
    if (!["online", "draining"].includes(w.status)) return null;
    const every = Number(w.heartbeat_every_s) || 5;
    const age = (Date.now() - new Date(w.last_heartbeat).getTime()) / 1000;
    if (!(age > 1.5 * every)) return null;
    return h("div", { class: "warn-text small", "data-late": "", title: `a heartbeat is due every ${every}s; the worker is called lost after ${3 * every}s without one` },
      "late: killed, hung or cut off?");
  }
  const refresh = coalesce(load, 1000);
  refresh();
  const poll = setInterval(refresh, 5000);
  return {
    unmount() { clearInterval(poll); },
    onLiveStart() { refresh(); },
    onEvent(e) { if (e.type.startsWith("attempt_") || e.type === "succeeded") refresh(); },
  };
}
