// Overview: counts by status, the last hour's throughput and failure rate, queue depths, workers
// online, projection lag. Re-read when events arrive (coalesced), never on a timer.
import { h, patch, notice, statusBadge, shortId, absTime, dur, toast } from "../dom.js";
import { getOptional, post, enc } from "../api.js";
import { confirmAction } from "../confirm.js";
import { has } from "../caps.js";
import { coalesce, holdWhileHovered } from "../live.js";
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

export function mount(root, { recent = [] } = {}) {
  const countsBox = h("div", { class: "counts", id: "counts" });
  const chartBox = h("div", { id: "throughput" });
  const queuesBox = h("div", { id: "queues" });
  const lagBox = h("span", { class: "n", id: "lag" }, "–");
  const workersBox = h("span", { class: "n", id: "workers-online" }, "–");
  const totalBox = h("span", { class: "n", id: "total" }, "–");
  const rateBox = h("span", { class: "n", id: "failure-rate" }, "–");
  const feed = h("ol", { class: "feed", id: "feed" });
  const feedHeld = h("p", { class: "held-note", id: "feed-held", hidden: true, role: "status" }, "New events are held while the pointer is on the feed; they show when it leaves.");
  const latencyBox = h("span", { class: "n", id: "latency" }, "–");
  root.append(h("h1", { class: "page-title" }, "Overview"),
    h("div", { class: "grid cols-stats" },
      h("div", { class: "panel stat" }, totalBox, h("span", { class: "l" }, "tasks (all statuses)")),
      h("div", { class: "panel stat" }, rateBox, h("span", { class: "l" }, "failure rate, last hour")),
      h("div", { class: "panel stat" }, workersBox, h("span", { class: "l" }, "workers online")),
      h("div", { class: "panel stat" }, lagBox, h("span", { class: "l" }, "projection lag (events)")),
      h("div", { class: "panel stat" }, latencyBox, h("span", { class: "l" }, "run time p50 / p95 / p99, last hour"))),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "By status"), countsBox),
    h("div", { class: "grid cols-main-side", style: "margin-top:1rem" },
      h("div", { class: "panel" }, h("h2", {}, "Throughput, last hour"), chartBox,
        h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:var(--ok)" }), "succeeded / min"),
          h("span", {}, h("i", { style: "background:var(--fail)" }), "failed / min"),
          h("span", {}, h("i", { style: "background:var(--accent);height:2px" }), "submitted / min"),
          h("span", {}, h("i", { style: "background:var(--warn);height:2px" }), "failure rate (right axis)"))),
      h("div", { class: "panel" }, h("h2", {}, "Queues"), queuesBox)),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Live events"), feedHeld, feed));

  let stats = null;
  async function load() {
    const [st, queues, workers] = await Promise.all([
      has("GET", "/v1/stats") ? getOptional("/v1/stats") : null,
      has("GET", "/v1/queues") ? getOptional("/v1/queues") : null,
      has("GET", "/v1/workers") ? getOptional("/v1/workers") : null,
    ]);
    stats = st;
    if (!st) {
      patch(countsBox, notice("Stats are not available on this gateway (GET /v1/stats)."));
      patch(chartBox, notice("Throughput is not available on this gateway (GET /v1/stats)."));
    } else {
      const by = st.by_status || {};
      const total = Object.values(by).reduce((a, b) => a + Number(b || 0), 0);
      totalBox.textContent = total.toLocaleString();
      patch(countsBox, STATUSES.map((s) => h("a", { href: `#/tasks?status=${s}`, "data-status": s },
        h("span", { class: "n" }, Number(by[s] || 0).toLocaleString()), statusBadge(s))));
      const pts = series(st);
      const done = pts.reduce((a, p) => a + p.succeeded + p.failed, 0);
      const failed = pts.reduce((a, p) => a + p.failed, 0);
      rateBox.textContent = done ? `${((100 * failed) / done).toFixed(1)}%` : "–";
      const tot = st.totals || {};
      latencyBox.textContent = tot.p50_ms !== undefined && tot.p50_ms !== null
        ? [tot.p50_ms, tot.p95_ms, tot.p99_ms].map((v) => (v === null || v === undefined ? "–" : dur(v))).join(" / ") : "–";
      drawChart();
      const lag = lagOf(st);
      lagBox.textContent = lag === null ? "n/a" : lag.toLocaleString();
    }
    const workerItems = workers ? workers.items ?? workers : null;
    if (workerItems) workersBox.textContent = String(workerItems.filter((w) => (w.status ?? "online") === "online").length);
    else workersBox.textContent = "n/a";
    if (!queues) { patch(queuesBox, notice("Queue depths are not available on this gateway (GET /v1/queues).")); return; }
    const items = queues.items ?? queues;
    if (!items.length) { patch(queuesBox, notice("No queues yet: a queue shows here once a task is submitted to it.")); return; }
    // A queue with waiting tasks that no online worker consumes: say so, it will not drain by itself.
    const served = new Set((workerItems || []).filter((w) => ["online", "draining"].includes(w.status ?? "online")).flatMap((w) => w.queues || []));
    const canPause = has("POST", "/v1/queues/{queue}:pause");
    patch(queuesBox, h("div", { class: "table-wrap" }, h("table", { id: "queues-table", class: "cards", "aria-label": "queues" }, h("thead", {}, h("tr", {},
      ["queue", "depth", "running", "state", "actions"].map((c, i) => h("th", { scope: "col", class: i === 1 || i === 2 ? "num" : "" }, c)))),
    h("tbody", {}, items.map((q) => {
      const name = q.name ?? q.queue;
      const depth = Number(q.queued ?? q.depth ?? 0);
      const orphan = workerItems && depth > 0 && !served.has(name);
      return h("tr", { "data-queue": name },
        h("td", { "data-label": "queue", class: "wrap" }, h("a", { href: `#/tasks?queue=${enc(name)}` }, name),
          orphan ? h("div", { class: "warn-text small", "data-warning": "unserved" }, "⚠ no online worker serves this queue") : null),
        h("td", { class: "num", "data-label": "depth" }, depth), h("td", { class: "num", "data-label": "running" }, q.running ?? ""),
        h("td", { "data-label": "state", title: q.paused_reason ? `paused: ${q.paused_reason}` : "" }, statusBadge(q.paused ? "paused" : "active")),
        h("td", { "data-label": "", class: "actions" }, canPause ? h("button", { "data-action": q.paused ? "resume" : "pause",
          onclick: () => pauseQueue(name, !q.paused, depth) }, q.paused ? "Resume" : "Pause…") : null));
    })))));
  }
  async function pauseQueue(name, pause, depth) {
    if (pause && !(await confirmAction({ title: `Pause queue ${name}?`,
      lines: [`${depth.toLocaleString()} queued task(s) wait until it is resumed; running tasks finish.`], action: "Pause queue" }))) return;
    try { await post(`/v1/queues/${enc(name)}:${pause ? "pause" : "resume"}`); toast(`queue ${name} ${pause ? "paused" : "resumed"}`); }
    catch (e) { toast(e.message, "error"); }
    refresh();
  }
  function drawChart() { if (stats) patch(chartBox, throughputChart(series(stats), { width: Math.max(300, Math.round(chartBox.clientWidth || 720)) })); }
  function showEvent(e) {
    feed.prepend(h("li", { "data-seq": e.seq }, h("span", { class: "seq" }, `#${e.seq}`), h("time", { class: "small muted", datetime: e.at }, absTime(e.at).slice(11, 19)),
      h("span", { class: "ev-type" }, e.type), h("a", { class: "mono", href: `#/tasks/${enc(e.task_id)}` }, shortId(e.task_id))));
    while (feed.children.length > 50) feed.lastChild.remove();
  }
  for (const e of recent) showEvent(e);
  // The feed holds still under the mouse (a task's link is clickable on a busy system): events wait
  // in `pending` (the newest 50, as many as the feed shows) until the pointer leaves.
  let pending = [];
  const flush = () => { const now = pending; pending = []; for (const e of now) showEvent(e); };
  const liveFeed = holdWhileHovered(feed, flush, feedHeld);
  const refresh = coalesce(load, 1000);
  refresh();
  return {
    onEvent(e) {
      pending.push(e);
      if (pending.length > 50) pending.shift();
      liveFeed();
      refresh();
    },
    onTheme() { drawChart(); },
    onLiveStart() { refresh(); }, // a change between the first read and the live stream's start is not missed
  };
}
