// Live updates over server-sent events only (no polling timer). The gateway's `id:` is the event-log
// sequence, so EventSource's own Last-Event-ID reconnect resumes exactly after the last event seen;
// events at or below the last sequence are dropped, so a resume never shows a duplicate.

export class LiveStream {
  /**
   * @param {string} url  the SSE endpoint (may carry `?after=` / `task_id=`)
   * @param {(e: object) => void} onEvent  called once per task event, in sequence order
   * @param {(state: string) => void} onState  "live" | "reconnecting" | "offline"
   * @param {number|null} after  resume point when known (the last sequence already shown)
   */
  constructor(url, onEvent, onState = () => {}, after = null) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastSeq = after;
    this.duplicates = 0;
    this.retryMs = 500;
    this.es = null;
    this.closed = false;
    this.retryTimer = null;
    /** Called with the server's start position each time a stream (re)starts: data read before may be stale. */
    this.onStart = null;
    this.open();
  }

  open() {
    if (this.closed) return;
    let url = this.url;
    if (this.lastSeq !== null) url += (url.includes("?") ? "&" : "?") + `after=${this.lastSeq}`;
    const es = new EventSource(url, { withCredentials: true });
    this.es = es;
    es.onopen = () => { this.retryMs = 500; this.onState("live"); };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error, e.g. 502/503 during a restart): reopen from lastSeq.
        this.onState("offline");
        this.retryTimer = setTimeout(() => this.open(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 10_000);
      } else {
        this.onState("reconnecting");
      }
    };
    es.addEventListener("position", (msg) => {
      // Where the server started this stream: the resume point when nothing was delivered yet.
      const seq = Number(msg.data);
      if (this.lastSeq === null && Number.isFinite(seq)) this.lastSeq = seq;
      this.onStart?.(seq);
    });
    es.addEventListener("task_event", (msg) => {
      const seq = Number(msg.lastEventId);
      if (this.lastSeq !== null && seq <= this.lastSeq) { this.duplicates += 1; return; }
      this.lastSeq = seq;
      let event;
      try { event = JSON.parse(msg.data); } catch { return; }
      this.onEvent(event);
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.es?.close();
  }
}

/**
 * Run `fn` after a burst of triggers, at most one run in flight: live refreshes driven by events,
 * coalesced, never on a timer of their own.
 */
export function coalesce(fn, minGapMs = 0) {
  let running = false;
  let dirty = false;
  let lastRun = -Infinity; // the first run goes at once (0 held a view's first load for up to minGapMs)
  const run = async () => {
    running = true;
    dirty = false;
    const wait = lastRun + minGapMs - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    try { await fn(); } catch (e) { console.warn("refresh failed", e); }
    lastRun = performance.now();
    running = false;
    if (dirty) run();
  };
  return () => { if (running) dirty = true; else run(); };
}

/**
 * A live list that holds still under the mouse: while the pointer rests on `el`, `run` is held and
 * `note` says that updates wait; when it leaves, the held update runs. Rows do not move under a
 * pointer about to click one. Touch and pen do not hold (a tap leaves no pointer resting). The
 * view's own actions (a Replay clicked) call `run` directly and show at once.
 */
export function holdWhileHovered(el, run, note) {
  let over = false;
  let held = false;
  el.addEventListener("pointerenter", (ev) => { over = ev.pointerType === "mouse"; });
  el.addEventListener("pointerleave", () => {
    over = false;
    if (!held) return;
    held = false;
    note.hidden = true;
    run();
  });
  return () => {
    if (!over) { run(); return; }
    held = true;
    note.hidden = false;
  };
}
