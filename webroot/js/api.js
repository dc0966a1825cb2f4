// The console's only way to the server: the public JSON API under /api/v1,
// with the bearer token (kept in session storage) and the token prompt that
// a 401 opens. Also the caller's identity, from GET /api/v1/whoami.

const TOKEN_KEY = "sandcron.token";
const ROLES = ["viewer", "operator", "admin"];

/** An error answer of the API: status, code, message and the field it names. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** Who is signed in; filled by `loadSession`. */
export const session = {
  name: null,
  role: null,
  tokensRequired: false,
  shellJobs: false,
};

/** Whether the caller has at least `role`. */
export function can(role) {
  return session.role !== null && ROLES.indexOf(session.role) >= ROLES.indexOf(role);
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  session.role = null;
  session.name = null;
}

/**
 * Calls the API. `body` may be an object (sent as JSON), a Blob/File or
 * FormData (sent as is). Answers the parsed JSON (null for 204) or throws
 * ApiError. A 401 opens the token prompt and retries with the new token.
 */
export async function api(path, options = {}) {
  return (await call(path, options)).data;
}

/**
 * GETs a list the server answers in pages (a JSON array, with a
 * `Link: <next>; rel="next"` header while more follow, as `/jobs` does)
 * and returns every page's items as one array.
 */
export async function apiAll(path, { signal } = {}) {
  const items = [];
  for (let next = path; next;) {
    const { data, response } = await call(next, { signal });
    items.push(...(Array.isArray(data) ? data : []));
    next = nextLink(response.headers.get("Link"));
  }
  return items;
}

/** The path below `/api/v1` of a `Link` header's `rel="next"` target. */
function nextLink(header) {
  for (const link of (header || "").split(",")) {
    const match = /^\s*<\/api\/v1(\/[^>]*)>\s*;\s*rel="next"/.exec(link);
    if (match) return match[1];
  }
  return null;
}

async function call(path, { method = "GET", body, headers = {}, signal } = {}) {
  for (;;) {
    const sent = token();
    const all = { Accept: "application/json", ...headers };
    if (sent) all.Authorization = `Bearer ${sent}`;
    let payload = body;
    if (body !== undefined && !(body instanceof Blob) && !(body instanceof FormData)) {
      all["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`/api/v1${path}`, { method, headers: all, body: payload, signal, cache: "no-store" });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "network", `cannot reach the server (${err.message})`);
    }
    const data = await readJson(response);
    if (response.status === 401) {
      // Another request may already have replaced the token; retry with it.
      if (token() && token() !== sent) continue;
      await askForToken(data?.error?.message, Boolean(sent));
      continue;
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        data?.error?.code ?? "http",
        data?.error?.message ?? `${response.status} ${response.statusText}`,
        data?.error?.field,
      );
    }
    return { data, response };
  }
}

async function readJson(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: { code: "http", message: text.trim() } };
  }
}

let pendingPrompt = null;
const listeners = new Set();

/** Called with no arguments after a new token was entered. */
export function onSignIn(listener) {
  listeners.add(listener);
}

/**
 * Shows the token dialog (once, however many requests are waiting) and
 * resolves when a token was entered; rejects with a 401 ApiError when the
 * user cancels.
 */
export function askForToken(reason, wasRejected) {
  if (pendingPrompt) return pendingPrompt;
  const dialog = document.getElementById("token-dialog");
  const input = dialog.querySelector("input[name=token]");
  const note = dialog.querySelector(".reason");
  note.textContent = wasRejected
    ? `The server did not accept that token (${reason || "invalid token"}). Enter another one.`
    : "This server needs a bearer token. It is kept in this tab's session storage only.";
  input.value = "";
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
  pendingPrompt = new Promise((resolve, reject) => {
    dialog.addEventListener(
      "close",
      () => {
        pendingPrompt = null;
        const entered = input.value.trim();
        input.value = "";
        if (dialog.returnValue === "sign-in" && entered) {
          sessionStorage.setItem(TOKEN_KEY, entered);
          resolve();
          for (const listener of listeners) listener();
        } else {
          reject(new ApiError(401, "unauthorized", "a token is needed to use this server"));
        }
      },
      { once: true },
    );
  });
  return pendingPrompt;
}

/** Loads the caller's role and what the server allows. */
export async function loadSession() {
  const me = await api("/whoami");
  session.name = me.name;
  session.role = me.role;
  session.tokensRequired = me.tokens_required;
  session.shellJobs = me.shell_jobs;
  return session;
}

/** `{a: 1, b: undefined}` → "?a=1" (empty values left out). */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export function jobPath(name, suffix = "") {
  return `/jobs/${encodeURIComponent(name)}${suffix}`;
}
