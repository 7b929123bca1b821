// The attempt chart: one row per attempt, queued → started → finished, with the lease (ack deadline)
// of a running attempt and each extension, the backoff gap before a retry, a redelivery after a lost
// worker, and the run-at time of a scheduled task. Idle stretches (nothing running) longer than a
// quarter of the span are folded to a short break, so attempts minutes apart stay readable.
// This lays out what the events say happened and when; the task's *state* always comes from the
// server (see the scrubber), never from folding events here.
import { s, dur } from "../dom.js";

const ms = (at) => new Date(at).getTime();

/** Attempts and gaps read off the event list (presentation only). */
export function layout(events) {
  const attempts = new Map();
  const gaps = [];
  const markers = [];
  let readyAt = null;
  let runAt = null;
  let t0 = null;
  for (const e of events) {
    const at = ms(e.at);
    if (t0 === null) t0 = at;
    const d = e.data || {};
    const a = d.attempt !== undefined ? attempts.get(d.attempt) : undefined;
    switch (e.type) {
      case "submitted": case "queued": case "resumed": case "replayed":
        readyAt = at; runAt = null; if (e.type !== "submitted" && e.type !== "queued") markers.push({ at, label: e.type, seq: e.seq }); break;
      case "scheduled": readyAt = ms(d.run_at); runAt = ms(d.run_at); markers.push({ at, label: "scheduled", seq: e.seq }); break;
      case "paused": case "cancel_requested": markers.push({ at, label: e.type.replace("_", " "), seq: e.seq }); break;
      case "attempt_started":
        attempts.set(d.attempt, { n: d.attempt, worker: d.worker_id, readyAt: readyAt ?? at, startedAt: at, endAt: null,
          outcome: null, leases: [{ at, until: ms(d.lease_until) }], progress: [], zombies: [], seq: e.seq });
        readyAt = null; runAt = null; break;
      case "lease_extended": a?.leases.push({ at, until: ms(d.lease_until), ext: true }); break;
      case "progressed": a?.progress.push({ at, pct: d.pct }); break;
      case "attempt_failed": if (a) { a.endAt = at; a.outcome = "failed"; a.error = d.error; } break;
      case "attempt_timed_out":
        if (a) { a.endAt = at; a.outcome = d.reason === "lease_expired" ? "lost" : "timed_out"; }
        if (d.reason === "lease_expired") readyAt = at;
        break;
      case "retry_scheduled": gaps.push({ from: a?.endAt ?? at, to: ms(d.retry_at), attempt: d.attempt }); readyAt = ms(d.retry_at); break;
      case "succeeded": if (a) { a.endAt ??= at; a.outcome = "succeeded"; } break;
      case "cancelled": if (a) { a.endAt ??= at; a.outcome ??= "cancelled"; } markers.push({ at, label: "cancelled", seq: e.seq }); break;
      case "failed": if (a) { a.endAt ??= at; a.outcome ??= "failed"; } markers.push({ at, label: "failed", seq: e.seq }); break;
      case "zombie_rejected": attempts.get(d.attempt)?.zombies.push({ at, what: d.what }); break;
      default: break;
    }
  }
  return { attempts: [...attempts.values()], gaps, markers, t0, runAt };
}

/**
 * A piecewise-linear time scale over [tMin, tMax]: stretches with nothing running that are longer
 * than a quarter of the span (and 5 s) are folded to `foldPx`; everything else shares the rest.
 */
export function timeScale(tMin, tMax, busy, x0, x1, instants = [], foldPx = 34) {
  const span = Math.max(tMax - tMin, 1);
  const cuts = new Set([tMin, tMax]);
  const cut = (t) => { if (t > tMin && t < tMax) cuts.add(t); };
  for (const [a, b] of busy) { cut(a); cut(b); }
  for (const t of instants) cut(t);
  const pts = [...cuts].sort((a, b) => a - b);
  const segs = [];
  for (let i = 0; i + 1 < pts.length; i += 1) {
    const [a, b] = [pts[i], pts[i + 1]];
    const mid = (a + b) / 2;
    const covered = busy.some(([p, q]) => p <= mid && mid <= q);
    segs.push({ a, b, fold: !covered && b - a > Math.max(5000, span / 4) });
  }
  if (segs.every((g) => g.fold)) for (const g of segs) g.fold = false;
  const folded = segs.filter((g) => g.fold);
  const free = Math.max(40, x1 - x0 - folded.length * foldPx);
  const liveMs = Math.max(1, segs.filter((g) => !g.fold).reduce((n, g) => n + g.b - g.a, 0));
  let px = x0;
  for (const g of segs) { g.px0 = px; g.px1 = px + (g.fold ? foldPx : ((g.b - g.a) / liveMs) * free); px = g.px1; }
  const x = (t) => {
    if (t <= tMin) return x0;
    const g = segs.find((q) => t <= q.b) ?? segs[segs.length - 1];
    if (!g) return x0;
    return g.px0 + ((Math.min(t, g.b) - g.a) / Math.max(g.b - g.a, 1)) * (g.px1 - g.px0);
  };
  const inv = (p) => {
    const g = segs.find((q) => p <= q.px1) ?? segs[segs.length - 1];
    if (!g) return tMin;
    return g.a + ((p - g.px0) / Math.max(g.px1 - g.px0, 1e-9)) * (g.b - g.a);
  };
  return { x, inv, folds: folded };
}

/** Place labels on up to `lanes` lines so none overprints another; returns the lane of each. */
function lanesFor(items, lanes, charPx = 6.2) {
  const ends = Array(lanes).fill(-Infinity);
  return items.map((it) => {
    const w = it.text.length * charPx + 6;
    let lane = ends.findIndex((e) => e <= it.x);
    if (lane < 0) lane = ends.indexOf(Math.min(...ends));
    ends[lane] = it.x + w;
    return lane;
  });
}

/**
 * Draw the chart. `cursorAt` (ms) draws the scrubber's position; `now` closes a running attempt;
 * `lostAt` (ms) says the running attempt's worker was marked lost by the registry at that time.
 * Returns an <svg> sized to its rows; the width is a viewBox, so it scales to the panel.
 */
export function drawGantt(events, { now = Date.now(), live = false, cursorAt = null, width = 1000, lostAt = null } = {}) {
  const { attempts, gaps, markers, t0, runAt } = layout(events);
  const narrow = width < 560;
  const rowH = 46;
  const left = narrow ? 74 : 130;
  const right = 12;
  const top = 36; // two lanes of marker labels above the rows
  const height = top + Math.max(1, attempts.length) * rowH + 24;
  const running = attempts.find((a) => !a.endAt);
  const endOf = (a) => a.endAt ?? (live ? now : ms(events[events.length - 1].at));
  let tMax = t0 ?? now;
  for (const e of events) tMax = Math.max(tMax, ms(e.at));
  if (live) tMax = Math.max(tMax, now);
  if (running && live) tMax = Math.max(tMax, running.leases[running.leases.length - 1].until);
  for (const g of gaps) tMax = Math.max(tMax, g.to);
  if (runAt !== null) tMax = Math.max(tMax, runAt);
  const tMin = Math.min(t0 ?? now, ...attempts.map((a) => a.readyAt));
  tMax += Math.max(tMax - tMin, 1) * 0.03;
  const busy = attempts.map((a) => [a.readyAt < a.startedAt && a.startedAt - a.readyAt < 5000 ? a.readyAt : a.startedAt, endOf(a)]);
  if (running && live) busy.push([now, running.leases[running.leases.length - 1].until]);
  const instants = events.map((e) => ms(e.at));
  if (live) instants.push(now);
  if (runAt !== null) instants.push(runAt);
  for (const g of gaps) instants.push(g.from, g.to);
  const { x, inv, folds } = timeScale(tMin, tMax, busy, left, width - right, instants);
  const svg = s("svg", { class: "gantt", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${attempts.length} attempt${attempts.length === 1 ? "" : "s"}` });

  // axis: ticks evenly spaced on screen, labelled with the time since the first event
  const axis = s("g", { class: "axis" });
  const ticks = narrow ? 3 : 5;
  for (let i = 0; i <= ticks; i += 1) {
    const px = left + ((width - right - left) * i) / ticks;
    axis.append(s("line", { x1: px, x2: px, y1: top - 4, y2: height - 20 }),
      s("text", { x: px, y: height - 6, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" }, `+${dur(inv(px) - tMin)}`));
  }
  svg.append(axis);
  for (const f of folds) {
    const a = x(f.a), b = x(f.b);
    svg.append(s("g", { class: "fold" },
      s("rect", { x: a + 2, y: top - 4, width: Math.max(0, b - a - 4), height: height - top - 16 }),
      s("path", { d: `M${a + 8},${top} l6,6 l-6,6 l6,6 M${b - 14},${top} l6,6 l-6,6 l6,6` }),
      s("title", {}, `idle ${dur(f.b - f.a)} folded`)));
  }

  attempts.forEach((a, i) => {
    const y = top + i * rowH;
    const g = s("g", { class: "attempt", "data-attempt": a.n });
    const end = endOf(a);
    g.append(s("text", { class: "row-label", x: 4, y: y + 14 }, narrow ? `#${a.n}` : `attempt ${a.n}`),
      s("text", { x: 4, y: y + 27 }, (a.worker || "").slice(0, narrow ? 10 : 20)));
    if (a.startedAt > a.readyAt) {
      g.append(s("rect", { class: "bar-queue", x: x(a.readyAt), y: y + 8, width: Math.max(1, x(a.startedAt) - x(a.readyAt)), height: 12, rx: 2 },
        s("title", {}, `waited ${dur(a.startedAt - a.readyAt)} before starting`)));
    }
    // A lost attempt ran until its last sign of life (the last lease grant), then was orphaned.
    const lastSign = a.leases[a.leases.length - 1].at;
    const orphanFrom = a.outcome === "lost" ? lastSign : !a.endAt && lostAt !== null ? Math.max(lastSign, Math.min(lostAt, end)) : null;
    const solidEnd = orphanFrom ?? end;
    g.append(s("rect", { class: `bar-run o-${a.outcome ?? "running"}${a.endAt ? "" : " open"}`, x: x(a.startedAt), y: y + 5,
      width: Math.max(3, x(solidEnd) - x(a.startedAt)), height: 18, rx: 3, "data-ms": Math.round(solidEnd - a.startedAt) },
    s("title", {}, `attempt ${a.n} on ${a.worker}: ${a.outcome ?? "running"} after ${dur(end - a.startedAt)}`)));
    if (orphanFrom !== null) {
      g.append(s("rect", { class: "bar-orphan", x: x(orphanFrom), y: y + 5, width: Math.max(3, x(end) - x(orphanFrom)), height: 18, rx: 3 },
        s("title", {}, `worker lost: no sign of life for ${dur(end - orphanFrom)}; redelivered at the ack deadline`)));
    }
    const labels = [];
    if (!a.endAt) {
      // Only a running attempt has a lease worth drawing: dashed from each grant to its deadline.
      a.leases.forEach((l, k) => {
        if (k === a.leases.length - 1) g.append(s("line", { class: "lease", x1: x(l.at), x2: x(l.until), y1: y + 28, y2: y + 28 }));
        if (l.ext) g.append(s("circle", { class: "ext", cx: x(l.at), cy: y + 28, r: 2.5 }, s("title", {}, `lease extended to ${new Date(l.until).toISOString()}`)));
      });
      const l = a.leases[a.leases.length - 1];
      g.append(s("line", { class: "deadline", x1: x(l.until), x2: x(l.until), y1: y + 2, y2: y + 31 },
        s("title", {}, `ack deadline ${new Date(l.until).toISOString()}`)));
      const left_ = l.until - now;
      labels.push({ x: x(l.until), text: live ? (left_ >= 0 ? `deadline in ${dur(left_)}` : `deadline passed ${dur(-left_)} ago`) : "ack deadline", cls: "deadline-label" });
      if (orphanFrom !== null) labels.unshift({ x: x(orphanFrom), text: "worker lost → redelivery at the deadline", cls: "lost-label" });
    }
    if (a.outcome === "lost") {
      const xe = x(end);
      g.append(s("path", { class: "lost-mark", d: `M${xe - 4},${y + 4} l8,8 m0,-8 l-8,8` }));
      labels.push({ x: x(orphanFrom), text: "worker lost → redelivered", cls: "lost-label" });
    }
    // Row labels sit on their own line under the bar, right-aligned when they would leave the chart.
    let nextFree = -Infinity;
    for (const lb of labels) {
      const w = lb.text.length * 6.2;
      let lx = Math.max(lb.x + 4, nextFree);
      let anchor = "start";
      if (lx + w > width - right) { lx = width - right; anchor = "end"; }
      g.append(s("text", { class: lb.cls, x: lx, y: y + 42, "text-anchor": anchor }, lb.text));
      nextFree = lx + w + 8;
    }
    for (const z of a.zombies) {
      g.append(s("circle", { class: "lost-mark", cx: x(z.at), cy: y + 14, r: 4, fill: "none" }, s("title", {}, `late ${z.what} rejected`)));
    }
    svg.append(g);
  });

  for (const gap of gaps) {
    const row = attempts.findIndex((a) => a.n === gap.attempt);
    const y = top + Math.max(0, row) * rowH + 16;
    const x1 = x(gap.from), x2 = x(gap.to);
    const text = `backoff ${dur(gap.to - gap.from)}`;
    svg.append(s("g", { class: "gap" },
      s("line", { class: "gap-backoff", x1, x2, y1: y, y2: y }, s("title", {}, text)),
      x2 - x1 > text.length * 6.2 ? s("text", { class: "gap-label", x: (x1 + x2) / 2, y: y - 4, "text-anchor": "middle" }, text) : null));
  }
  if (runAt !== null && !attempts.some((a) => a.startedAt >= runAt - 1)) {
    const text = live ? `runs at +${dur(runAt - tMin)} (in ${dur(runAt - now)})` : `run at +${dur(runAt - tMin)}`;
    markers.push({ at: runAt, label: text, seq: null, cls: "run-at" });
  }
  const sorted = markers.map((m) => ({ ...m, x: x(m.at) })).sort((p, q) => p.x - q.x);
  const lanes = lanesFor(sorted.map((m) => ({ x: m.x, text: m.label })), 2);
  sorted.forEach((m, k) => {
    const w = m.label.length * 6.2;
    const end = m.x + 3 + w > width - right;
    svg.append(s("g", { class: m.cls ?? "" }, s("line", { class: "marker", x1: m.x, x2: m.x, y1: top - 4 - lanes[k] * 13, y2: height - 20 }),
      s("text", { class: "marker-label", x: end ? m.x - 3 : m.x + 3, y: top - 8 - lanes[k] * 13, "text-anchor": end ? "end" : "start" }, m.label)));
  });
  if (cursorAt !== null) svg.append(s("line", { class: "cursor", x1: x(cursorAt), x2: x(cursorAt), y1: 4, y2: height - 20 }));
  if (!attempts.length) svg.append(s("text", { x: left + 4, y: top + 26 }, runAt !== null ? "waiting for its run-at time" : "no attempt yet"));
  return svg;
}

export const LEGEND = [["var(--idle-bg)", "queued"], ["var(--run)", "running"], ["var(--ok)", "succeeded"], ["var(--fail)", "failed"],
  ["var(--lost)", "worker lost"], ["var(--deadline)", "ack deadline", true], ["var(--warn)", "backoff", true], ["var(--pause)", "marker", true]];
