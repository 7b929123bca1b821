// Schedules: the list with next fire times (in the schedule's own zone, local time beside) and its
// policies; a schedule's page shows its decisions (fired / skipped / missed ...) as a timeline linking
// to the tasks it created; create, edit, delete, pause / resume / trigger.
import { h, put, patch, s, clear, statusBadge, absTime, ago, dur, notice, shortId, toast } from "../dom.js";
import { get, post, api, enc } from "../api.js";
import { has } from "../caps.js";
import { coalesce, holdWhileHovered } from "../live.js";
import { go } from "../router.js";
import { confirmAction } from "../confirm.js";

const nextOf = (sc) => sc.next_at ?? sc.next_fire_at ?? sc.next_run_at ?? null;
const stateOf = (sc) => sc.status ?? (sc.paused ? "paused" : sc.deleted ? "deleted" : "active");
const field = (sc, k) => sc[k] ?? sc.spec?.[k];
const zoneOf = (sc) => field(sc, "timezone") ?? "UTC";

/** "2026-12-04 02:30:00 EST · 08:30 local": the schedule's wall clock first, the reader's beside it. */
export function zoned(at, tz) {
  if (!at) return "—";
  const d = new Date(at);
  let there;
  try {
    const p = Object.fromEntries(new Intl.DateTimeFormat("en-US", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZoneName: "short" }).formatToParts(d).map((x) => [x.type, x.value]));
    there = `${p.year}-${p.month}-${p.day} ${p.hour === "24" ? "00" : p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
  } catch { there = `${absTime(at)} (${tz})`; }
  const local = absTime(at).slice(11, 16);
  return `${there} · ${local} local`;
}

/** Overlap, catch-up, window, grace, start/end in one line. */
function policies(sc) {
  const win = field(sc, "catchup_window_s"), grace = field(sc, "misfire_grace_s");
  const parts = [`overlap ${field(sc, "overlap") ?? "skip"}`, `catch-up ${field(sc, "catchup") ?? "skip"}${win ? ` (window ${dur(win * 1000)})` : ""}`];
  if (grace) parts.push(`misfire grace ${dur(grace * 1000)}`);
  if (field(sc, "start_at")) parts.push(`from ${absTime(field(sc, "start_at"))}`);
  if (field(sc, "end_at")) parts.push(`until ${absTime(field(sc, "end_at"))}`);
  return parts.join(" · ");
}

async function act(id, action, after) {
  try {
    const r = await post(`/v1/schedules/${enc(id)}:${action}`);
    toast(`${action} accepted`);
    // A schedule's own events reach no live stream (only its tasks' do): read until the read model
    // shows the change (bounded), or the view would show the old state until the schedule next fires,
    // which a paused one never does.
    const shown = { pause: (sc) => stateOf(sc) === "paused", resume: (sc) => stateOf(sc) !== "paused",
      trigger: (sc) => sc.last_task_id === r?.task_id }[action];
    if (shown) await untilTrue(async () => shown(await get(`/v1/schedules/${enc(id)}`)));
  } catch (e) { toast(e.message, "error"); }
  after();
}

/** Poll `test` (every 150 ms, at most `timeoutMs`) until it holds; a failed read is thrown. */
async function untilTrue(test, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await test()) return;
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function remove(sc, after) {
  const ok = await confirmAction({ title: `Delete schedule ${sc.name ?? sc.id}?`,
    lines: [`1 schedule (${field(sc, "cron")} ${zoneOf(sc)}): it stops firing. Tasks it already created are kept.`], action: "Delete schedule" });
  if (!ok) return;
  try { await api("DELETE", `/v1/schedules/${enc(sc.id)}`); toast("schedule deleted"); } catch (e) { toast(e.message, "error"); }
  after();
}

function actions(sc, after, onDelete = after) {
  const st = stateOf(sc);
  return h("span", { class: "row" },
    has("POST", "/v1/schedules/{id}:pause") && st !== "paused" ? h("button", { "data-action": "pause", onclick: () => act(sc.id, "pause", after) }, "Pause") : null,
    has("POST", "/v1/schedules/{id}:resume") && st === "paused" ? h("button", { "data-action": "resume", onclick: () => act(sc.id, "resume", after) }, "Resume") : null,
    has("POST", "/v1/schedules/{id}:trigger") ? h("button", { "data-action": "trigger", "data-key": "trigger", onclick: () => act(sc.id, "trigger", after) }, "Trigger now") : null,
    has("DELETE", "/v1/schedules/{id}") && st !== "deleted" ? h("button", { class: "danger", "data-action": "delete", "data-key": "delete", onclick: () => remove(sc, onDelete) }, "Delete…") : null);
}

/** The create / edit form: cron, zone, task template and policies. `sc` given = edit (PATCH). */
function scheduleForm(sc, done) {
  const tpl = sc ? field(sc, "task") ?? {} : {};
  const f = {
    cron: h("input", { name: "cron", required: true, value: sc ? field(sc, "cron") : "*/5 * * * *", placeholder: "*/5 * * * *" }),
    timezone: h("input", { name: "timezone", value: sc ? zoneOf(sc) : Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC" }),
    type: h("input", { name: "task_type", required: true, value: tpl.type ?? "demo.echo" }),
    queue: h("input", { name: "queue", value: tpl.queue ?? "default" }),
    payload: h("textarea", { name: "payload", rows: 2 }),
    overlap: h("select", { name: "overlap" }, ["skip", "allow", "buffer_one", "cancel_previous"].map((v) => h("option", { value: v }, v))),
    catchup: h("select", { name: "catchup" }, ["skip", "run_once", "run_all"].map((v) => h("option", { value: v }, v))),
    description: h("input", { name: "description", value: sc ? field(sc, "description") ?? "" : "" }),
  };
  f.payload.value = JSON.stringify(tpl.payload ?? {});
  f.overlap.value = sc ? field(sc, "overlap") ?? "skip" : "skip";
  f.catchup.value = sc ? field(sc, "catchup") ?? "skip" : "skip";
  const msg = h("div", { class: "error-text", role: "alert" });
  const form = h("form", { class: "submit schedule-form", id: sc ? "schedule-edit" : "schedule-new", onsubmit: async (ev) => {
    ev.preventDefault();
    if (form.dataset.saving) return; // one save at a time: a second click sent a second write
    msg.textContent = "";
    let payload;
    try { payload = JSON.parse(f.payload.value || "null"); } catch (e) { msg.textContent = `payload is not valid JSON: ${e.message}`; return; }
    const body = { cron: f.cron.value.trim(), timezone: f.timezone.value.trim() || "UTC", overlap: f.overlap.value, catchup: f.catchup.value,
      description: f.description.value, task: { ...(sc ? tpl : {}), type: f.type.value.trim(), queue: f.queue.value.trim() || "default", payload } };
    const button = form.querySelector("button[type=submit]");
    form.dataset.saving = "1"; button.disabled = true;
    try {
      const r = sc ? await api("PATCH", `/v1/schedules/${enc(sc.id)}`, body) : await post("/v1/schedules", body);
      await settled(sc ? sc.id : r.id, sc ? body : null, sc?.updated_at ?? null); // the cron comes back normalised: compare the rest
      toast(sc ? "schedule saved" : "schedule created");
      done(r?.id ?? sc?.id);
    } catch (e) { msg.textContent = e.message; } finally { delete form.dataset.saving; button.disabled = false; }
  } },
  h("label", {}, "Cron (5 or 6 fields, or @hourly)", f.cron), h("label", {}, "Time zone (IANA)", f.timezone),
  h("label", {}, "Task type", f.type), h("label", {}, "Queue", f.queue),
  h("label", {}, "Overlap", f.overlap), h("label", {}, "Catch-up", f.catchup),
  h("label", { class: "wide" }, "Payload (JSON)", f.payload), h("label", { class: "wide" }, "Description", f.description),
  h("div", { class: "wide row" }, h("button", { type: "submit", class: "primary" }, sc ? "Save" : "Create schedule"), msg));
  return form;
}

/**
 * Wait (bounded) until the read model shows a write: a new schedule listed (so its page opens without
 * a 404), an edit applied (so the page does not show the old policies).
 */
async function settled(id, body = null, since = null) {
  await untilTrue(async () => {
    const sc = (await get("/v1/schedules?limit=500")).items.find((x) => x.id === id);
    // The API leaves a default out (overlap and catch-up "skip", time zone "UTC"): a missing value is the default.
    const shown = (k) => field(sc, k) ?? (k === "timezone" ? "UTC" : "skip");
    return sc && (!body || ["timezone", "overlap", "catchup"].every((k) => shown(k) === body[k]) && (sc.updated_at ?? "") !== since);
  });
}

export function mount(root, { id }) {
  return id ? detail(root, id) : list(root);
}

function list(root) {
  const box = h("div", { id: "schedules" });
  const canCreate = has("POST", "/v1/schedules");
  const create = canCreate ? h("details", { class: "create" }, h("summary", {}, "New schedule"), scheduleForm(null, (newId) => go(["schedules", newId]))) : null;
  root.append(h("div", { class: "panel" }, h("h1", {}, "Schedules"), create, box));
  if (!has("GET", "/v1/schedules")) { box.append(notice("Schedules are not available on this gateway (GET /v1/schedules).")); return {}; }
  async function load() {
    let items;
    try { items = (await get("/v1/schedules?limit=500")).items; } catch (e) { patch(box, notice(e.message, "error")); return; }
    if (!items.length) { patch(box, notice("No schedules yet.")); return; }
    patch(box, h("div", { class: "table-wrap" }, h("table", { id: "schedules-table", class: "cards", "aria-label": "schedules" },
      h("thead", {}, h("tr", {}, ["schedule", "cron", "task type", "state", "next fire", "policies", "last fired", "actions"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, items.map((sc) => h("tr", { "data-id": sc.id },
        h("td", { "data-label": "schedule" }, h("a", { href: `#/schedules/${enc(sc.id)}` }, sc.name ?? sc.id), field(sc, "description") ? h("div", { class: "small muted" }, field(sc, "description")) : null),
        h("td", { class: "mono", "data-label": "cron" }, field(sc, "cron"), h("div", { class: "small muted" }, zoneOf(sc))),
        h("td", { "data-label": "task type" }, sc.task?.type ?? sc.spec?.task?.type ?? ""), h("td", { "data-label": "state" }, statusBadge(stateOf(sc))),
        h("td", { class: "wrap small", "data-label": "next fire", title: absTime(nextOf(sc)) }, nextOf(sc) ? [zoned(nextOf(sc), zoneOf(sc)), h("div", { class: "muted" }, ago(nextOf(sc)))] : "—"),
        h("td", { class: "wrap small", "data-label": "policies" }, policies(sc)),
        h("td", { "data-label": "last fired" }, sc.last_tick_at ? ago(sc.last_tick_at) : sc.last_task_id ? "triggered" : "", sc.last_task_id ? [" → ", h("a", { class: "mono", href: `#/tasks/${enc(sc.last_task_id)}` }, shortId(sc.last_task_id))] : ""),
        h("td", { "data-label": "", class: "actions" }, actions(sc, refresh))))))));
  }
  const refresh = coalesce(load, 1000);
  refresh();
  // onLiveStart: a change between the first read and the live stream's start is not missed.
  return { onEvent(e) { if (fromSchedule(e)) refresh(); }, onLiveStart() { refresh(); } };
}

/** A task a schedule created (its `submitted` carries the tag `schedule:<id>`): of any schedule, or of `id`. */
function fromSchedule(e, id = null) {
  if (e.type !== "submitted") return false;
  const tags = e.data?.tags ?? [];
  return id === null ? tags.some((t) => String(t).startsWith("schedule:")) : tags.includes(`schedule:${id}`);
}
// A page of a schedule's decisions, newest first (a schedule that fires every second has 86,400 a day).
const DECISIONS = 20;

function detail(root, id) {
  const head = h("div");
  const editHost = h("div", { id: "schedule-edit-host" });
  const chart = h("div", { class: "gantt-wrap" });
  const shown = h("div");
  const table = h("div");
  const heldNote = h("p", { class: "held-note", id: "decisions-held", hidden: true, role: "status" }, "New decisions are held while the pointer is on the list; they show when it leaves.");
  // Paging: `after` is the page shown (null: the latest, kept live); `newer` the pages before it.
  let after = null, nextAfter = null, generation = 0, editedAt;
  const newer = [];
  // Disabled until the page asked for is shown: a double click must not skip a page.
  const turn = (to) => { btnNewer.disabled = btnOlder.disabled = true; to(); load(); };
  const btnNewer = h("button", { id: "decisions-newer", disabled: true, onclick: () => turn(() => { after = newer.pop() ?? null; }) }, "← Newer");
  const btnOlder = h("button", { id: "decisions-older", disabled: true, onclick: () => turn(() => { newer.push(after); after = nextAfter; }) }, "Older →");
  root.append(h("h1", { class: "page-title" }, "Schedule ", h("span", { class: "mono" }, id)), h("div", { class: "panel" }, head),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Decisions"), chart, shown, heldNote, table, h("div", { class: "pager" }, btnNewer, btnOlder)));
  async function load() {
    const mine = ++generation;
    let sc, decisions, more = false, next = null;
    try {
      sc = await get(`/v1/schedules/${enc(id)}`);
      decisions = sc.decisions ?? sc.history ?? null;
      if (!decisions && has("GET", "/v1/schedules/{id}/events")) {
        const page = await get(`/v1/schedules/${enc(id)}/events?order=desc&limit=${DECISIONS}${after === null ? "" : `&after=${after}`}`);
        more = page.next_after != null;
        next = page.next_after ?? null;
        decisions = page.events; // newest first
      }
    } catch (e) { if (mine === generation) patch(head, notice(e.message, "error"), editHost); return; } // an open edit form stays
    if (mine !== generation) return; // a later page or refresh decides what is shown
    nextAfter = next;
    patch(head, h("div", { class: "row" }, sc.name ? h("h2", {}, sc.name) : null, statusBadge(stateOf(sc)), h("span", { class: "spacer" }),
      actions(sc, load, () => go(["schedules"]))),
    h("dl", { class: "kv" }, field(sc, "description") ? [h("dt", {}, "description"), h("dd", { id: "description" }, field(sc, "description"))] : null,
      h("dt", {}, "cron"), h("dd", { class: "mono" }, `${field(sc, "cron")} (${zoneOf(sc)})`),
      h("dt", {}, "next fire"), h("dd", { id: "next-fire" }, nextOf(sc) ? `${zoned(nextOf(sc), zoneOf(sc))} (${ago(nextOf(sc))})` : "—"),
      h("dt", {}, "upcoming"), h("dd", {}, (sc.next_fire_times || []).map((t) => h("div", {}, zoned(t, zoneOf(sc))))),
      h("dt", {}, "policies"), h("dd", { id: "policies" }, policies(sc)),
      h("dt", {}, "decisions"), h("dd", { title: "ticks of the cron; Trigger now runs are listed below, not counted here" },
        `${sc.fired ?? 0} fired · ${sc.skipped ?? 0} skipped · ${sc.missed ?? 0} missed`),
      h("dt", {}, "task"), h("dd", { class: "mono small" }, JSON.stringify(sc.task ?? sc.spec?.task ?? {}))),
    editHost);
    // The edit form is built again only when the schedule changed and the form is closed: a refresh
    // never throws away what is being typed, nor the focus on its summary.
    if (has("PATCH", "/v1/schedules/{id}") && !editHost.querySelector("details[open]") && sc.updated_at !== editedAt) {
      editedAt = sc.updated_at;
      put(editHost, h("details", { class: "create" }, h("summary", {}, "Edit"), scheduleForm(sc, () => { put(editHost); editedAt = undefined; load(); })));
    }
    btnNewer.disabled = after === null;
    btnOlder.disabled = !more;
    if (!decisions) { patch(chart, notice("This gateway does not list a schedule's decisions.")); clear(table); clear(shown); return; }
    const rows = decisions.map((e) => {
      const d = e.data ?? e;
      return { seq: e.seq, kind: e.type ?? d.event ?? d.decision, at: d.tick_at ?? d.first_at ?? e.at, task_id: d.task_id ?? d.running_task_id, d };
    });
    patch(chart, decisionChart(rows, Math.max(300, Math.round(chart.clientWidth || 1000))));
    patch(shown, more || after !== null ? h("p", { id: "decisions-shown", class: "small muted" },
      after === null ? `The latest ${rows.length} decisions, newest first; the counts above are of all of them.` : `${rows.length} older decisions, newest first.`) : null);
    patch(table, h("table", { id: "decisions", class: "cards", "aria-label": "decisions" }, h("thead", {}, h("tr", {}, ["time", "decision", "task", "detail"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", { "data-key": r.seq ?? null }, h("td", { "data-label": "time" }, absTime(r.at)), h("td", { "data-label": "decision" }, statusBadge(r.kind)),
        h("td", { "data-label": "task" }, r.task_id ? h("a", { class: "mono", href: `#/tasks/${enc(r.task_id)}` }, shortId(r.task_id)) : ""),
        h("td", { class: "small muted", "data-label": "detail" }, r.d.reason ?? (r.d.count ? `${r.d.count} ticks` : "")))))));
  }
  const refresh = coalesce(() => (after === null ? load() : null), 1000); // an older page does not change
  const liveRefresh = holdWhileHovered(table, refresh, heldNote); // rows stay put under the pointer
  load();
  return { onEvent(e) { if (fromSchedule(e, id)) liveRefresh(); }, onLiveStart() { liveRefresh(); } };
}

/** Ticks on a time line, one colour per decision; a fired tick links to its task. */
function decisionChart(rows, width = 1000) {
  const height = 70, left = 10, right = 10; // drawn at the box's own width: its labels stay readable on a phone
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
