// Task detail: the attempt chart, the event list (full / compact / raw), payload/result/error, the
// time-travel scrubber and the actions, live over the task's own event stream (resumed by sequence).
import { h, put, patch, statusBadge, absTime, dur, jsonView, notice, copyText, toast } from "../dom.js";
import { api, get, post, enc, HttpError } from "../api.js";
import { has, hasParam } from "../caps.js";
import { LiveStream, coalesce } from "../live.js";
import { replaceParams } from "../router.js";
import { drawGantt, layout, LEGEND } from "./gantt.js";
import { confirmAction } from "../confirm.js";
import { ALLOWED, TERMINAL } from "../commands.js";

const ROW_H = 30;

export function mount(root, { id, params }) {
  let task = null;
  let events = [];
  let view = ["full", "compact", "raw"].includes(params.view) ? params.view : "full";
  let cursor = params.seq ? Number(params.seq) : null; // the scrubbed sequence; null = follow live
  let stream = null;
  let asOfAbort = null;
  let gone = false;

  const head = h("div", { class: "task-head" });
  const clock = h("div", { class: "clock", id: "task-clock", role: "timer", "aria-live": "off" });
  const editBox = h("div", { id: "task-edit" });
  const headAsOf = h("span", { id: "head-asof", class: "small" }); // while scrubbed: the status then, beside the status now
  const actions = h("div", { class: "row", id: "task-actions" });
  const details = h("dl", { class: "kv" });
  const ganttBox = h("div", { class: "gantt-wrap", id: "gantt" });
  const range = h("input", { type: "range", min: 0, max: 0, value: 0, id: "scrubber", "aria-label": "time travel: event" });
  const rangeLabel = h("span", { class: "small", id: "scrub-label" });
  const asOfBox = h("div", { id: "asof" });
  const tabs = h("div", { class: "tabs", role: "group", "aria-label": "event views" });
  const listBox = h("div", { id: "events-view" });
  const ioBox = h("div", { class: "grid cols-2", id: "io" });
  const errorBox = h("div");
  const skippedBox = h("div", { id: "task-skipped" });

  // Everything about the task: hidden when there is no such task, so the page says only that.
  const body = h("div", { id: "task-body" });
  root.append(h("h1", { class: "page-title" }, "Task ", h("span", { class: "id mono", id: "task-id" }, id)), errorBox, skippedBox, body);
  body.append(
    h("div", { class: "panel" }, head, clock, actions, editBox),
    h("div", { class: "grid cols-main-side", style: "margin-top:1rem" },
      h("div", { class: "panel" }, h("h2", {}, "Attempts"), ganttBox,
        h("div", { class: "legend" }, LEGEND.map(([c, l, line]) => h("span", {}, h("i", { style: `background:${c};${line ? "height:2px" : ""}` }), l)))),
      h("div", { class: "panel" }, h("h2", {}, "Details"), details)),
    h("div", { class: "panel scrubber", style: "margin-top:1rem" },
      h("div", { class: "row" }, h("h2", {}, "Time travel"), rangeLabel,
        h("span", { class: "spacer" }), h("button", { class: "link", id: "scrub-live", onclick: () => scrubTo(null) }, "follow live")),
      range, asOfBox),
    h("div", { class: "panel", style: "margin-top:1rem" },
      h("div", { class: "row" }, h("h2", {}, "Events"), h("span", { class: "spacer" }), tabs), listBox),
    h("div", { style: "margin-top:1rem" }, ioBox));

  // ---- header, details, actions -----------------------------------------------------------
  function renderHead() {
    if (!task) return;
    // Patched, not rebuilt: a task's events re-render the head, and a focused button stays focused.
    patch(head,
      h("span", { id: "task-status", title: "status now" }, statusBadge(task.status)),
      task.archived ? h("span", { class: "badge", id: "task-archived", title: "archived: listed only with the task list's archived filter" }, "archived") : null,
      headAsOf,
      h("span", {}, h("b", {}, task.type)),
      h("span", { class: "muted" }, `queue ${task.queue} · priority ${task.priority} · ${task.attempts > task.max_attempts ? `${task.attempts} attempts in all (a replay gives ${task.max_attempts} more; a worker's hand-back at its shutdown does not count)` : `attempt ${task.attempts}/${task.max_attempts}`}`));
    const st = task.status;
    const act = (label, action, enabled, key, cls) => h("button", { class: cls, "data-action": action, disabled: !enabled, title: key ? `${label} (${key})` : label,
      onclick: () => command(action) }, label);
    patch(actions,
      act("Cancel", "cancel", ALLOWED.cancel(st), "c", "danger"),
      act("Retry", "retry", ALLOWED.retry(st), "r"),
      st === "paused" ? act("Resume", "resume", true, "p") : act("Pause", "pause", ALLOWED.pause(st), "p"),
      ["scheduled", "queued", "paused"].includes(st) && has("PATCH", "/v1/tasks/{task_id}")
        ? h("button", { "data-action": "edit", "data-key": "edit", onclick: () => toggleEdit() }, "Edit…") : null,
      TERMINAL.has(st) && has("POST", "/v1/tasks/{task_id}:archive") && !task.archived
        ? h("button", { "data-action": "archive", "data-key": "archive", onclick: () => command("archive") }, "Archive…") : null,
      task.archived && has("POST", "/v1/tasks/{task_id}:unarchive")
        ? h("button", { "data-action": "unarchive", "data-key": "unarchive", title: "list it again", onclick: () => command("unarchive") }, "Unarchive") : null,
      h("button", { "data-key": "copy-id", onclick: async () => { await copyText(task.id); toast("id copied"); } }, "Copy id"),
      h("button", { "data-key": "copy-link", onclick: async () => { await copyText(location.href); toast("link copied"); } }, "Copy link"));
    const kv = [["created", absTime(task.created_at)], ["started", absTime(task.started_at)], ["finished", absTime(task.finished_at)],
      ["run at", absTime(task.run_at)], ["worker", task.worker_id], ["lease until", absTime(task.lease_until)],
      ["timeout", task.timeout ? `${task.timeout}s` : ""], ["tags", (task.tags || []).join(", ")], ["progress", task.progress ?? ""],
      ["last seq", task.last_seq]];
    // Events a read model could not apply (recorded and skipped, DESIGN Revision 2): say so plainly.
    const skipped = task.projection_errors || [];
    put(skippedBox, skipped.length ? notice(`The read model skipped ${skipped.length} event(s) of this task, so what this page shows may be incomplete (time travel folds the whole log): `
      + skipped.map((s) => `seq ${s.seq} ${s.event} in ${s.projection}: ${s.error}`).join("; "), "error") : null);
    patch(details, kv.filter(([, v]) => v !== "" && v !== null && v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
    patch(ioBox,
      h("div", { class: "panel" }, h("h3", {}, "Payload"), jsonView(task.payload)),
      h("div", { class: "panel", id: "result" }, ...resultPanel()));
  }

  /** The result, the final error, or — while another attempt is pending — the last attempt's error, labelled so. */
  function resultPanel() {
    const err = task.error;
    if (!err) return [h("h3", {}, "Result"), TERMINAL.has(task.status) ? jsonView(task.result) : h("p", { class: "muted" }, `No result yet: the task is ${task.status}.`)];
    const { traceback, ...rest } = err;
    const final = task.status === "failed";
    const title = final ? "Error" : `Last attempt's error (attempt ${task.status === "running" ? task.attempts - 1 : task.attempts}; the task is ${task.status} now)`;
    return [h("h3", {}, title), h("p", {}, h("b", {}, err.kind || "error"), ": ", err.message || ""),
      traceback ? h("pre", { class: "traceback" }, traceback) : null, jsonView(rest)];
  }

  // ---- the clock: a running attempt's elapsed time and lease countdown tick between events ----
  let lostAt = null;
  let lostWorker = null;
  function renderClock() {
    if (!task) return;
    const now = Date.now();
    const run = layout(events).attempts.find((a) => !a.endAt);
    let text = "";
    if (task.status === "running" && run) {
      const until = run.leases[run.leases.length - 1].until;
      text = `attempt ${run.n} running for ${dur(now - run.startedAt)} on ${run.worker ?? "?"} · `
        + (until >= now ? `ack deadline in ${dur(until - now)}` : `ack deadline passed ${dur(now - until)} ago`);
      if (lostAt !== null && lostWorker === run.worker) text += ` · worker lost (no heartbeat for ${dur(now - lostAt)}): redelivery at the deadline`;
    } else if (["scheduled", "retrying"].includes(task.status) && task.run_at) {
      const at = new Date(task.run_at).getTime();
      text = at >= now ? `runs in ${dur(at - now)} (at ${absTime(task.run_at)})` : `due since ${dur(now - at)}`;
    } else if (!TERMINAL.has(task.status)) {
      text = `${task.status} for ${dur(now - new Date(task.updated_at ?? task.created_at).getTime())}`;
    }
    clock.textContent = text;
    clock.hidden = !text;
  }
  let lastWorkerCheck = 0;
  async function checkWorker() {
    const run = layout(events).attempts.find((a) => !a.endAt);
    if (!run || !task || task.status !== "running" || !has("GET", "/v1/workers") || Date.now() - lastWorkerCheck < 5000) return;
    lastWorkerCheck = Date.now();
    try {
      const w = ((await get("/v1/workers")).items || []).find((x) => x.id === run.worker);
      if (w && w.status === "lost") { lostWorker = w.id; lostAt = new Date(w.last_heartbeat).getTime(); } else { lostWorker = null; lostAt = null; }
    } catch { /* the registry is optional for this page */ }
  }
  const ticker = setInterval(() => {
    if (!task || TERMINAL.has(task.status) || gone) return;
    renderClock();
    renderGantt();
    checkWorker();
  }, 1000);

  // ---- edit a task that has not started: payload, priority, run-at ----------------------------
  function toggleEdit() {
    if (editBox.firstChild) { put(editBox); return; }
    const payload = h("textarea", { name: "payload", rows: 4 });
    payload.value = JSON.stringify(task.payload ?? null, null, 2);
    const shownPayload = payload.value;
    const priority = h("input", { name: "priority", type: "number", min: 0, max: 9, value: task.priority });
    const runAt = h("input", { name: "run_at", type: "datetime-local", step: 1 });
    if (task.run_at) { const d = new Date(task.run_at); runAt.value = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19); }
    const shownRunAt = runAt.value; // the field shows whole seconds: sent only when the user changed it
    const msg = h("div", { class: "error-text", role: "alert" });
    // A message is about the values it was given: it goes once they change (the browser's own checks,
    // such as a priority above 9, stop a submit before this handler could say anything newer).
    put(editBox, h("form", { class: "submit", oninput: () => { msg.textContent = ""; }, onsubmit: async (ev) => {
      ev.preventDefault();
      // Only what the user changed is sent: a task without a payload shows `null`, and an update to a
      // null payload is refused (422), so an edit of its priority alone used to fail.
      const body = { priority: Number(priority.value) };
      if (payload.value !== shownPayload) {
        try { body.payload = JSON.parse(payload.value || "null"); } catch (e) { msg.textContent = `payload is not valid JSON: ${e.message}`; return; }
      }
      if (runAt.value && runAt.value !== shownRunAt) body.run_at = new Date(runAt.value).toISOString();
      try { await api("PATCH", `/v1/tasks/${enc(id)}`, body); toast("task updated"); put(editBox); reloadTask(); } catch (e) { msg.textContent = e.message; }
    } }, h("label", { class: "wide" }, "Payload (JSON)", payload), h("label", {}, "Priority (0 first … 9)", priority), h("label", {}, "Run at", runAt),
    h("div", { class: "wide row" }, h("button", { type: "submit", class: "primary" }, "Save changes"), h("button", { type: "button", onclick: () => put(editBox) }, "Close"), msg)));
  }

  async function command(action) {
    if (action === "archive") {
      const ok = await confirmAction({ title: "Archive this task?", lines: [`1 task: ${id}. It leaves the task lists (shown again with "archived"); its history is kept and its link still works.`],
        action: "Archive", danger: false });
      if (!ok) return;
    }
    if (action === "cancel") {
      const ok = await confirmAction({
        title: `Cancel this ${task?.status ?? ""} task?`,
        lines: [`1 task: ${id} (${task?.type ?? "?"}, queue ${task?.queue ?? "?"}).`,
          task?.status === "running" ? "Its worker is asked to stop the running attempt." : "It will not run."],
        action: "Cancel task",
      });
      if (!ok) return;
    }
    try {
      await post(`/v1/tasks/${enc(id)}:${action}`);
      toast(`${action} accepted`);
    } catch (e) {
      toast(`${action} refused: ${e.message}`, "error");
    }
  }

  // ---- chart ------------------------------------------------------------------------------
  function cursorEvent() { return cursor === null ? null : events.find((e) => e.seq === cursor) ?? null; }
  function renderGantt() {
    if (!events.length) return;
    const ce = cursorEvent();
    put(ganttBox, drawGantt(events, { live: task && !TERMINAL.has(task.status), cursorAt: ce ? new Date(ce.at).getTime() : null,
      width: Math.max(300, ganttBox.clientWidth || 1000), lostAt: lostWorker ? lostAt : null }));
  }

  // ---- scrubber: the server folds the state (GET ?as_of_seq=N); this page only displays it --
  const asOfOk = hasParam("GET", "/v1/tasks/{task_id}", "as_of_seq");
  function renderScrubber() {
    range.max = String(Math.max(0, events.length - 1));
    const idx = cursor === null ? events.length - 1 : events.findIndex((e) => e.seq === cursor);
    range.value = String(Math.max(0, idx));
    const e = events[Math.max(0, idx)];
    rangeLabel.textContent = e ? `event ${idx + 1} of ${events.length} · seq ${e.seq} · ${e.type} · +${dur(new Date(e.at) - new Date(events[0].at))}${cursor === null ? (task && TERMINAL.has(task.status) ? " · latest (finished)" : " · live") : ""}` : "";
  }
  async function showAsOf() {
    const e = cursor === null ? null : cursorEvent();
    if (!e) put(headAsOf);
    if (!e) { put(asOfBox, h("p", { class: "muted small" }, "Drag to any event to see the task as it was then (state folded by the server).")); return; }
    if (!asOfOk) { put(asOfBox, notice("Time travel is not available on this gateway (it needs GET /v1/tasks/{id}?as_of_seq=N).")); return; }
    asOfAbort?.abort();
    asOfAbort = new AbortController();
    try {
      const st = await get(`/v1/tasks/${enc(id)}?as_of_seq=${e.seq}`, { signal: asOfAbort.signal });
      if (gone || cursor !== e.seq) return;
      put(headAsOf, "now · was ", statusBadge(st.status), ` at seq ${e.seq}`);
      put(asOfBox, h("div", { class: "asof" }, h("span", {}, `as of seq ${e.seq} (${e.type}, ${absTime(e.at)}):`),
        h("span", { id: "asof-status" }, statusBadge(st.status)), h("span", { class: "muted" }, `attempts ${st.attempts ?? st.attempt ?? ""}`)),
      h("div", { id: "asof-json" }, jsonView(st)));
      asOfBox.dataset.seq = String(e.seq);
    } catch (err) {
      if (err.name === "AbortError") return;
      put(asOfBox, notice(err.message, "error"));
    }
  }
  function scrubTo(seq) {
    cursor = seq;
    replaceParams({ ...params, view, seq: seq ?? "" });
    renderScrubber(); renderGantt(); renderList(); showAsOf();
  }
  range.addEventListener("input", () => {
    const idx = Number(range.value);
    scrubTo(idx >= events.length - 1 && task && !TERMINAL.has(task.status) ? null : events[idx].seq);
  });

  // ---- event list -------------------------------------------------------------------------
  function renderTabs() {
    put(tabs, ["full", "compact", "raw"].map((v, i) => h("button", { "aria-pressed": String(v === view), "data-view": v, title: `${i + 1}`,
      onclick: () => setView(v) }, v)));
  }
  function setView(v) { view = v; replaceParams({ ...params, view, seq: cursor ?? "" }); renderTabs(); renderList(); }
  let scroller = null;
  const narrow = () => matchMedia("(max-width: 640px)").matches; // phones: seq, type, +Δ, attempt only
  function renderList() {
    if (view === "raw") { scroller = null; put(listBox, jsonView(events)); return; }
    if (view === "compact") { scroller = null; put(listBox, compactTable()); return; }
    if (!scroller) {
      const tbody = h("tbody");
      const box = h("div", { class: "events-list" }, h("table", { "aria-label": "events" },
        h("colgroup", {}, (narrow() ? [52, null, 70, 36] : [70, 150, 190, 80, 80, 150, null]).map((w) => h("col", { style: w ? `width:${w}px` : "" }))),
        h("thead", {}, h("tr", {}, (narrow() ? ["seq", "type", "+Δ", "att."] : ["seq", "type", "time", "+Δ", "attempt", "worker", "data"]).map((c) => h("th", { scope: "col" }, c)))), tbody));
      box.addEventListener("scroll", () => drawRows());
      scroller = { box, tbody };
      put(listBox, box);
    }
    drawRows();
  }
  function drawRows() {
    // Windowed: only the rows in view (plus a margin) exist, so a 10,000-event task stays fast.
    const { box, tbody } = scroller;
    // The rows are drawn anew: a focused row hands its focus to its successor (Enter, Space, a
    // scroll or a live event would otherwise drop a keyboard user's place to <body>).
    const had = tbody.contains(document.activeElement) ? document.activeElement.dataset.seq : null;
    const small = narrow();
    const t0 = events.length ? new Date(events[0].at).getTime() : 0;
    const workers = new Map(layout(events).attempts.map((a) => [a.n, a.worker]));
    const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - 10);
    const last = Math.min(events.length, first + Math.ceil((box.clientHeight || 448) / ROW_H) + 20);
    put(tbody, h("tr", { style: `height:${first * ROW_H}px` }));
    for (let i = first; i < last; i += 1) {
      const e = events[i];
      const { attempt, worker_id: w, ...rest } = e.data || {};
      const cells = [h("td", { class: "mono" }, e.seq), h("td", { class: "ev-type" }, e.type), small ? null : h("td", { class: "small" }, absTime(e.at)),
        h("td", { class: "num small" }, `+${dur(new Date(e.at).getTime() - t0)}`), h("td", { class: "num" }, e.attempt ?? attempt ?? "")];
      if (!small) cells.push(h("td", { class: "small" }, w ?? workers.get(e.attempt ?? attempt) ?? ""), h("td", { class: "mono small", title: JSON.stringify(rest) }, JSON.stringify(rest)));
      tbody.append(h("tr", { class: `ev${e.seq === cursor ? " at-cursor" : ""}`, "data-seq": e.seq, title: small ? `${absTime(e.at)} ${JSON.stringify(rest)}` : null,
        tabindex: 0, onclick: () => scrubTo(e.seq),
        onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); scrubTo(e.seq); } } }, cells));
    }
    tbody.append(h("tr", { style: `height:${(events.length - last) * ROW_H}px` }));
    if (had != null) tbody.querySelector(`tr[data-seq="${had}"]`)?.focus({ preventScroll: true });
  }
  function compactTable() {
    const { attempts, gaps } = layout(events);
    const labels = ["attempt", "worker", "waited", "ran", "outcome", "lease ext.", "backoff after", "error"];
    return h("table", { class: "compact cards", "aria-label": "attempts" }, h("thead", {}, h("tr", {}, labels.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, attempts.map((a) => {
        const gap = gaps.find((g) => g.attempt === a.n);
        const cells = [a.n, a.worker, dur(a.startedAt - a.readyAt), a.endAt ? dur(a.endAt - a.startedAt) : "running", statusBadge(a.outcome ?? "running"),
          a.leases.length - 1, gap ? dur(gap.to - gap.from) : "", a.error ? (a.error.traceback
          ? h("details", {}, h("summary", {}, `${a.error.kind}: ${a.error.message}`), h("pre", { class: "traceback" }, a.error.traceback))
          : `${a.error.kind}: ${a.error.message}`) : ""];
        return h("tr", { "data-attempt": a.n }, cells.map((c, k) => h("td", { "data-label": labels[k], class: k === 7 ? "wrap small" : [0, 2, 3, 5, 6].includes(k) ? "num" : "" }, c)));
      })));
  }

  // ---- data and live ----------------------------------------------------------------------
  // The scrubber's label says "live" or "latest (finished)" from the task's status: drawn again with it.
  const reloadTask = coalesce(async () => { task = await get(`/v1/tasks/${enc(id)}`); renderHead(); renderClock(); renderGantt(); renderScrubber(); }, 100);
  function renderAll() { renderClock(); renderHead(); renderTabs(); renderGantt(); renderScrubber(); renderList(); }

  async function load() {
    try {
      // A link opened right after a submit may beat the projector: wait (bounded) for it.
      const rc = hasParam("GET", "/v1/tasks/{task_id}", "consistency") ? "?consistency=wait" : "";
      let page;
      [task, page] = await Promise.all([get(`/v1/tasks/${enc(id)}${rc}`), get(`/v1/tasks/${enc(id)}/events${rc}`)]);
      events = page.events;
      // A long-lived task's timeline comes in pages: read them all, in order, before the live stream.
      while (page.next_after != null && !gone) {
        page = await get(`/v1/tasks/${enc(id)}/events?after=${page.next_after}`);
        for (const e of page.events) events.push(e);
      }
    } catch (e) {
      const missing = e instanceof HttpError && e.status === 404;
      put(errorBox, notice(missing ? `No task ${id}.` : e.message, "error"));
      body.hidden = missing;
      return;
    }
    if (gone) return;
    const after = events.length ? events[events.length - 1].seq : 0;
    // The two reads may straddle a commit: a task read older than the events shown would stay stale,
    // since the stream only brings what comes after them. Read it again then.
    if (task && task.last_seq < after) {
      try { task = await get(`/v1/tasks/${enc(id)}`); } catch { /* the stream's next event reloads it */ }
      if (gone) return;
    }
    if (cursor !== null && !events.some((e) => e.seq === cursor)) {
      toast(`sequence ${cursor} is not one of this task's events: showing the latest`);
      cursor = null;
      replaceParams({ ...params, view, seq: "" });
    }
    renderAll();
    showAsOf();
    stream = new LiveStream(`/v1/events/stream?task_id=${enc(id)}`, (e) => {
      if (events.length && e.seq <= events[events.length - 1].seq) return;
      events.push(e);
      renderScrubber(); renderGantt();
      if (view !== "full" || !scroller) renderList(); else drawRows();
      reloadTask();
    }, () => {}, after);
  }
  load();

  return {
    unmount() { gone = true; clearInterval(ticker); stream?.close(); asOfAbort?.abort(); },
    update(p) { params = p; if ((p.seq ? Number(p.seq) : null) !== cursor) scrubTo(p.seq ? Number(p.seq) : null); },
    onTheme() { renderGantt(); },
    onKey(ev) {
      const idx = cursor === null ? events.length - 1 : events.findIndex((e) => e.seq === cursor);
      if (ev.key === "[" || ev.key === "k") scrubTo(events[Math.max(0, idx - 1)]?.seq ?? null);
      else if (ev.key === "]" || ev.key === "j") scrubTo(idx + 1 >= events.length ? null : events[idx + 1].seq);
      else if (["1", "2", "3"].includes(ev.key)) setView(["full", "compact", "raw"][Number(ev.key) - 1]);
      else if (!task) return;
      // A shortcut does what its button would, and nothing when its button is disabled.
      else if (ev.key === "c" && ALLOWED.cancel(task.status)) command("cancel");
      else if (ev.key === "r" && ALLOWED.retry(task.status)) command("retry");
      else if (ev.key === "p") { const a = task.status === "paused" ? "resume" : "pause"; if (ALLOWED[a](task.status)) command(a); }
    },
  };
}
