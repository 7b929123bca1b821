// Signing in: an API key typed once is exchanged for an HttpOnly session cookie (the key is never
// stored by the page nor put in a URL). `ordo up` prints a one-time token link (`/?token=…`): the page
// exchanges it for the same cookie and removes it from the address bar and history at once.
import { h, clear } from "../dom.js";
import { api, get, HttpError } from "../api.js";
import { has } from "../caps.js";

const SESSION = "/auth/session";
const WHOAMI = "/v1/whoami";
const LOGOUT = "/auth/logout";

/**
 * A `/?token=…` link: hand the token to the gateway's `GET /auth/token?t=…`, which sets the cookie
 * and redirects back here (`ordo up` prints that link directly); `replace` keeps it out of history.
 */
export async function exchangeTokenFromUrl() {
  const token = new URL(location.href).searchParams.get("token");
  if (!token) return;
  location.replace(`/auth/token?t=${encodeURIComponent(token)}`);
  await new Promise(() => {}); // the page is being replaced
}

/** Who is signed in, in the header (when the gateway has sessions). */
export async function renderAccount() {
  const box = document.getElementById("account");
  clear(box);
  if (!has("GET", WHOAMI)) return;
  try {
    const me = await get(WHOAMI);
    if (me.auth === false) { box.append(h("span", { class: "who", title: "auth is off (ordo up --no-auth)" }, `${me.tenant} · no auth`)); return; }
    box.append(h("span", { class: "who", title: `tenant ${me.tenant ?? ""}` }, `${me.tenant ?? ""} · ${me.role ?? ""}`));
    if (has("POST", LOGOUT)) {
      box.append(h("button", {
        class: "link", onclick: async () => { await api("POST", LOGOUT); location.reload(); },
      }, "sign out"));
    }
  } catch (e) {
    if (!(e instanceof HttpError)) throw e;
  }
}

/**
 * Whether this browser is signed in, asked without a 401 (`GET /auth/state` always answers 200), so
 * a signed-out page logs no error. A gateway without that route is asked `GET /v1/whoami` instead.
 */
export async function signedIn() {
  // index.html asked at start-up already ({signed_in, auth}, {status} or null); asked afresh later on.
  const started = window.ordoBoot?.state;
  if (window.ordoBoot) window.ordoBoot.state = null;
  const state = started ? await started : await fetch("/auth/state", { credentials: "same-origin", headers: { accept: "application/json" } })
    .then(async (r) => (r.ok ? r.json() : { status: r.status })).catch(() => null);
  if (state === null) return true; // the gateway is unreachable: the live stream will say so
  if (state.status === undefined) return Boolean(state.signed_in);
  return fetch(WHOAMI, { credentials: "same-origin" }).then((r) => r.status !== 401, () => true);
}

/** The page behind the form while signed out: a way back to the form after Escape, never a dead end. */
export function renderSignedOut(root, onSignedIn) {
  clear(root);
  const reason = new URL(location.href).searchParams.get("signin");
  root.append(h("div", { class: "panel signed-out", id: "signed-out" },
    h("h1", {}, "Signed out"),
    h("p", {}, reason === "link" ? "That sign-in link was already used or has expired. Paste an API key instead."
      : "Sign in with an API key to see tasks, schedules and workers."),
    h("button", { class: "primary", id: "open-signin", onclick: () => showSignIn(onSignedIn) }, "Sign in")));
}

let open = false;

/** The API-key form, shown when any call answers 401. Escape closes it; the page offers it again. */
export function showSignIn(onSignedIn) {
  if (open) return;
  open = true;
  const dialog = document.getElementById("signin");
  clear(dialog);
  const input = h("input", { type: "password", name: "api_key", autocomplete: "off", required: true, placeholder: "ordo_…" });
  const msg = h("p", { class: "error-text", role: "alert" });
  const form = h("form", { method: "dialog", class: "signin" },
    h("h2", { id: "signin-title" }, "Sign in to Ordo"),
    h("p", {}, "Paste an API key (ordo up prints the local admin key and a one-time sign-in link). It is exchanged for an HttpOnly session cookie; the page never keeps the key."),
    h("label", {}, "API key", input),
    msg,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  dialog.setAttribute("aria-labelledby", "signin-title");
  dialog.onclose = () => {
    open = false;
    // Escaped without signing in: the focus goes to the page's own "Sign in" (not lost on <body>).
    if (dialog.returnValue !== "signed-in") document.getElementById("open-signin")?.focus();
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    msg.textContent = "";
    const r = await fetch(SESSION, { method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", accept: "application/json" }, body: JSON.stringify({ key: input.value.trim() }) })
      .catch((e) => e);
    if (r instanceof Error) { msg.textContent = r.message; return; }
    if (!r.ok) { msg.textContent = r.status === 401 ? "That key was not accepted." : `Sign-in failed (HTTP ${r.status}).`; return; }
    input.value = "";
    dialog.close("signed-in");
    onSignedIn();
  });
  dialog.append(form);
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
}
