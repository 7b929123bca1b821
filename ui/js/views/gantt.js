// The attempt chart: one row per attempt, queued → started → finished, with the lease (ack deadline)
// and each extension, the backoff gap before a retry, and a redelivery after a lost worker.
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
  let t0 = null;
  for (const e of events) {
    const at = ms(e.at);
    if (t0 === null) t0 = at;
    const d = e.data || {};
    const a = d.attempt !== undefined ? attempts.get(d.attempt) : undefined;
    switch (e.type) {
      case "submitted": case "queued": case "resumed": case "replayed":
        readyAt = at; if (e.type !== "submitted" && e.type !== "queued") markers.push({ at, label: e.type, seq: e.seq }); break;
      case "scheduled": readyAt = ms(d.run_at); markers.push({ at, label: "scheduled", seq: e.seq }); break;
      case "paused": case "cancel_requested": markers.push({ at, label: e.type.replace("_", " "), seq: e.seq }); break;
      case "attempt_started":
        attempts.set(d.attempt, { n: d.attempt, worker: d.worker_id, readyAt: readyAt ?? at, startedAt: at, endAt: null,
          outcome: null, leases: [{ at, until: ms(d.lease_until) }], progress: [], zombies: [], seq: e.seq });
        readyAt = null; break;
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
  return { attempts: [...attempts.values()], gaps, markers, t0 };
}

/**
 * Draw the chart. `cursorAt` (ms) draws the scrubber's position; `now` closes a running attempt.
 * Returns an <svg> sized to its rows; the width is a viewBox, so it scales to the panel.
 */
export function drawGantt(events, { now = Date.now(), live = false, cursorAt = null, width = 1000 } = {}) {
  const { attempts, gaps, markers, t0 } = layout(events);
  const rowH = 38;
  const left = 150;
  const right = 20;
  const top = 22;
  const height = top + Math.max(1, attempts.length) * rowH + 26;
  let tMax = t0 ?? now;
  for (const e of events) tMax = Math.max(tMax, ms(e.at));
  // A running attempt's deadline is in scale; a finished one's is clipped at the edge, so a 30 s
  // lease does not squash a 20 ms attempt into a sliver.
  for (const a of attempts) if (!a.endAt) for (const l of a.leases) tMax = Math.max(tMax, l.until);
  for (const g of gaps) tMax = Math.max(tMax, g.to);
  tMax += (tMax - (t0 ?? tMax)) * 0.04;
  if (live) tMax = Math.max(tMax, now);
  const tMin = Math.min(t0 ?? now, ...attempts.map((a) => a.readyAt));
  const span = Math.max(tMax - tMin, 1);
  const x = (t) => left + ((Math.min(t, tMax) - tMin) / span) * (width - left - right);
  const svg = s("svg", { class: "gantt", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${attempts.length} attempt${attempts.length === 1 ? "" : "s"}` });

  // axis: 6 ticks relative to the first event
  const axis = s("g", { class: "axis" });
  for (let i = 0; i <= 5; i += 1) {
    const t = tMin + (span * i) / 5;
    axis.append(s("line", { x1: x(t), x2: x(t), y1: top - 6, y2: height - 20 }),
      s("text", { x: x(t), y: height - 6, "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle" }, `+${dur(t - tMin)}`));
  }
  svg.append(axis);

  attempts.forEach((a, i) => {
    const y = top + i * rowH;
    const g = s("g", { class: "attempt", "data-attempt": a.n });
    const end = a.endAt ?? (live ? now : ms(events[events.length - 1].at));
    g.append(s("text", { class: "row-label", x: 4, y: y + 13 }, `attempt ${a.n}`),
      s("text", { x: 4, y: y + 25 }, (a.worker || "").slice(0, 24)));
    if (a.startedAt > a.readyAt) {
      g.append(s("rect", { class: "bar-queue", x: x(a.readyAt), y: y + 8, width: Math.max(1, x(a.startedAt) - x(a.readyAt)), height: 12, rx: 2 },
        s("title", {}, `waited ${dur(a.startedAt - a.readyAt)} before starting`)));
    }
    const bar = s("rect", { class: `bar-run o-${a.outcome ?? "running"}${a.endAt ? "" : " open"}`, x: x(a.startedAt), y: y + 5,
      width: Math.max(2, x(end) - x(a.startedAt)), height: 18, rx: 3 },
    s("title", {}, `attempt ${a.n} on ${a.worker}: ${a.outcome ?? "running"} after ${dur(end - a.startedAt)}`));
    g.append(bar);
    // lease: a dashed line from each grant/extension to its deadline, a tick at the deadline
    a.leases.forEach((l, k) => {
      const last = k === a.leases.length - 1;
      g.append(s("line", { class: "lease", x1: x(l.at), x2: x(l.until), y1: y + 27, y2: y + 27 }));
      if (last) {
        const title = s("title", {}, `ack deadline ${new Date(l.until).toISOString()}`);
        if (l.until <= tMax) g.append(s("line", { class: "deadline", x1: x(l.until), x2: x(l.until), y1: y + 2, y2: y + 28 }, title));
        else g.append(s("text", { class: "gap-label", x: width - right, y: y + 24, "text-anchor": "end" }, `deadline +${dur(l.until - end)} ›`, title));
      }
      if (l.ext) {
        g.append(s("circle", { class: "ext", cx: x(l.at), cy: y + 27, r: 2.5 },
          s("title", {}, `lease extended to ${new Date(l.until).toISOString()}`)));
      }
    });
    if (a.outcome === "lost") {
      const xe = x(end);
      g.append(s("path", { class: "lost-mark", d: `M${xe - 4},${y + 4} l8,8 m0,-8 l-8,8` }),
        s("text", { class: "gap-label", x: xe + 6, y: y + 12 }, "lease expired → redelivered"));
    }
    for (const z of a.zombies) {
      g.append(s("circle", { class: "lost-mark", cx: x(z.at), cy: y + 14, r: 4, fill: "none" }, s("title", {}, `late ${z.what} rejected`)));
    }
    svg.append(g);
  });

  for (const gap of gaps) {
    const row = attempts.findIndex((a) => a.n === gap.attempt);
    const y = top + Math.max(0, row) * rowH + rowH + 2;
    svg.append(s("g", { class: "gap" },
      s("line", { class: "gap-backoff", x1: x(gap.from), x2: x(gap.to), y1: y, y2: y }, s("title", {}, `backoff ${dur(gap.to - gap.from)}`)),
      s("text", { class: "gap-label", x: (x(gap.from) + x(gap.to)) / 2, y: y - 3, "text-anchor": "middle" }, `backoff ${dur(gap.to - gap.from)}`)));
  }
  for (const m of markers) {
    svg.append(s("g", {}, s("line", { class: "marker", x1: x(m.at), x2: x(m.at), y1: top - 8, y2: height - 20 }),
      s("text", { x: x(m.at) + 3, y: top - 10 }, m.label)));
  }
  if (cursorAt !== null) svg.append(s("line", { class: "cursor", x1: x(cursorAt), x2: x(cursorAt), y1: 4, y2: height - 20 }));
  if (!attempts.length) svg.append(s("text", { x: left, y: top + 18 }, "no attempt yet"));
  return svg;
}

export const LEGEND = [["var(--idle-bg)", "queued"], ["var(--run)", "running"], ["var(--ok)", "succeeded"], ["var(--fail)", "failed"],
  ["var(--warn)", "lost worker"], ["var(--fail)", "ack deadline", true], ["var(--warn)", "backoff", true]];
