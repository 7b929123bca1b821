// Tiny DOM and formatting helpers shared by every view (no framework, no build step).

/** Create an element: h("a", {href: "#/x", class: "y", onclick: fn}, "text", child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = tag === "svg" || attrs?.svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false || k === "svg") continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

/** An SVG element with attributes. */
export function s(tag, attrs = {}, ...children) {
  return h(tag, { ...attrs, svg: true }, ...children);
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** Replace an element's children (arrays flattened, null/false skipped). */
export function put(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** Append children (arrays flattened, null/false skipped). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

export function statusBadge(status) {
  return h("span", { class: `badge st-${status || "unknown"}`, "data-status": status || "" }, status || "?");
}

/** "2026-11-23 07:41:05.123" in local time. */
export function absTime(at) {
  if (!at) return "";
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return String(at);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** A duration in ms as "850ms", "4.21s", "3m 12s", "2h 5m". */
export function dur(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  const neg = ms < 0 ? "-" : "";
  ms = Math.abs(ms);
  if (ms < 1000) return `${neg}${Math.round(ms)}ms`;
  if (ms < 60_000) return `${neg}${(ms / 1000).toFixed(2)}s`;
  if (ms < 3_600_000) return `${neg}${Math.floor(ms / 60_000)}m ${Math.round((ms % 60_000) / 1000)}s`;
  return `${neg}${Math.floor(ms / 3_600_000)}h ${Math.round((ms % 3_600_000) / 60_000)}m`;
}

/** "3s ago" / "in 2m" relative to now. */
export function ago(at) {
  if (!at) return "";
  const ms = Date.now() - new Date(at).getTime();
  return ms >= 0 ? `${dur(ms)} ago` : `in ${dur(-ms)}`;
}

/** Pretty JSON with syntax classes, built from text nodes (never innerHTML of data). */
export function jsonView(value) {
  const pre = h("pre", { class: "json" });
  const text = JSON.stringify(value, null, 2) ?? "null";
  if (text.length > 40_000) { pre.textContent = text; return pre; } // large: plain text stays fast
  const re = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) pre.append(text.slice(last, m.index));
    const cls = m[1] ? (m[2] ? "k" : "s") : m[3] ? "b" : "n";
    pre.append(h("span", { class: `j-${cls}` }, m[1] ?? m[0]));
    if (m[2]) pre.append(m[2]);
    last = m.index + m[0].length;
  }
  pre.append(text.slice(last));
  return pre;
}

/** Short id for tables: the full id stays in title and links. */
export function shortId(id) {
  return id && id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id;
}

export function notice(text, kind = "info") {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** Copy text to the clipboard; falls back to a hidden textarea where the API is unavailable. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const ta = h("textarea", { style: "position:fixed;opacity:0" });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    return ok;
  }
}

/** Show a transient message at the bottom of the screen. */
export function toast(text, kind = "info") {
  const host = document.getElementById("toasts");
  // An error stays until clicked (or 12 s): a partial failure must be readable, and never hide rows for long.
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status", title: kind === "error" ? "click to dismiss" : null,
    onclick: () => el.remove() }, text);
  host.append(el);
  el.addEventListener("animationend", () => el.remove());
}
