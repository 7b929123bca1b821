// Hash routing with a query: `#/tasks?status=failed&cursor=…`, `#/tasks/<id>?view=compact&seq=42`.
// The URL is the whole view state, so a copied link reproduces the view.

export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [pathPart, query = ""] = raw.split("?");
  const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(query));
  return { parts: parts.length ? parts : ["overview"], params };
}

export function buildHash(parts, params = {}) {
  const path = parts.map(encodeURIComponent).join("/");
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const qs = q.toString();
  return `#/${path}${qs ? `?${qs}` : ""}`;
}

/** Navigate (a history entry) to a new view. */
export function go(parts, params) {
  location.hash = buildHash(parts, params);
}

/** Rewrite the current URL's query without a history entry or a re-render (e.g. while scrubbing). */
export function replaceParams(params) {
  const { parts } = parseHash();
  history.replaceState(null, "", buildHash(parts, params));
}
