// The task list: server-side filters and cursor pagination (so 100,000 tasks cost one page), kept
// live by the event stream: a page is re-read (coalesced, one request in flight) when an event
// touches one of its rows, or a new task may belong on the first page.
import { h, put, clear, statusBadge, absTime, ago, shortId, notice, toast } from "../dom.js";
import { get, post, qs, enc, HttpError } from "../api.js";
import { hasParam, capsLoaded } from "../caps.js";
import { coalesce } from "../live.js";
import { go } from "../router.js";
import { confirmAction, describeFilter } from "../confirm.js";
import { rememberNewer, newerOf } from "../pages.js";
import { ALLOWED } from "../commands.js";

/** Events that change a task's status (or archive flag): they can move a task into a filtered list. */
const MOVES = new Set(["scheduled", "queued", "paused", "resumed", "attempt_started", "attempt_failed",
  "attempt_timed_out", "retry_scheduled", "succeeded", "failed", "dead_lettered", "cancel_requested", "cancelled",
  "attempt_released", "replayed", "archived", "unarchived"]);

/** Mounted before the route table is loaded (main.js): the first page is asked for at once. */
export const beforeCaps = true;

export const STATUSES = ["scheduled", "queued", "paused", "running", "retrying", "cancelling", "succeeded", "failed", "cancelled"];
const PAGE = 50;
const EMPTY_STRETCHES = 9; // empty pages of a search or tag gone through by itself (20,000 tasks each)
const MAX_SELECT = 10_000;
const STATUS_GROUPS = [["waiting (scheduled, queued, paused, retrying)", "scheduled,queued,paused,retrying"],
  ["active (running, cancelling)", "running,cancelling"], ["finished (succeeded, failed, cancelled)", "succeeded,failed,cancelled"],
  ["not finished", "scheduled,queued,paused,running,retrying,cancelling"]];
const SORTS = [["-created_at", "newest first"], ["created_at", "oldest first"], ["-updated_at", "recently changed"], ["updated_at", "least recently changed"]];

export function mount(root, { params }) {
  let state = { ...params };
  let items = [];
  let nextCursor = null;
  const selected = new Set();
  let cursorId = null; // the task under the j/k cursor: a task, not a row position, so rows arriving above do not move it onto another task
  let newSince = 0;
  const rowsById = new Map();
  const statusById = new Map(); // the last status seen of every task listed or selected: the bulk confirmation counts with it

  const tbody = h("tbody");
  const info = h("span", { class: "muted small", id: "tasks-info" });
  const newBanner = h("button", { class: "link", hidden: true, onclick: () => setState({ ...state, cursor: "" }) });
  const bulkCount = h("span", { class: "muted small" });
  const btnCancel = h("button", { class: "danger", disabled: true, "data-bulk": "cancel", onclick: () => bulk("cancel") }, "Cancel selected…");
  let allMatching = false;
  const btnAll = h("button", { type: "button", "data-bulk": "select-all", onclick: () => selectAllMatching() }, "Select all matching");
  const btnNone = h("button", { type: "button", class: "link", hidden: true, onclick: () => { selected.clear(); allMatching = false; renderRows(); } }, "clear selection");
  const btnRetry = h("button", { disabled: true, "data-bulk": "retry", onclick: () => bulk("retry") }, "Retry selected…");
  const checkAll = h("input", { type: "checkbox", "aria-label": "select all on page", onchange: () => {
    for (const t of items) checkAll.checked ? selected.add(t.id) : selected.delete(t.id);
    renderRows();
  } });
  const pagesOf = () => `tasks ${JSON.stringify(filterQuery())}`; // the pages of one filter
  const btnPrev = h("button", { onclick: () => setState({ ...state, cursor: newerOf(pagesOf(), state.cursor || "") }) }, "← Newer");
  const btnNext = h("button", { onclick: () => { rememberNewer(pagesOf(), nextCursor, state.cursor || ""); setState({ ...state, cursor: nextCursor }); } }, "Older →");
  const errorBox = h("div");

  // ---- filters ----------------------------------------------------------------------------
  const fStatus = h("select", { name: "status" }, h("option", { value: "" }, "any status"),
    h("optgroup", { label: "several" }, STATUS_GROUPS.map(([label, v]) => h("option", { value: v }, label))),
    h("optgroup", { label: "one" }, STATUSES.map((s) => h("option", { value: s }, s))));
  const fTag = h("input", { name: "tag", placeholder: "tag, e.g. billing", size: 12 });
  const fSort = h("select", { name: "sort" }, SORTS.map(([v, label]) => h("option", { value: v }, label)));
  const fArchived = h("input", { type: "checkbox", name: "archived" });
  const fType = h("input", { name: "type", placeholder: "type, e.g. demo.echo", size: 16 });
  const fQueue = h("input", { name: "queue", placeholder: "queue", size: 10 });
  const fSearch = h("input", { type: "search", name: "q", placeholder: "search id or type  ( / )", "data-search": true });
  const fFrom = h("input", { type: "datetime-local", name: "created_after", step: 1 });
  const fTo = h("input", { type: "datetime-local", name: "created_before", step: 1 });
  // This view mounts before the route table is in (main.js `beforeCaps`): what depends on it is decided once it is.
  const rangeOk = () => hasParam("GET", "/v1/tasks", "created_after");
  const applyCaps = () => { for (const el of [fFrom, fTo]) if (!rangeOk()) { el.disabled = true; el.title = "time range filter not available on this gateway"; } };
  applyCaps();
  capsLoaded().then(applyCaps);
  const form = h("form", { class: "filters", role: "search", onsubmit: (ev) => { ev.preventDefault(); applyFilters(); } },
    h("label", {}, "Status", fStatus), h("label", {}, "Type", fType), h("label", {}, "Queue", fQueue), h("label", {}, "Tag", fTag),
    h("label", {}, "Created from", fFrom), h("label", {}, "to", fTo),
    h("label", {}, "Search", fSearch), h("label", {}, "Sort", fSort),
    h("label", { class: "inline" }, fArchived, "archived"),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("button", { type: "button", onclick: () => { form.reset(); applyFilters(); } }, "Clear"));
  fStatus.addEventListener("change", applyFilters);
  fSort.addEventListener("change", applyFilters);
  fArchived.addEventListener("change", applyFilters);

  function toLocalInput(iso) { if (!iso) return ""; const d = new Date(iso); return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19); }
  function fromLocalInput(v) { return v ? new Date(v).toISOString() : ""; }
  function fillForm() {
    const st = state.status || "";
    if (st && ![...fStatus.options].some((o) => o.value === st)) fStatus.append(h("option", { value: st }, st.replaceAll(",", ", ")));
    fStatus.value = st; fType.value = state.type || ""; fQueue.value = state.queue || ""; fTag.value = state.tag || "";
    fSort.value = state.sort || "-created_at"; fArchived.checked = state.archived === "true";
    fSearch.value = state.q || ""; fFrom.value = toLocalInput(state.created_after); fTo.value = toLocalInput(state.created_before);
  }
  function applyFilters() {
    setState({ status: fStatus.value, type: fType.value.trim(), queue: fQueue.value.trim(), tag: fTag.value.trim(), q: fSearch.value.trim(),
      sort: fSort.value === "-created_at" ? "" : fSort.value, archived: fArchived.checked ? "true" : "",
      created_after: fromLocalInput(fFrom.value), created_before: fromLocalInput(fTo.value), cursor: "" });
  }
  function setState(next) {
    go(["tasks"], next);
  }

  /** The applied filter as API query parameters (the list, "select all matching" and the confirmation share it). */
  function filterQuery() {
    const q = { status: state.status, type: state.type, queue: state.queue, tag: state.tag, sort: state.sort, archived: state.archived };
    if (rangeOk()) { q.created_after = state.created_after; q.created_before = state.created_before; }
    if (state.q) q.q = state.q;
    return q;
  }

  /** Select every task the applied filter matches, across pages (up to MAX_SELECT). */
  async function selectAllMatching() {
    btnAll.disabled = true;
    let cursor = null;
    try {
      do {
        const page = await get(`/v1/tasks${qs({ ...filterQuery(), limit: 500, cursor })}`);
        for (const t of page.items) { selected.add(t.id); statusById.set(t.id, t.status); }
        cursor = page.next_cursor;
      } while (cursor && selected.size < MAX_SELECT);
      allMatching = true;
      toast(`${selected.size.toLocaleString()} tasks selected: all matching ${scopeText()}${cursor ? ` (stopped at ${MAX_SELECT.toLocaleString()})` : ""}`);
    } catch (e) { toast(e.message, "error"); }
    btnAll.disabled = false;
    renderRows();
  }

  // ---- data -------------------------------------------------------------------------------
  // Loads in flight, and the newest one started: an older answer arriving last is not shown.
  // Events that come during a load are looked at once it has rendered (`arrived`): a page read
  // while an event was being committed may not show it, and its row may not be on screen yet.
  let inFlight = 0;
  let generation = 0;
  const arrived = [];
  async function load() {
    const mine = ++generation;
    inFlight += 1;
    try { await read(mine); } finally { inFlight -= 1; }
  }
  async function read(mine) {
    // The route table decides how a search or a time range is asked; the plain list needs none of it.
    if (state.q || state.created_after || state.created_before) await capsLoaded();
    // index.html sends this first page at start-up, before the modules load: keep its keys and their order alike.
    const query = { limit: PAGE, cursor: state.cursor, ...filterQuery() };
    let found, next = null, failure = null;
    try {
      if (state.q && !hasParam("GET", "/v1/tasks", "q")) {
        // Without server-side search, a search is an exact id lookup.
        const r = await fetch(`/v1/tasks/${enc(state.q)}`, { credentials: "same-origin" });
        found = r.ok ? [await r.json()] : [];
      } else {
        let page = await get(`/v1/tasks${qs(query)}`);
        // A filter no index serves reads the list a stretch at a time: an empty page with a cursor
        // found nothing in its stretch. Go on by itself for a few stretches before showing one.
        for (let more = EMPTY_STRETCHES; more > 0 && !page.items.length && page.next_cursor && mine === generation; more -= 1) {
          setText(info, "searching older tasks…");
          page = await get(`/v1/tasks${qs({ ...query, cursor: page.next_cursor })}`);
        }
        found = page.items;
        next = page.next_cursor;
      }
    } catch (e) {
      failure = e;
      found = [];
    }
    if (mine !== generation) return; // a newer load (another filter, a later refresh) decides the page
    items = found;
    for (const t of items) statusById.set(t.id, t.status);
    nextCursor = next;
    clear(errorBox);
    if (failure) errorBox.append(notice(failure.message, "error"));
    renderRows();
    for (const e of arrived.splice(0)) onLiveEvent(e);
  }
  const refresh = coalesce(load, 250);

  /** An event touching a listed row re-reads the page; a new task on the first page too, or counts on a later one.
   * On a first page filtered by status (or archived, or sorted by last change), an event that changes a task's
   * status may move a task not listed into the page: that re-reads it too (coalesced). */
  function onLiveEvent(e) {
    if (rowsById.has(e.task_id)) { refresh(); return; }
    if (e.type === "submitted") {
      if (state.q) return;
      if (!state.cursor) refresh();
      else { newSince += 1; newBanner.hidden = false; newBanner.textContent = `${newSince} new — show newest`; }
    } else if (!state.cursor && !state.q && MOVES.has(e.type)
        && (state.status || state.archived === "true" || (state.sort || "").includes("updated"))) {
      refresh();
    }
  }

  /** Attempts in words: after a replay the count passes max_attempts (each run has a fresh budget). */
  function attemptsText(t) {
    return t.attempts > t.max_attempts ? `${t.attempts} (${t.max_attempts}/run)` : `${t.attempts}/${t.max_attempts}`;
  }
  function setText(el, text) { if (el.textContent !== text) el.textContent = text; }

  /** One row with its cells, built once per task id; live refreshes patch what changed in place. */
  function makeRow(t) {
    const tr = h("tr", { "data-id": t.id });
    const box = h("input", { type: "checkbox", "aria-label": `select ${t.id}`, onchange: (ev) => {
      ev.target.checked ? selected.add(t.id) : selected.delete(t.id); updateBulk(); tr.classList.toggle("selected", ev.target.checked);
    } });
    const c = {
      box, type: h("td", { "data-label": "type" }), queue: h("td", { class: "hide-narrow", "data-label": "queue" }),
      status: h("td", { class: "status", "data-label": "status" }), attempts: h("td", { class: "num", "data-label": "attempts" }),
      prio: h("td", { class: "num hide-narrow", "data-label": "prio" }), created: h("td", { class: "hide-narrow ago", "data-label": "created" }),
      updated: h("td", { class: "ago", "data-label": "updated" }),
    };
    tr.append(h("td", { class: "check" }, box),
      h("td", { class: "mono", "data-label": "id" }, h("a", { href: `#/tasks/${enc(t.id)}`, title: t.id }, shortId(t.id))),
      c.type, c.queue, c.status, c.attempts, c.prio, c.created, c.updated);
    tr.cells_ = c;
    return tr;
  }
  function patchRow(tr, t) {
    const c = tr.cells_;
    setText(c.type, t.type); setText(c.queue, t.queue); setText(c.prio, String(t.priority));
    setText(c.attempts, attemptsText(t));
    c.attempts.title = t.attempts > t.max_attempts ? `${t.attempts} attempts in all; a replay starts a fresh budget of ${t.max_attempts}` : "";
    if (c.status.dataset.status !== t.status) { put(c.status, statusBadge(t.status)); c.status.dataset.status = t.status; }
    c.created.dataset.at = t.created_at ?? ""; c.created.title = absTime(t.created_at); setText(c.created, ago(t.created_at));
    c.updated.dataset.at = t.updated_at ?? ""; c.updated.title = absTime(t.updated_at); setText(c.updated, ago(t.updated_at));
    if (c.box.checked !== selected.has(t.id)) c.box.checked = selected.has(t.id);
  }

  function renderRows() {
    const seen = new Set();
    items.forEach((t, i) => {
      seen.add(t.id);
      let tr = rowsById.get(t.id);
      const prevStatus = tr?.dataset.status;
      if (!tr) { tr = makeRow(t); rowsById.set(t.id, tr); }
      patchRow(tr, t);
      if (tr.dataset.status !== t.status) tr.dataset.status = t.status;
      tr.classList.toggle("selected", selected.has(t.id));
      tr.classList.toggle("cursor", t.id === cursorId);
      if (prevStatus && prevStatus !== t.status) { tr.classList.remove("flash"); void tr.offsetWidth; tr.classList.add("flash"); }
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const [id, tr] of rowsById) if (!seen.has(id)) { tr.remove(); rowsById.delete(id); }
    // A filter no index serves is checked on a stretch of the list per page: an empty page with a
    // cursor means none matched in that stretch, not that none match at all.
    const emptyText = nextCursor ? "No matches among the tasks searched so far: Older → searches further." : "No tasks match.";
    let empty = tbody.querySelector("tr.empty");
    if (empty && empty.textContent !== emptyText) { empty.remove(); empty = null; }
    if (!items.length) { if (!empty) tbody.append(h("tr", { class: "empty" }, h("td", { colspan: 9, class: "muted" }, emptyText))); }
    else empty?.remove();
    setText(info, `${items.length} task${items.length === 1 ? "" : "s"} on this page`);
    btnPrev.disabled = !state.cursor;
    btnNext.disabled = !nextCursor;
    updateBulk();
  }
  // Relative times tick (text only) between refreshes.
  const ticker = setInterval(() => { for (const td of tbody.querySelectorAll("td.ago[data-at]")) setText(td, ago(td.dataset.at)); }, 5000);

  function updateBulk() {
    bulkCount.textContent = bulkRun ? `${bulkRun.verb}: ${bulkRun.done.toLocaleString()} of ${bulkRun.total.toLocaleString()} sent…`
      : selected.size ? `${selected.size.toLocaleString()} selected${allMatching ? " (all matching)" : ""}` : "";
    btnNone.hidden = selected.size === 0;
    btnCancel.disabled = btnRetry.disabled = selected.size === 0 || bulkRun !== null; // one bulk action at a time
    checkAll.checked = items.length > 0 && items.every((t) => selected.has(t.id));
  }

  /** The applied filter in words, as the confirmation names it. */
  function scopeText() {
    return describeFilter({ status: state.status?.replaceAll(",", "/"), type: state.type, queue: state.queue, tag: state.tag, search: state.q,
      archived: state.archived === "true" ? "yes" : "",
      "created from": state.created_after, "created to": state.created_before }, "no filter (all tasks)");
  }

  /** A bulk action under way (its progress shown in place of the selection count), or null. The browser
   * sends it request by request: leaving the page stops it, so the page asks first. */
  let bulkRun = null;
  function warnLeaving(ev) { ev.preventDefault(); ev.returnValue = ""; }
  async function bulk(action) {
    const ids = [...selected];
    if (!ids.length || bulkRun) return;
    const verb = action === "cancel" ? "Cancel" : "Retry";
    // Tasks whose last status seen does not allow the command: the gateway refuses each of them.
    const refused = ids.filter((id) => statusById.has(id) && !ALLOWED[action](statusById.get(id))).length;
    const confirmed = await confirmAction({
      title: `${verb} ${ids.length.toLocaleString()} selected task${ids.length === 1 ? "" : "s"}?`,
      lines: [`${allMatching ? "All tasks matching" : "Selected from the list filtered by"}: ${scopeText()}.`,
        action === "cancel" ? "Running tasks are asked to stop; queued and scheduled ones never run." : "Failed and cancelled tasks run again with a fresh budget of their max_attempts (attempt numbers continue).",
        refused ? (action === "cancel" ? `${refused === ids.length ? "All" : refused.toLocaleString()} of them ${refused === 1 ? "has" : "have"} finished or ${refused === 1 ? "is" : "are"} being cancelled: ${refused === 1 ? "it" : "they"} cannot be cancelled and will be refused.`
          : `${refused === ids.length ? "All" : refused.toLocaleString()} of them ${refused === 1 ? "has" : "have"} not failed or been cancelled: ${refused === 1 ? "it" : "they"} cannot be retried and will be refused.`) : null].filter(Boolean),
      action: `${verb} ${ids.length.toLocaleString()}`, danger: action === "cancel",
    });
    if (!confirmed || bulkRun) return;
    let ok = 0;
    const failures = [];
    const queue = [...ids];
    bulkRun = { verb, done: 0, total: ids.length };
    window.addEventListener("beforeunload", warnLeaving);
    updateBulk();
    try {
      await Promise.all(Array.from({ length: Math.min(8, queue.length) }, async () => {
        for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
          try { await post(`/v1/tasks/${enc(id)}:${action}`); ok += 1; selected.delete(id); }
          catch (e) { failures.push(`${shortId(id)}: ${e instanceof HttpError ? e.message : e}`); }
          bulkRun.done += 1; // going on after a move to another view: only leaving the page stops it
          updateBulk();
        }
      }));
    } finally {
      bulkRun = null;
      window.removeEventListener("beforeunload", warnLeaving);
      updateBulk();
    }
    if (!selected.size) allMatching = false;
    toast(`${action}: ${ok} accepted${failures.length ? `, ${failures.length} refused (${failures.slice(0, 3).join("; ")})` : ""}`,
      failures.length ? "error" : "info");
    refresh();
  }

  // ---- layout -----------------------------------------------------------------------------
  root.append(h("div", { class: "panel" },
    h("div", { class: "row" }, h("h1", {}, "Tasks"), h("span", { class: "spacer" }), newBanner),
    form,
    h("div", { class: "bulkbar" }, btnCancel, btnRetry, btnAll, bulkCount, btnNone, h("span", { class: "spacer" }), info),
    errorBox,
    h("div", { class: "table-wrap" }, h("table", { id: "tasks-table", class: "cards", "aria-label": "tasks" },
      h("thead", {}, h("tr", {}, h("th", {}, checkAll), h("th", {}, "id"), h("th", {}, "type"), h("th", { class: "hide-narrow" }, "queue"),
        h("th", {}, "status"), h("th", { class: "num" }, "attempts"), h("th", { class: "num hide-narrow" }, "prio"),
        h("th", { class: "hide-narrow" }, "created"), h("th", {}, "updated"))),
      tbody)),
    h("div", { class: "pager" }, btnPrev, btnNext)));
  fillForm();
  const ready = load();

  return {
    ready, // the first page is on screen
    unmount() { clearInterval(ticker); },
    onLiveStart() { refresh(); }, // a change between this page's read and the stream's start is not missed
    update(p) {
      const filterChanged = JSON.stringify({ ...p, cursor: "" }) !== JSON.stringify({ ...state, cursor: "" });
      if (filterChanged && allMatching) { selected.clear(); allMatching = false; }
      state = { ...p }; fillForm(); newSince = 0; newBanner.hidden = true; cursorId = null; load(); },
    onEvent(e) {
      if (inFlight > 0) arrived.push(e); // looked at once the page being read is on screen
      else onLiveEvent(e);
    },
    onKey(ev) {
      // Enter and x on a focused button or link are that control's: not the j/k cursor's task too.
      if ((ev.key === "Enter" || ev.key === "x") && ev.target instanceof Element
          && ev.target.closest("a, button, summary, [role=button], [role=link]")) return;
      const at = items.findIndex((t) => t.id === cursorId);
      if (ev.key === "j" || ev.key === "k") {
        const next = Math.max(0, Math.min(items.length - 1, at + (ev.key === "j" ? 1 : -1)));
        cursorId = items[next]?.id ?? null;
        renderRows();
        tbody.children[next]?.scrollIntoView({ block: "nearest" });
      } else if (ev.key === "Enter" && at >= 0) {
        go(["tasks", cursorId]);
      } else if (ev.key === "x" && at >= 0) {
        selected.has(cursorId) ? selected.delete(cursorId) : selected.add(cursorId);
        renderRows();
      }
    },
  };
}

