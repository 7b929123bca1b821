// Minimal live page: a task table kept current by the SSE event stream (no polling timer).
"use strict";
const rows = new Map();
const tbody = document.querySelector("#tasks tbody");
const eventsList = document.getElementById("events");

function render(task) {
  let tr = rows.get(task.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.id = task.id;
    tbody.prepend(tr);
    rows.set(task.id, tr);
  }
  tr.innerHTML = "";
  for (const v of [task.id, task.type, task.status, task.attempts, task.last_event || ""]) {
    const td = document.createElement("td");
    td.textContent = String(v);
    tr.append(td);
  }
  tr.className = "status-" + task.status;
}

async function refresh(id) {
  const r = await fetch(`/v1/tasks/${id}`);
  if (r.ok) { const t = await r.json(); render(t); }
}

async function load() {
  const r = await fetch("/v1/tasks?limit=50");
  if (!r.ok) return;
  const body = await r.json();
  for (const t of body.items.reverse()) render(t);
}

function connect() {
  const es = new EventSource("/v1/events/stream");
  const conn = document.getElementById("conn");
  es.onopen = () => { conn.textContent = "live"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; };
  es.addEventListener("task_event", (msg) => {
    const e = JSON.parse(msg.data);
    const li = document.createElement("li");
    li.textContent = `#${e.seq} ${e.type} ${e.task_id}`;
    eventsList.prepend(li);
    refresh(e.task_id);
  });
}

document.getElementById("submit").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const out = document.getElementById("submit-result");
  let payload = null;
  try { payload = JSON.parse(form.get("payload") || "null"); } catch (e) { out.textContent = "payload is not JSON"; return; }
  const r = await fetch("/v1/tasks", { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: form.get("type"), payload }) });
  const body = await r.json();
  out.textContent = r.ok ? `submitted ${body.id}` : (body.detail || "error");
});

load().then(connect);
