// Workers: online / draining / lost, heartbeats, in-flight tasks, processed and failed counts; drain.
import { h, put, clear, statusBadge, ago, absTime, notice, shortId, toast } from "../dom.js";
import { get, post, enc } from "../api.js";
import { has } from "../caps.js";
import { coalesce } from "../live.js";
import { confirmAction } from "../confirm.js";

export function mount(root) {
  const box = h("div", { id: "workers" });
  root.append(h("div", { class: "panel" }, h("h1", {}, "Workers"), box));
  if (!has("GET", "/v1/workers")) { box.append(notice("Workers are not available on this gateway (GET /v1/workers).")); return {}; }
  const canDrain = has("POST", "/v1/workers/{worker_id}:drain");
  async function load() {
    let items;
    try { items = (await get("/v1/workers")).items; } catch (e) { put(box, notice(e.message, "error")); return; }
    if (!items.length) { put(box, notice("No worker has reported a heartbeat yet.")); return; }
    put(box, h("div", { class: "table-wrap" }, h("table", { id: "workers-table" },
      h("thead", {}, h("tr", {}, ["worker", "status", "heartbeat", "queues", "in flight", "processed", "succeeded", "failed", "cpu", "memory", ""]
        .map((c, i) => h("th", { class: i >= 4 && i <= 9 ? "num" : "" }, c)))),
      h("tbody", {}, items.map((w) => h("tr", { "data-id": w.id },
        h("td", { class: "mono", title: `${w.host ?? ""} pid ${w.pid ?? ""}` }, w.id),
        h("td", {}, statusBadge(w.status)),
        h("td", { title: absTime(w.last_heartbeat) }, ago(w.last_heartbeat)),
        h("td", { class: "wrap" }, (w.queues || []).join(", ")),
        h("td", { class: "num wrap" }, `${w.in_flight ?? 0}/${w.concurrency ?? "?"}`,
          (w.tasks || []).slice(0, 5).map((t) => [" ", h("a", { class: "mono small", href: `#/tasks/${enc(t.task_id)}` }, shortId(t.task_id))])),
        h("td", { class: "num" }, w.processed ?? ""), h("td", { class: "num" }, w.succeeded ?? ""), h("td", { class: "num" }, w.failed ?? ""),
        h("td", { class: "num" }, w.cpu_pct !== undefined && w.cpu_pct !== null ? `${Number(w.cpu_pct).toFixed(0)}%` : ""),
        h("td", { class: "num" }, w.rss_bytes ? `${(w.rss_bytes / 1048576).toFixed(0)} MiB` : ""),
        h("td", {}, canDrain && w.status === "online" ? h("button", { "data-action": "drain", onclick: async () => {
          const ok = await confirmAction({ title: `Drain worker ${w.id}?`,
            lines: [`1 worker, ${w.in_flight ?? 0} task(s) in flight: it finishes them, takes no new work, then stops.`], action: "Drain" });
          if (!ok) return;
          try { await post(`/v1/workers/${enc(w.id)}:drain`); toast(`draining ${w.id}`); refresh(); } catch (e) { toast(e.message, "error"); }
        } }, "Drain…") : null)))))));
  }
  const refresh = coalesce(load, 2000);
  load();
  // Worker heartbeats are not task events: a task event (a worker took or finished work) re-reads the list.
  return { onEvent(e) { if (e.type.startsWith("attempt_") || e.type === "succeeded") refresh(); } };
}
