// Schedules: the list with next fire times; a schedule's page shows its decisions (fired / skipped /
// missed ...) as a timeline linking to the tasks it created; pause / resume / trigger.
import { h, put, s, clear, statusBadge, absTime, ago, notice, shortId, toast } from "../dom.js";
import { get, post, enc } from "../api.js";
import { has } from "../caps.js";
import { coalesce } from "../live.js";

const nextOf = (sc) => sc.next_at ?? sc.next_fire_at ?? sc.next_run_at ?? null;
const stateOf = (sc) => sc.status ?? (sc.paused ? "paused" : sc.deleted ? "deleted" : "active");

async function act(id, action, after) {
  try { await post(`/v1/schedules/${enc(id)}:${action}`); toast(`${action} accepted`); } catch (e) { toast(e.message, "error"); }
  after();
}

function actions(sc, after) {
  const st = stateOf(sc);
  return h("span", { class: "row" },
    has("POST", "/v1/schedules/{id}:pause") && st !== "paused" ? h("button", { "data-action": "pause", onclick: () => act(sc.id, "pause", after) }, "Pause") : null,
    has("POST", "/v1/schedules/{id}:resume") && st === "paused" ? h("button", { "data-action": "resume", onclick: () => act(sc.id, "resume", after) }, "Resume") : null,
    has("POST", "/v1/schedules/{id}:trigger") ? h("button", { "data-action": "trigger", onclick: () => act(sc.id, "trigger", after) }, "Trigger now") : null);
}

export function mount(root, { id }) {
  return id ? detail(root, id) : list(root);
}

function list(root) {
  const box = h("div", { id: "schedules" });
  root.append(h("div", { class: "panel" }, h("h1", {}, "Schedules"), box));
  if (!has("GET", "/v1/schedules")) { box.append(notice("Schedules are not available on this gateway (GET /v1/schedules).")); return {}; }
  async function load() {
    let items;
    try { items = (await get("/v1/schedules?limit=500")).items; } catch (e) { put(box, notice(e.message, "error")); return; }
    if (!items.length) { put(box, notice("No schedules yet (POST /v1/schedules).")); return; }
    put(box, h("div", { class: "table-wrap" }, h("table", { id: "schedules-table" },
      h("thead", {}, h("tr", {}, ["schedule", "cron", "time zone", "task type", "state", "next fire", "last fired", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((sc) => h("tr", { "data-id": sc.id },
        h("td", {}, h("a", { href: `#/schedules/${enc(sc.id)}` }, sc.name ?? sc.id), sc.spec?.description ? h("div", { class: "small muted" }, sc.spec.description) : null),
        h("td", { class: "mono" }, sc.cron ?? sc.spec?.cron), h("td", {}, sc.timezone ?? sc.spec?.timezone ?? ""),
        h("td", {}, sc.task?.type ?? sc.spec?.task?.type ?? ""), h("td", {}, statusBadge(stateOf(sc))),
        h("td", { title: absTime(nextOf(sc)) }, nextOf(sc) ? `${absTime(nextOf(sc))} (${ago(nextOf(sc))})` : "—"),
        h("td", {}, sc.last_tick_at ? ago(sc.last_tick_at) : "", sc.last_task_id ? [" → ", h("a", { class: "mono", href: `#/tasks/${enc(sc.last_task_id)}` }, shortId(sc.last_task_id))] : ""),
        h("td", {}, actions(sc, refresh))))))));
  }
  const refresh = coalesce(load, 1000);
  load();
  return { onEvent(e) { if (e.type === "submitted") refresh(); } };
}

function detail(root, id) {
  const head = h("div");
  const chart = h("div", { class: "gantt-wrap" });
  const table = h("div");
  root.append(h("h1", { class: "page-title" }, "Schedule ", h("span", { class: "mono" }, id)), h("div", { class: "panel" }, head), h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Decisions"), chart, table));
  async function load() {
    let sc, decisions;
    try {
      sc = await get(`/v1/schedules/${enc(id)}`);
      decisions = sc.decisions ?? sc.history ?? null;
      if (!decisions && has("GET", "/v1/schedules/{id}/events")) decisions = (await get(`/v1/schedules/${enc(id)}/events`)).events;
    } catch (e) { put(head, notice(e.message, "error")); return; }
    put(head, h("div", { class: "row" }, h("h1", {}, sc.name ?? sc.id), statusBadge(stateOf(sc)), h("span", { class: "spacer" }), actions(sc, load)),
      h("dl", { class: "kv" }, h("dt", {}, "cron"), h("dd", { class: "mono" }, `${sc.cron ?? sc.spec?.cron} (${sc.timezone ?? sc.spec?.timezone ?? "UTC"})`),
        h("dt", {}, "next fire"), h("dd", {}, nextOf(sc) ? `${absTime(nextOf(sc))} (${ago(nextOf(sc))})` : "—"),
        h("dt", {}, "upcoming"), h("dd", {}, (sc.next_fire_times || []).map(absTime).join(" · ") || "—"),
        h("dt", {}, "decisions"), h("dd", {}, `${sc.fired ?? 0} fired · ${sc.skipped ?? 0} skipped · ${sc.missed ?? 0} missed`),
        h("dt", {}, "task"), h("dd", { class: "mono small" }, JSON.stringify(sc.task ?? sc.spec?.task ?? {}))));
    if (!decisions) { put(chart, notice("This gateway does not list a schedule's decisions.")); clear(table); return; }
    const rows = decisions.map((e) => {
      const d = e.data ?? e;
      return { kind: e.type ?? d.event ?? d.decision, at: d.tick_at ?? d.first_at ?? e.at, task_id: d.task_id ?? d.running_task_id, d };
    });
    put(chart, decisionChart(rows));
    put(table, h("table", { id: "decisions" }, h("thead", {}, h("tr", {}, ["tick", "decision", "task", "detail"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.slice().reverse().map((r) => h("tr", {}, h("td", {}, absTime(r.at)), h("td", {}, statusBadge(r.kind)),
        h("td", {}, r.task_id ? h("a", { class: "mono", href: `#/tasks/${enc(r.task_id)}` }, shortId(r.task_id)) : ""),
        h("td", { class: "small muted" }, r.d.reason ?? (r.d.count ? `${r.d.count} ticks` : "")))))));
  }
  const refresh = coalesce(load, 1000);
  load();
  return { onEvent(e) { if (e.type === "submitted") refresh(); } };
}

/** Ticks on a time line, one colour per decision; a fired tick links to its task. */
function decisionChart(rows) {
  const width = 1000, height = 70, left = 10, right = 10;
  const ts = rows.map((r) => new Date(r.at).getTime()).filter((t) => !Number.isNaN(t));
  const svg = s("svg", { class: "gantt", viewBox: `0 0 ${width} ${height}` });
  if (!ts.length) return svg;
  const t0 = Math.min(...ts), t1 = Math.max(...ts, t0 + 1);
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  svg.append(s("line", { class: "axis", x1: left, x2: width - right, y1: 35, y2: 35, stroke: "var(--line)" }));
  const colour = { fired: "var(--ok)", caught_up: "var(--ok)", triggered: "var(--accent)", skipped: "var(--warn)", buffered: "var(--warn)", missed: "var(--fail)" };
  for (const r of rows) {
    const t = new Date(r.at).getTime();
    const mark = s("circle", { cx: x(t), cy: 35, r: 5, fill: colour[r.kind] ?? "var(--idle)" }, s("title", {}, `${r.kind} ${absTime(r.at)}`));
    svg.append(r.task_id ? s("a", { href: `#/tasks/${enc(r.task_id)}` }, mark) : mark);
  }
  svg.append(s("text", { x: left, y: 62 }, absTime(t0)), s("text", { x: width - right, y: 62, "text-anchor": "end" }, absTime(t1)));
  return svg;
}
