// A per-minute chart drawn in SVG: stacked bars for finished tasks (succeeded / failed), a line for
// submissions and a line for the failure rate on its own 0–100 % scale.
import { s } from "./dom.js";

/**
 * @param {{t: number, submitted: number, succeeded: number, failed: number}[]} points per minute, oldest first
 */
export function throughputChart(points, { width = 720, height = 200, minutes = 60, end = Date.now() } = {}) {
  const left = 36, right = 40, top = 10, bottom = 22;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "throughput and failure rate, last hour" });
  const endMin = Math.floor(end / 60000) * 60000;
  const startMin = endMin - (minutes - 1) * 60000;
  const byT = new Map(points.map((p) => [Math.floor(p.t / 60000) * 60000, p]));
  const slots = [];
  for (let t = startMin; t <= endMin; t += 60000) slots.push(byT.get(t) || { t, submitted: 0, succeeded: 0, failed: 0 });
  // An even top (2 at least), so the three labels 0, half and top are whole and distinct (was "1 / 1 / 0").
  const peak = Math.max(...slots.map((p) => Math.max(p.succeeded + p.failed, p.submitted)));
  const maxY = Math.max(2, peak + (peak % 2));
  const w = (width - left - right) / slots.length;
  const y = (v) => top + (height - top - bottom) * (1 - v / maxY);
  const yr = (r) => top + (height - top - bottom) * (1 - r);
  const grid = s("g", { class: "grid" });
  for (const f of [0, 0.5, 1]) {
    grid.append(s("line", { x1: left, x2: width - right, y1: y(maxY * f), y2: y(maxY * f) }),
      s("text", { x: left - 4, y: y(maxY * f) + 4, "text-anchor": "end" }, Math.round(maxY * f)),
      s("text", { x: width - right + 4, y: yr(f) + 4 }, `${Math.round(f * 100)}%`));
  }
  for (const back of [60, 45, 30, 15, 0]) {
    const i = slots.length - 1 - back;
    if (i >= 0) grid.append(s("text", { x: left + i * w + w / 2, y: height - 6, "text-anchor": "middle" }, back ? `-${back}m` : "now"));
  }
  svg.append(grid);
  const bars = s("g", {});
  let sub = "";
  let rate = "";
  slots.forEach((p, i) => {
    const x0 = left + i * w + 0.5;
    if (p.succeeded) bars.append(s("rect", { class: "s-done", x: x0, width: Math.max(1, w - 1), y: y(p.succeeded), height: y(0) - y(p.succeeded) },
      s("title", {}, `${new Date(p.t).toLocaleTimeString()}: ${p.succeeded} succeeded`)));
    if (p.failed) bars.append(s("rect", { class: "s-failed", x: x0, width: Math.max(1, w - 1), y: y(p.succeeded + p.failed), height: y(0) - y(p.failed) },
      s("title", {}, `${new Date(p.t).toLocaleTimeString()}: ${p.failed} failed`)));
    const cx = left + i * w + w / 2;
    sub += `${i ? "L" : "M"}${cx.toFixed(1)},${y(p.submitted).toFixed(1)}`;
    const done = p.succeeded + p.failed;
    if (done) rate += `${rate ? "L" : "M"}${cx.toFixed(1)},${yr(p.failed / done).toFixed(1)}`;
  });
  svg.append(bars, s("path", { class: "s-submitted", d: sub }));
  if (rate) svg.append(s("path", { class: "s-rate", d: rate }));
  return svg;
}
