// Boot: theme, navigation, the one global live stream, keyboard shortcuts, sign-in.
import { h, clear, toast } from "./dom.js";
import { loadCaps } from "./caps.js";
import { HttpError, dropStarted } from "./api.js";
import { LiveStream } from "./live.js";
import { parseHash, go } from "./router.js";
import { showSignIn, exchangeTokenFromUrl, renderAccount, signedIn, renderSignedOut } from "./views/signin.js";
import * as overview from "./views/overview.js";
import * as tasks from "./views/tasks.js";
import * as task from "./views/task.js";
import * as schedules from "./views/schedules.js";
import * as workers from "./views/workers.js";
import * as deadLetters from "./views/deadletters.js";
import * as submit from "./views/submit.js";

const VIEWS = {
  overview: { mod: overview, title: "Overview", key: "o" },
  tasks: { mod: tasks, detail: task, title: "Tasks", key: "t" },
  schedules: { mod: schedules, title: "Schedules", key: "s" },
  workers: { mod: workers, title: "Workers", key: "w" },
  "dead-letters": { mod: deadLetters, title: "Dead letters", key: "d" },
  submit: { mod: submit, title: "Submit", key: "n" },
};

const root = document.getElementById("view");
const conn = document.getElementById("conn");
let current = null;
let live = null;
const recent = []; // the last 50 events the live stream delivered, oldest first

/** Debug/testing hook: what the live stream has delivered (sequences in order, duplicates dropped). */
window.ordo = { seqs: [], get duplicates() { return live?.duplicates ?? 0; }, get lastSeq() { return live?.lastSeq ?? null; } };

// ---- theme ------------------------------------------------------------------------------------
function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const button = document.getElementById("theme");
  button.textContent = theme === "dark" ? "☀" : "☾";
  button.setAttribute("aria-pressed", String(theme === "dark"));
}
function initialTheme() {
  const saved = localStorage.getItem("ordo.theme");
  if (saved === "light" || saved === "dark") return saved;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}
function toggleTheme() {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem("ordo.theme", next);
  applyTheme(next);
  current?.onTheme?.();
}

// ---- navigation -------------------------------------------------------------------------------
function renderNav() {
  const nav = document.getElementById("nav");
  clear(nav);
  for (const [name, v] of Object.entries(VIEWS)) {
    nav.append(h("a", { href: `#/${name}`, "data-view": name, title: `g ${v.key}` }, v.title));
  }
}

/** The view module the current URL shows, with its name and path. */
function target() {
  const { parts, params } = parseHash();
  const name = VIEWS[parts[0]] ? parts[0] : "overview";
  const v = VIEWS[name];
  return { parts, params, name, v, mod: parts[1] && v.detail ? v.detail : v.mod };
}

function route() {
  const { parts, params, name, v, mod } = target();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === name);
    if (a.dataset.view === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const key = `${name}/${parts[1] ?? ""}`;
  if (current && current.key === key && current.update) {
    current.update(params);
    return;
  }
  current?.unmount?.();
  clear(root);
  document.title = `${v.title} · Ordo`;
  const ctx = { id: parts[1], params, recent: [...recent] };
  current = { key, ...(mod.mount(root, ctx) || {}) };
}

// ---- live -------------------------------------------------------------------------------------
function startLive() {
  live?.close();
  live = new LiveStream("/v1/events/stream", (e) => {
    window.ordo.seqs.push(e.seq);
    recent.push(e); // the Overview's feed starts from these, whichever view was open when they came
    if (recent.length > 50) recent.shift();
    if (window.ordo.seqs.length > 5000) window.ordo.seqs.splice(0, 1000);
    current?.onEvent?.(e);
  }, (state) => {
    conn.textContent = state === "live" ? "● live" : state === "reconnecting" ? "reconnecting…" : "offline";
    conn.dataset.state = state;
  });
  // The view's first data may have been read before the stream started (index.html sends it at once).
  live.onStart = () => current?.onLiveStart?.();
}

// ---- help and skip link -----------------------------------------------------------------------
function toggleHelp(show) {
  const help = document.getElementById("help");
  const open = show ?? !help.hasAttribute("open");
  const wasOpen = help.hasAttribute("open");
  help.toggleAttribute("open", open);
  document.getElementById("help-button").setAttribute("aria-expanded", String(open));
  if (open) { helpOpener = document.activeElement; help.focus(); }
  else if (wasOpen && help.contains(document.activeElement)) {
    // Closed: the focus goes back where it was when the help opened (else to its button).
    const back = helpOpener?.isConnected ? helpOpener : document.getElementById("help-button");
    back.focus();
  }
}
let helpOpener = null;

// ---- keyboard ---------------------------------------------------------------------------------
let pendingG = false;
function onKey(ev) {
  const t = ev.target;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (document.querySelector("dialog[open]")) return; // a confirmation or the sign-in form has the keyboard
  if (t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) {
    if (ev.key === "Escape") t.blur();
    return;
  }
  if (pendingG) {
    pendingG = false;
    const hit = Object.entries(VIEWS).find(([, v]) => v.key === ev.key);
    if (hit) { ev.preventDefault(); go([hit[0]]); }
    return;
  }
  if (ev.key === "g") { pendingG = true; return; }
  if (ev.key === "?") { ev.preventDefault(); toggleHelp(); return; }
  if (ev.key === "Escape") { toggleHelp(false); return; }
  if (ev.key === "T") { toggleTheme(); return; }
  if (ev.key === "/") {
    const search = root.querySelector("[data-search]");
    if (search) { ev.preventDefault(); search.focus(); }
    return;
  }
  current?.onKey?.(ev);
}

// ---- signed in / out ------------------------------------------------------------------------
let authed = false;
function setConn(state, text) { conn.textContent = text; conn.dataset.state = state; }

async function onSignedIn() {
  authed = true;
  if (location.search) history.replaceState(null, "", `/${location.hash}`); // drop ?signin=link once signed in
  // The route table is behind the key: read it again as the signed-in user. A view that does not need
  // it to start (the task list) mounts at once; the others wait for it.
  const caps = loadCaps();
  if (!target().mod.beforeCaps) await caps;
  current = null;
  setConn("connecting", "connecting…");
  route();
  // The account line and the live stream wait until the view's first data is on screen (or 1 s): the
  // gateway answers that first; a view re-reads once the stream has started (onLiveStart).
  await Promise.race([current?.ready, new Promise((r) => setTimeout(r, 1000))]);
  await new Promise((r) => { requestAnimationFrame(() => setTimeout(r)); setTimeout(r, 100); }); // painted (a hidden tab has no frames)
  await caps;
  if (!authed) return; // signed out meanwhile
  renderAccount();
  startLive();
}

function onSignedOut() {
  authed = false;
  dropStarted();
  live?.close();
  live = null;
  current?.unmount?.();
  current = null;
  setConn("signed-out", "signed out");
  document.title = "Sign in · Ordo";
  renderSignedOut(root, onSignedIn);
  showSignIn(onSignedIn);
}

// ---- boot -------------------------------------------------------------------------------------
async function boot() {
  applyTheme(initialTheme());
  document.getElementById("theme").addEventListener("click", toggleTheme);
  renderNav();
  document.addEventListener("keydown", onKey);
  document.getElementById("help-button").addEventListener("click", () => toggleHelp());
  document.getElementById("skip").addEventListener("click", (ev) => { ev.preventDefault(); root.focus(); });
  window.addEventListener("ordo:unauthorized", () => { if (authed) onSignedOut(); });
  // A call refused with 401 has already sent the page to the sign-in form: not an error to report.
  window.addEventListener("unhandledrejection", (e) => { if (e.reason instanceof HttpError && e.reason.status === 401) e.preventDefault(); });
  window.addEventListener("ordo:toast", (e) => toast(e.detail.text, e.detail.kind));
  await exchangeTokenFromUrl();
  window.addEventListener("hashchange", () => { if (authed) route(); });
  // Signed in (or auth off)? Views and the live stream start only then; otherwise the sign-in form.
  if (await signedIn()) await onSignedIn();
  else onSignedOut();
}

boot();
