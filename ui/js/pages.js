// "← Newer" of a list read with forward cursors: which page came before a page. Kept for the tab's
// session (sessionStorage), per list and filter, so Back, Forward and a reload still know it; a
// cursor itself only points forward. Unknown (another tab's link): the first page.
const KEY = "ordo.newer-pages";
const MAX = 500; // remembered pages in all, the oldest forgotten first

function read() {
  try { return JSON.parse(sessionStorage.getItem(KEY) || "{}") || {}; } catch { return {}; }
}

/** Remember that `older` (a cursor) was reached from `newer` ("" for the first page) in `list`. */
export function rememberNewer(list, older, newer) {
  const all = read();
  const key = JSON.stringify([list, older]);
  delete all[key]; // re-inserted last: the newest
  all[key] = newer;
  const keys = Object.keys(all);
  for (const k of keys.slice(0, Math.max(0, keys.length - MAX))) delete all[k];
  try { sessionStorage.setItem(KEY, JSON.stringify(all)); } catch { /* storage full or off: Newer goes to the first page */ }
}

/** The cursor of the page before `cursor` in `list` ("" = the first page). */
export function newerOf(list, cursor) {
  return read()[JSON.stringify([list, cursor])] ?? "";
}
