// Which task commands a status allows, as the gateway decides them: the task page's buttons and
// shortcuts, and the task list's bulk confirmation, ask the same.
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export const ALLOWED = {
  cancel: (st) => !TERMINAL.has(st) && st !== "cancelling",
  retry: (st) => st === "failed" || st === "cancelled",
  pause: (st) => ["queued", "scheduled", "retrying"].includes(st),
  resume: (st) => st === "paused",
};
