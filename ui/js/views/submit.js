// Submit one task, or N copies of it (one `POST /v1/tasks:batch` per 1,000 when the gateway has it).
// The payload is validated as JSON while typing; the server still validates everything.
import { h, put, clear, statusBadge, notice, shortId } from "../dom.js";
import { get, post, enc, HttpError } from "../api.js";
import { has, hasParam } from "../caps.js";
import { coalesce } from "../live.js";

const EXAMPLES = {
  "demo.echo": '{"hello": "world"}', "demo.sleep": '{"seconds": 5}', "demo.flaky": '{"fail_times": 1}', "demo.fail": "{}",
};
const CHUNK = 1000;

export function mount(root, { params }) {
  const f = {
    type: h("input", { name: "type", value: params.type || "demo.echo", required: true, list: "task-types", autocomplete: "off" }),
    payload: h("textarea", { name: "payload", spellcheck: "false" }),
    queue: h("input", { name: "queue", value: params.queue || "default", pattern: "[a-z0-9_\\-]{1,64}" }),
    priority: h("input", { name: "priority", type: "number", min: 0, max: 9, value: 5 }),
    delay: h("input", { name: "delay", type: "number", min: 0, step: "any", placeholder: "seconds" }),
    run_at: h("input", { name: "run_at", type: "datetime-local", step: 1 }),
    max_attempts: h("input", { name: "max_attempts", type: "number", min: 1, max: 1000, placeholder: "default" }),
    timeout: h("input", { name: "timeout", type: "number", min: 0.001, step: "any", placeholder: "seconds" }),
    idempotency_key: h("input", { name: "idempotency_key", placeholder: "optional" }),
    tags: h("input", { name: "tags", placeholder: "comma,separated" }),
    copies: h("input", { name: "copies", type: "number", min: 1, max: 10000, value: 1 }),
  };
  f.payload.value = EXAMPLES[f.type.value] ?? "{}";
  const payloadMsg = h("span", { class: "error-text", id: "payload-error" });
  // Which task types and queues the online workers serve (from their heartbeats): a warning, not a block.
  const typeMsg = h("span", { class: "warn-text small", id: "type-warning", role: "status" });
  const queueMsg = h("span", { class: "warn-text small", id: "queue-warning", role: "status" });
  const typeList = h("datalist", { id: "task-types" }, Object.keys(EXAMPLES).map((t) => h("option", { value: t })));
  const queueList = h("datalist", { id: "queue-names" });
  f.queue.setAttribute("list", "queue-names");
  let served = null; // { handlers: Set, queues: Set } once known
  async function loadServed() {
    if (!has("GET", "/v1/workers")) return;
    try {
      const online = ((await get("/v1/workers")).items || []).filter((w) => ["online", "draining"].includes(w.status));
      served = { handlers: new Set(online.flatMap((w) => w.handlers || [])), queues: new Set(online.flatMap((w) => w.queues || [])) };
      put(typeList, [...new Set([...served.handlers, ...Object.keys(EXAMPLES)])].sort().map((t) => h("option", { value: t })));
      put(queueList, [...served.queues].sort().map((q) => h("option", { value: q })));
      checkServed();
    } catch { /* only a hint */ }
  }
  function checkServed() {
    const type = f.type.value.trim(), queue = f.queue.value.trim() || "default";
    typeMsg.textContent = served && served.handlers.size && type && !served.handlers.has(type)
      ? `No online worker has a handler for ${type}: it waits for one (ORDO_UNKNOWN_TYPE_WAIT_S), then fails with UnknownTaskType.` : "";
    queueMsg.textContent = served && served.queues.size && !served.queues.has(queue)
      ? `No online worker serves queue ${queue}: tasks will wait there.` : "";
  }
  f.type.addEventListener("input", checkServed);
  f.queue.addEventListener("input", checkServed);
  const formMsg = h("div", { id: "submit-error" });
  const result = h("div", { id: "submit-result" });
  const button = h("button", { type: "submit", class: "primary", id: "submit-button" }, "Submit");
  f.type.addEventListener("change", () => { if (EXAMPLES[f.type.value] && !f.payload.dataset.touched) f.payload.value = EXAMPLES[f.type.value]; validate(); });
  f.payload.addEventListener("input", () => { f.payload.dataset.touched = "1"; validate(); });

  function validate() {
    try { JSON.parse(f.payload.value || "null"); payloadMsg.textContent = ""; f.payload.classList.remove("invalid"); return true; }
    catch (e) { payloadMsg.textContent = `payload is not valid JSON: ${e.message}`; f.payload.classList.add("invalid"); return false; }
  }
  function body() {
    const b = { type: f.type.value.trim(), payload: JSON.parse(f.payload.value || "null"), queue: f.queue.value.trim() || "default",
      priority: Number(f.priority.value || 5) };
    if (f.delay.value) b.delay = Number(f.delay.value);
    if (f.run_at.value) b.run_at = new Date(f.run_at.value).toISOString();
    if (f.max_attempts.value) b.max_attempts = Number(f.max_attempts.value);
    if (f.timeout.value) b.timeout = Number(f.timeout.value);
    if (f.idempotency_key.value.trim()) b.idempotency_key = f.idempotency_key.value.trim();
    const tags = f.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.length) b.tags = tags;
    return b;
  }

  // Submitted tasks, kept live: a row re-reads its task when one of its events arrives.
  const watched = new Map();
  const watchList = h("table", { id: "submitted", "aria-label": "submitted tasks" }, h("tbody"));
  function watch(id, seq) {
    const tr = h("tr", { "data-id": id }, h("td", { class: "mono" }, h("a", { href: `#/tasks/${enc(id)}` }, id)), h("td", { class: "status" }, statusBadge("queued")));
    watchList.tBodies[0].prepend(tr);
    let first = seq !== undefined && hasParam("GET", "/v1/tasks/{task_id}", "min_seq");
    const refresh = coalesce(async () => {
      // The first read waits for the read model to hold the submit (read-your-writes).
      const t = await get(`/v1/tasks/${enc(id)}${first ? `?min_seq=${seq}` : ""}`);
      first = false;
      put(tr.querySelector(".status"), statusBadge(t.status));
      tr.dataset.read = "1";
    });
    watched.set(id, refresh);
    while (watched.size > 20) { const [old] = watched.keys(); watched.delete(old); watchList.querySelector(`tr[data-id="${old}"]`)?.remove(); }
    refresh();
  }

  async function submit(ev) {
    ev.preventDefault();
    clear(formMsg); clear(result);
    if (!validate()) return;
    if (f.delay.value && f.run_at.value) { formMsg.append(notice("Give a delay or a run-at time, not both.", "error")); return; }
    const copies = Math.max(1, Math.min(10000, Number(f.copies.value || 1)));
    const b = body();
    if (copies > 1 && b.idempotency_key) { formMsg.append(notice("An idempotency key makes every copy the same task: leave it empty for copies.", "error")); return; }
    button.disabled = true;
    try {
      if (copies === 1) {
        const r = await post("/v1/tasks", b);
        result.append(h("p", {}, "Submitted ", h("a", { class: "mono", href: `#/tasks/${enc(r.id)}`, id: "submitted-link" }, r.id)));
        watch(r.id, r.seq);
      } else {
        const ids = await submitMany(b, copies, (n) => { put(result, h("p", {}, `submitted ${n} of ${copies}…`)); });
        put(result, h("p", {}, `Submitted ${ids.length} tasks. `, h("a", { href: `#/tasks?type=${enc(b.type)}` }, "see them in the task list")));
        // The first read of each waits for its submit in the read model (min_seq): no 404 right after a batch.
        for (const { id, seq } of ids.slice(-5)) watch(id, seq);
      }
    } catch (e) {
      const items = e instanceof HttpError ? e.problem.errors ?? e.problem.items : null;
      formMsg.append(notice(`${e.message}${items ? ` ${JSON.stringify(items).slice(0, 300)}` : ""}`, "error"));
    } finally {
      button.disabled = false;
    }
  }

  async function submitMany(b, copies, progress) {
    const ids = [];
    if (has("POST", "/v1/tasks:batch")) {
      for (let done = 0; done < copies; done += CHUNK) {
        const n = Math.min(CHUNK, copies - done);
        const r = await post("/v1/tasks:batch", { tasks: Array.from({ length: n }, () => b) });
        for (const item of r.items ?? r.tasks ?? []) ids.push({ id: item.id, seq: item.seq ?? r.seq });
        progress(done + n);
      }
      return ids;
    }
    // Without batch submit: one request per task, 8 in flight.
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(8, copies) }, async () => {
      while (next < copies) { next += 1; const r = await post("/v1/tasks", b); ids.push({ id: r.id, seq: r.seq }); if (ids.length % 50 === 0) progress(ids.length); }
    }));
    return ids;
  }

  const form = h("form", { class: "submit", id: "submit-form", onsubmit: submit },
    h("label", {}, "Type", f.type, typeMsg), h("label", {}, "Queue", f.queue, queueMsg), h("label", {}, "Priority (0 first … 9)", f.priority), h("label", {}, "Max attempts", f.max_attempts),
    h("label", { class: "wide" }, "Payload (JSON)", f.payload, payloadMsg),
    h("label", {}, "Delay (s)", f.delay), h("label", {}, "or run at", f.run_at), h("label", {}, "Timeout (s)", f.timeout), h("label", {}, "Idempotency key", f.idempotency_key),
    h("label", {}, "Tags", f.tags), h("label", {}, `Copies (1–10,000)${has("POST", "/v1/tasks:batch") ? ", in batches" : ""}`, f.copies),
    h("div", { class: "wide row" }, button, formMsg),
    typeList, queueList);
  loadServed();
  root.append(h("div", { class: "panel" }, h("h1", {}, "Submit"), form),
    h("div", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Submitted"), result, watchList));
  return { onEvent(e) { watched.get(e.task_id)?.(); } };
}

