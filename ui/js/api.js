// The gateway's HTTP API, as the UI uses it. Credentials are the HttpOnly session cookie (same origin):
// the UI never holds an API key after sign-in and never puts one in a URL.

export class HttpError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }

  /** The route does not exist on this gateway (yet): hide the panel, say "not available". */
  get unavailable() {
    if (this.status === 405 || this.status === 501) return true;
    if (this.status !== 404) return false;
    const type = String(this.problem.type || "");
    return type === "" || type.endsWith("/not-found") || this.problem.detail === "Not Found";
  }
}

/**
 * `{ok, status, text}` of the `GET path` that index.html's start-up script sent before the modules
 * loaded (each taken once), or null. Callers ask again unless `ok`: a failed or refused start-up
 * request never stands for a later call.
 */
export async function takeStarted(path) {
  return (await window.ordoBoot?.take(path)) ?? null;
}

/** Forget the start-up responses not taken yet (signed out: none may stand for a later call). */
export function dropStarted() {
  window.ordoBoot?.drop();
}

/** Call the API; JSON in and out. 401 raises and tells the app to show the sign-in form. */
export async function api(method, path, body, { signal } = {}) {
  const init = { method, credentials: "same-origin", headers: { accept: "application/json" }, signal };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  // The page's start-up script may have this GET on its way already (index.html): one request, not two.
  const started = method === "GET" ? await takeStarted(path) : null;
  const r = started?.ok ? started : await fetch(path, init);
  const text = started?.ok ? started.text : await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text }; }
  }
  if (!r.ok) {
    if (r.status === 401) window.dispatchEvent(new CustomEvent("ordo:unauthorized", { detail: data }));
    throw new HttpError(r.status, data);
  }
  return data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body ?? {}, opts);

/** GET that answers null when the route is not available on this gateway. */
export async function getOptional(path, opts) {
  try {
    return await get(path, opts);
  } catch (e) {
    if (e instanceof HttpError && e.unavailable) return null;
    throw e;
  }
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : "";
}

export const enc = encodeURIComponent;
