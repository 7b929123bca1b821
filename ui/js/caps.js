// What this gateway offers, read once from its OpenAPI document: panels whose routes are missing are
// hidden or say "not available" without probing (a probe would log a 404 in the browser console).

import { takeStarted } from "./api.js";

let routes = null;

function toRegex(template) {
  const re = template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+");
  return new RegExp(`^${re}$`);
}

let loading = null;

/** Load the route table; on failure every route counts as available (errors then surface normally). */
export function loadCaps() {
  loading = read();
  return loading;
}

/** Resolves once the route table being loaded is in (at once when none is). Until then `has` says yes. */
export function capsLoaded() {
  return loading ?? Promise.resolve();
}

async function read() {
  try {
    const started = await takeStarted("/openapi.json"); // sent with the list's first page at start-up (index.html)
    let doc;
    if (started?.ok) doc = JSON.parse(started.text);
    else {
      const r = await fetch("/openapi.json", { credentials: "same-origin" });
      if (!r.ok) return;
      doc = await r.json();
    }
    routes = [];
    for (const [path, ops] of Object.entries(doc.paths || {})) {
      const methods = new Set(Object.keys(ops).map((m) => m.toUpperCase()));
      const params = new Set();
      for (const op of Object.values(ops)) for (const p of op.parameters || []) params.add(p.name);
      routes.push({ path, re: toRegex(path), methods, params });
    }
  } catch {
    routes = null;
  }
}

function find(method, path) {
  const bare = path.split("?")[0];
  return routes?.find((r) => r.methods.has(method) && (r.path === bare || r.re.test(bare)));
}

/** True when the gateway has `method path` (a concrete path or a template like /v1/tasks/{id}). */
export function has(method, path) {
  if (routes === null) return true;
  return Boolean(find(method, path));
}

/** True when `method path` accepts the query parameter `name`. */
export function hasParam(method, path, name) {
  if (routes === null) return true;
  return Boolean(find(method, path)?.params.has(name));
}
