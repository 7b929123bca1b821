// Asking before a destructive or bulk action: a modal that says what will happen, to how many tasks,
// chosen by which filter. "Keep" has the focus, so Enter or Escape on the dialog does nothing harmful.
import { h } from "./dom.js";

/**
 * Resolve true when the user confirms. `title` is the question ("Replay 20 dead letters?"), `lines`
 * the scope (count and filter), `action` the confirm button's label.
 */
export function confirmAction({ title, lines = [], action = "Confirm", danger = true }) {
  return new Promise((resolve) => {
    const keep = h("button", { value: "no", "data-confirm": "no", autofocus: true }, "Keep");
    const dialog = h("dialog", { class: "confirm", id: "confirm", "aria-labelledby": "confirm-title" },
      h("form", { method: "dialog" },
        h("h2", { id: "confirm-title" }, title),
        lines.map((l) => h("p", { class: "confirm-line" }, l)),
        h("div", { class: "row confirm-actions" }, h("span", { class: "spacer" }), keep,
          h("button", { value: "yes", "data-confirm": "yes", class: danger ? "danger solid" : "primary" }, action))));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(dialog.returnValue === "yes"); });
    document.body.append(dialog);
    dialog.showModal();
    keep.focus();
  });
}

/** A filter in words: "status failed, type demo.fail" — or "no filter: every task". */
export function describeFilter(filter, everything = "no filter") {
  const parts = Object.entries(filter).filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`);
  return parts.length ? parts.join(", ") : everything;
}
