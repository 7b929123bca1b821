// Tiny DOM and formatting helpers shared by every view (no framework, no build step).

/** Create an element: h("a", {href: "#/x", class: "y", onclick: fn}, "text", child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = tag === "svg" || attrs?.svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false || k === "svg") continue;
    if (k.startsWith("on") && typeof v === "function") listen(el, k.slice(2), v);
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

// The listeners h() added, per element: patch() moves them from a freshly built node onto the one it keeps.
const LISTENERS = new WeakMap();

function listen(el, type, fn) {
  el.addEventListener(type, fn);
  let mine = LISTENERS.get(el);
  if (!mine) LISTENERS.set(el, (mine = new Map()));
  mine.set(type, fn);
}

/**
 * Make an element's children those given, like put(), but keep the nodes already there where they
 * match: the same tag and, for rows and other keyed elements, the same key (`id`, `data-key`,
 * `data-id`, `data-queue`). Only what changed is written. A live view re-rendered every second thus
 * keeps keyboard focus, an open <details>, a text selection and a click in progress (a node replaced
 * between mousedown and mouseup loses the click). Views that patch must not keep references to the
 * nodes they build for it: the nodes kept are the old ones. Unkeyed siblings match by position, so a
 * control that comes and goes (a button shown in some states only) needs a `data-key`, or the
 * control after it would take its place, focus and click included. Whether a <details> is open is
 * the reader's choice: patching neither opens nor closes one.
 */
export function patch(el, ...children) {
  const next = [];
  collect(children, next);
  const focused = document.activeElement;
  const slot = focused && focused !== document.body && el.contains(focused) ? slotOf(focused, el) : null;
  patchChildren(el, next);
  const now = document.activeElement;
  // Only what the patch took away: a control now disabled, or removed (the focus fell to the page);
  // a focused <summary>, link or row stays where it is.
  if (slot && (now === focused ? focused.disabled === true : !now || now === document.body)) refocus(slot);
  return el;
}

// Where a focused control sat: its ancestors up to the patched element, nearest first, each with the
// index of the child on the way down. When the patch removes or disables it, the focus goes to the
// control that took its place (the nearest focusable sibling, ahead first) in the nearest ancestor
// still there, not to the page: Archive becomes Unarchive under the keyboard, a Cancel disabled
// when its task finishes hands the focus to its neighbour.
function slotOf(node, root) {
  const chain = [];
  for (let n = node; n && n !== root; n = n.parentNode) chain.push([n.parentNode, [...n.parentNode.children].indexOf(n)]);
  return chain;
}

const FOCUSABLE = "button:not([disabled]), a[href], input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex='-1'])";

function refocus(slot) {
  for (const [parent, index] of slot) {
    if (!parent.isConnected) continue;
    const items = [...parent.children];
    const order = [...items.slice(index), ...items.slice(0, index).reverse()];
    for (const item of order) {
      const target = item.matches(FOCUSABLE) ? item : item.querySelector(FOCUSABLE);
      if (target) { target.focus({ preventScroll: true }); return; }
    }
  }
}

function collect(children, out) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) collect(c, out);
    else out.push(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const KEYS = ["id", "data-key", "data-id", "data-queue"];
function keyOf(n) {
  if (n.nodeType !== Node.ELEMENT_NODE) return null;
  for (const k of KEYS) { const v = n.getAttribute(k); if (v !== null) return `${n.nodeName}\u0000${k}\u0000${v}`; }
  return null;
}
const sameKind = (a, b) => a.nodeType === b.nodeType && a.nodeName === b.nodeName
  && (a.nodeName !== "INPUT" || a.getAttribute("type") === b.getAttribute("type"));

function patchChildren(parent, next) {
  const kept = new Set(next.filter((n) => n.parentNode === parent)); // nodes passed in again as they are
  const keyed = new Map();
  const loose = [];
  for (const n of parent.childNodes) {
    if (kept.has(n)) continue;
    const k = keyOf(n);
    if (k !== null && !keyed.has(k)) keyed.set(k, n); else loose.push(n);
  }
  let li = 0;
  const plan = next.map((n) => {
    if (kept.has(n)) return n;
    const k = keyOf(n);
    let old = null;
    if (k !== null) { old = keyed.get(k) ?? null; if (old && sameKind(old, n)) keyed.delete(k); else old = null; }
    else {
      while (li < loose.length && (keyOf(loose[li]) !== null || !sameKind(loose[li], n))) li += 1;
      if (li < loose.length) old = loose[li++];
    }
    return old ? patchNode(old, n) : n;
  });
  // Remove what is not kept first, then move as few nodes as the new order needs: the longest run of
  // kept nodes already in order stays where it is (a node moved in the DOM loses focus).
  const used = new Set(plan);
  for (const n of [...parent.childNodes]) if (!used.has(n)) n.remove();
  const was = new Map([...parent.childNodes].map((n, i) => [n, i]));
  const stay = inOrder(plan.map((n) => was.get(n) ?? -1));
  for (let i = plan.length - 1, before = null; i >= 0; before = plan[i], i -= 1) {
    if (!stay.has(i)) parent.insertBefore(plan[i], before);
  }
}

/** The indices of a longest strictly increasing run (not necessarily contiguous) of the values >= 0. */
function inOrder(values) {
  const tails = []; // tails[k]: index of the smallest last value of an increasing run of length k + 1
  const back = new Array(values.length).fill(-1);
  values.forEach((v, i) => {
    if (v < 0) return;
    let lo = 0, hi = tails.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (values[tails[mid]] < v) lo = mid + 1; else hi = mid; }
    if (lo > 0) back[i] = tails[lo - 1];
    tails[lo] = i;
  });
  const keep = new Set();
  for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = back[i]) keep.add(i);
  return keep;
}

function patchNode(old, fresh) {
  if (old.nodeType !== Node.ELEMENT_NODE) {
    if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
    return old;
  }
  // A form control's state is the reader's: it follows the view only where the view's value changed.
  const control = old.nodeName === "INPUT" && old !== document.activeElement;
  const checked = control && old.hasAttribute("checked") !== fresh.hasAttribute("checked");
  const value = control && old.getAttribute("value") !== fresh.getAttribute("value");
  for (const a of [...old.attributes]) {
    if (a.name === "open" && old.nodeName === "DETAILS") continue; // the reader opened or closed it
    if (!fresh.hasAttribute(a.name)) old.removeAttribute(a.name);
  }
  for (const a of fresh.attributes) {
    if (a.name === "open" && old.nodeName === "DETAILS") continue;
    if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
  }
  if (checked) old.checked = fresh.hasAttribute("checked");
  if (value) old.value = fresh.getAttribute("value") ?? "";
  const before = LISTENERS.get(old), after = LISTENERS.get(fresh);
  if (before) for (const [type, fn] of before) old.removeEventListener(type, fn);
  LISTENERS.delete(old);
  if (after) for (const [type, fn] of after) listen(old, type, fn);
  patchChildren(old, [...fresh.childNodes]);
  return old;
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
  // Rounded once, then split: rounding the remainder alone gave "1m 60s" and "2h 60m".
  if (ms < 999.5) return `${neg}${Math.round(ms)}ms`;
  if (ms < 59_995) return `${neg}${(ms / 1000).toFixed(2)}s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${neg}${Math.floor(s / 60)}m ${s % 60}s`;
  const m = Math.round(ms / 60_000);
  return `${neg}${Math.floor(m / 60)}h ${m % 60}m`;
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
