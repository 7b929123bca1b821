// Overview: counts by status, the last hour's throughput and failure rate, queue depths, workers
// online, projection lag. Re-read when events arrive (coalesced), never on a timer.
import { h, put, clear, notice, statusBadge, shortId } from "../dom.js";
import { getOptional, enc } from "../api.js";
import { has } from "../caps.js";
import { coalesce } from "../live.js";
import { throughputChart } from "../chart.js";
import { STATUSES } from "./tasks.js";

/** Normalise the stats' per-minute series, whatever its exact field names. */
export function series(stats) {
  const raw = stats?.per_minute ?? stats?.series ?? stats?.minutes ?? stats?.throughput ?? [];
  const rows = Array.isArray(raw) ? raw : Object.entries(raw).map(([t, v]) => ({ minute: t, ...v }));
  const byMinute = new Map();
  for (const r of rows) {
    const t = new Date(r.minute ?? r.at ?? r.t ?? r.ts ?? r.bucket).getTime();
    if (Number.isNaN(t)) continue;
    const p = byMinute.get(t) || { t, submitted: 0, succeeded: 0, failed: 0 };
    p.submitted += Number(r.submitted ?? 0); p.succeeded += Number(r.succeeded ?? 0); p.failed += Number(r.failed ?? 0);
    byMinute.set(t, p);
  }
  return [...byMinute.values()].sort((a, b) => a.t - b.t);
}

function lagOf(stats) {
  const lag = stats?.lag ?? stats?.projection_lag ?? stats?.projections;
  if (lag === undefined || lag === null) return null;
  if (typeof lag === "number") return lag;
  if (Array.isArray(lag)) return Math.max(0, ...lag.map((p) => Number(p.lag ?? 0)));
  if (typeof lag === "object") return Math.max(0, ...Object.values(lag).map((v) => Number(typeof v === "object" ? v.lag ?? 0 : v)));
  return null;
}

export function mount(root) {
  const countsBox = h("div", { class: "counts", id: "counts" });
  const chartBox = h("div", { id: "throughput" });
  const queuesBox = h("div", { id: "queues" });
  const lagBox = h("span", { class: "n", id: "lag" }, "–");
  const workersBox = h("span", { class: "n", id: "workers-online" }, "–");
  const totalBox = h("span", { class: "n", id: "total" }, "–");
  const rateBox = h("span", { class: "n", id: "failure-rate" }, "–");
  const feed = h("ol", { class: "feed", id: "feed" });
  root.append(h("h1", { class: "page-title" }, "Overview"),
    h("div", { class: "grid cols-4" },
      h("div", { class: "panel stat" }, totalBox, h("span", { class: "l" }, "tasks (all statuses)")),
      h("div", { class: "panel stat" }, rateBox, h("span", { class: "l" }, "failure rate, last hour")),
      h("div", { class: "panel stat" }, workersBox, h("span", { class: "l" }, "workers online")),
      h("div", { class: "panel stat" }, lagBox, h("span", { class: "l" }, "projection lag (events)"))),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "By status"), countsBox),
    h("div", { class: "grid cols-main-side", style: "margin-top:1rem" },
      h("div", { class: "panel" }, h("h2", {}, "Throughput, last hour"), chartBox,
        h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:var(--ok)" }), "succeeded / min"),
          h("span", {}, h("i", { style: "background:var(--fail)" }), "failed / min"),
          h("span", {}, h("i", { style: "background:var(--accent);height:2px" }), "submitted / min"),
          h("span", {}, h("i", { style: "background:var(--warn);height:2px" }), "failure rate (right axis)"))),
      h("div", { class: "panel" }, h("h2", {}, "Queues"), queuesBox)),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Live events"), feed));

  let stats = null;
  async function load() {
    const [st, queues, workers] = await Promise.all([
      has("GET", "/v1/stats") ? getOptional("/v1/stats") : null,
      has("GET", "/v1/queues") ? getOptional("/v1/queues") : null,
      has("GET", "/v1/workers") ? getOptional("/v1/workers") : null,
    ]);
    stats = st;
    if (!st) {
      put(countsBox, notice("Stats are not available on this gateway (GET /v1/stats)."));
      put(chartBox, notice("Throughput is not available on this gateway (GET /v1/stats)."));
    } else {
      const by = st.by_status || {};
      const total = Object.values(by).reduce((a, b) => a + Number(b || 0), 0);
      totalBox.textContent = total.toLocaleString();
      put(countsBox, STATUSES.map((s) => h("a", { href: `#/tasks?status=${s}`, "data-status": s },
        h("span", { class: "n" }, Number(by[s] || 0).toLocaleString()), statusBadge(s))));
      const pts = series(st);
      const done = pts.reduce((a, p) => a + p.succeeded + p.failed, 0);
      const failed = pts.reduce((a, p) => a + p.failed, 0);
      rateBox.textContent = done ? `${((100 * failed) / done).toFixed(1)}%` : "–";
      put(chartBox, throughputChart(pts));
      const lag = lagOf(st);
      lagBox.textContent = lag === null ? "n/a" : lag.toLocaleString();
    }
    if (workers) {
      const items = workers.items ?? workers;
      workersBox.textContent = String(items.filter((w) => (w.status ?? "online") === "online").length);
    } else workersBox.textContent = "n/a";
    if (!queues) put(queuesBox, notice("Queue depths are not available on this gateway (GET /v1/queues)."));
    else {
      const items = queues.items ?? queues;
      put(queuesBox, h("table", { id: "queues-table" }, h("thead", {}, h("tr", {}, h("th", {}, "queue"), h("th", { class: "num" }, "depth"),
        h("th", { class: "num" }, "running"), h("th", {}, "state"))),
      h("tbody", {}, items.map((q) => h("tr", {}, h("td", {}, h("a", { href: `#/tasks?queue=${enc(q.name ?? q.queue)}` }, q.name ?? q.queue)),
        h("td", { class: "num" }, q.queued ?? q.depth ?? ""), h("td", { class: "num" }, q.running ?? ""),
        h("td", {}, statusBadge(q.paused ? "paused" : "active")))))));
    }
  }
  const refresh = coalesce(load, 1000);
  refresh();
  return {
    onEvent(e) {
      feed.prepend(h("li", {}, h("span", { class: "seq" }, `#${e.seq}`), h("span", { class: "ev-type" }, e.type),
        h("a", { class: "mono", href: `#/tasks/${enc(e.task_id)}` }, shortId(e.task_id))));
      while (feed.children.length > 50) feed.lastChild.remove();
      refresh();
    },
    onTheme() { if (stats) put(chartBox, throughputChart(series(stats))); },
  };
}
