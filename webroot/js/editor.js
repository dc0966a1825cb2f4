// The job editor (#/jobs/new, #/jobs/{name}/edit): the schedule validated
// and previewed live in the job's zone through /cron/next, the kind (a
// WebAssembly module, picked or uploaded by drag-and-drop, a shell command
// for admins on servers that permit it, or an HTTP request where a worker
// runs them), limits and policies, where a module may connect (egress) and
// its network limits, completion (sync or async), broadcast, the jobs it
// starts and its alerts, the stored secrets it receives and (a module's)
// plain config. Saving is one PUT with If-Match /
// If-None-Match, so nobody's change is overwritten; fields the form does not
// show are sent back as they were.

import { api, apiAll, can, jobPath, query, session } from "./api.js";
import {
  ALERTABLE_STATUSES, debounce, emptyState, formatBytes, formatPairs, formatTime, h, localZone, navigate,
  parsePairs, replace, shortDigest, toast,
} from "./ui.js";
import { uploadModule } from "./modules.js";
import { listSecrets } from "./secrets.js";

const NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const PRESETS = [
  ["*/10 * * * * *", "every 10 s"],
  ["* * * * *", "every minute"],
  ["*/15 * * * *", "every 15 min"],
  ["@hourly", "hourly"],
  ["0 3 * * *", "daily 03:00"],
  ["0 9 * * MON-FRI", "weekdays 09:00"],
];
const DEFAULT_LIMITS = { fuel: 10_000_000_000, memory_mb: 64, timeout_s: 300, output_kb: 1024 };
/** A wasm job's network limits when it names none (the server's defaults). */
const DEFAULT_NETWORK = {
  requests: 100, concurrent: 8, bytes_out: 10 * 1024 * 1024, bytes_in: 100 * 1024 * 1024, connect_timeout_s: 10, first_byte_timeout_s: 30,
};
/** (key, label, hint) of each network limit; bytes are shown in bytes so any stored value round-trips. */
const NETWORK_FIELDS = [
  ["requests", "Requests", "HTTP requests and TCP connections in all"],
  ["concurrent", "At once", "open at the same time"],
  ["bytes_out", "Bytes sent", null],
  ["bytes_in", "Bytes received", null],
  ["connect_timeout_s", "Connect timeout (s)", "longest wait for a connection"],
  ["first_byte_timeout_s", "First-byte timeout (s)", "longest wait for a response to start"],
];
const EGRESS_SCHEMES = ["https", "http", "tcp"];
const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const DEFAULT_HTTP = { method: "GET", url: "", headers: {}, timeout_s: 30, output_kb: 1024 };
const DEFAULT_RESULT_TIMEOUT_S = 3600;
const DEFAULT_FAILURE_RATE = { window_s: 600, min_runs: 5 };
/** The name a job reads a secret under: an environment variable's name. */
const VARIABLE_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A problem in the form that belongs to one control (its id). */
class FormError extends Error {
  constructor(control, message) {
    super(message);
    this.control = control;
  }
}

/** "Name: value" lines (or Name=value) → headers; throws naming the bad line. */
function parseHeaders(text) {
  const out = {};
  for (const [index, raw] of text.split("\n").entries()) {
    // Only the start is trimmed: a value is sent exactly as written.
    const line = raw.replace(/^\s+/, "").replace(/\r$/, "");
    if (!line || line.startsWith("#")) continue;
    const m = /^([^:=\s]+)\s*[:=] ?(.*)$/.exec(line);
    if (!m) throw new FormError("job-http-headers", `headers, line ${index + 1}: expected Name: value, got "${line}"`);
    out[m[1]] = m[2];
  }
  return out;
}

function formatHeaders(headers) {
  return Object.entries(headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
}

/** "200, 204" → [200, 204]; empty → []. */
function parseStatuses(text) {
  return text.split(/[\s,]+/).filter(Boolean).map((part) => {
    if (!/^\d{3}$/.test(part)) throw new FormError("job-http-expect", `expected statuses: "${part}" is not an HTTP status (three digits)`);
    return Number(part);
  });
}

/** A share (0.5) as a percentage for the form ("50"), without float noise. */
function percent(share) {
  return String(+(share * 100).toPrecision(12));
}

/** The id of the control of network limit `key` ("bytes_out" → "job-net-bytes-out"). */
function networkId(key) {
  return `job-net-${key.replaceAll("_", "-")}`;
}

/** The egress textarea's entries, each with its line (from 1); blank lines are left out. */
function egressEntries(text) {
  return text.split("\n").map((raw, index) => ({ entry: raw.trim(), line: index + 1 })).filter((e) => e.entry);
}

/**
 * What is obviously wrong with an egress entry, or null. Only the plain
 * mistakes (no scheme, another scheme, a URL with a path, a tcp:// entry
 * without its port): the server checks the rest and has the last word.
 */
function egressMistake(entry) {
  const at = entry.indexOf("://");
  if (at < 0) return "needs a scheme: https://, http:// or tcp://";
  const scheme = entry.slice(0, at).toLowerCase();
  if (!EGRESS_SCHEMES.includes(scheme)) return `scheme "${scheme}" is not one of https, http, tcp`;
  const rest = entry.slice(at + 3).replace(/\/$/, "");
  if (/[/?#]/.test(rest)) return "names a destination, not a URL: leave out any path, query or fragment";
  if (scheme === "tcp" && !/:\d+$/.test(rest)) return "a tcp:// entry needs a port, e.g. tcp://db.internal:5432";
  return null;
}

/**
 * The chosen names in a stable order: those of `original` still chosen,
 * in their order, then the newly chosen ones in `order`. So saving an
 * unchanged list sends it back exactly as it was.
 */
function ordered(original, chosen, order) {
  const kept = original.filter((n) => chosen.has(n));
  return [...kept, ...order.filter((n) => chosen.has(n) && !kept.includes(n))];
}

function zones() {
  try {
    const list = Intl.supportedValuesOf("timeZone");
    return list.includes("UTC") ? list : ["UTC", ...list];
  } catch {
    return ["UTC", localZone()];
  }
}

/** A labelled control with its hint and the place its error goes. */
function field(label, control, { hint, id = control.id, wide = false, span2 = false } = {}) {
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const hintNode = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  control.setAttribute("aria-describedby", [hintNode ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" "));
  return h("div", { class: `field${wide ? " wide" : ""}${span2 ? " span2" : ""}`, "data-field": id }, h("label", { for: id }, label), control, hintNode, error);
}

function input(id, attrs = {}) {
  return h("input", { id, name: id, ...attrs });
}

function number(id, value, attrs = {}) {
  return input(id, { type: "number", min: 0, step: 1, inputmode: "numeric", value: String(value), ...attrs });
}

function select(id, options, value) {
  return h("select", { id, name: id }, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

/** A labelled group of checkboxes (a fieldset whose legend names it), with its hint and error. */
function checkGroup(id, legend, boxes, { hint, wide = false, span2 = false, empty } = {}) {
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const hintNode = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  return h("fieldset", {
    class: `group field${wide ? " wide" : ""}${span2 ? " span2" : ""}`, id, "data-field": id,
    "aria-describedby": [hintNode ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" "),
  },
  h("legend", {}, legend),
  boxes.length ? h("div", { class: "checks" }, boxes) : h("p", { class: "muted checks-empty" }, empty ?? "Nothing to choose."),
  hintNode, error);
}

function checkbox(name, value, label, checked, extra) {
  return h("label", { class: "check" }, h("input", { type: "checkbox", name, value, checked }), " ", label, extra ? h("small", { class: "muted" }, ` ${extra}`) : null);
}

function checkedValues(group) {
  return new Set([...group.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value));
}

/**
 * Rows of two controls (a job's secrets, a module's config) with Add and
 * Remove, as a labelled group with its hint and error. `make(id, entry)`
 * answers a row's two controls and `read()`, which answers the row's
 * [left, right] (unchanged controls give back the stored text exactly).
 * Each control has its own error place, so a server error that names a
 * row's key is shown at that row.
 */
function pairRows(id, legend, { columns, entries, make, addLabel, empty, hint }) {
  let next = 0;
  const rows = [];
  const list = h("div", { class: "pair-rows", id: `${id}-rows` });
  const head = h("div", { class: "pair-head", "aria-hidden": "true" }, columns.map((c) => h("span", {}, c)));
  const none = h("p", { class: "muted pair-empty" }, empty);
  const changed = () => {
    head.hidden = rows.length === 0;
    none.hidden = rows.length > 0;
    // The request body preview follows the form's input events.
    list.dispatchEvent(new Event("input", { bubbles: true }));
  };
  const add = (entry = null) => {
    const n = next++;
    const row = make(`${id}-${n}`, entry);
    const remove = h("button", { type: "button", class: "danger-quiet pair-remove", "aria-label": `Remove ${row.left.value || "this row"}` }, "Remove");
    row.left.addEventListener("input", () => remove.setAttribute("aria-label", `Remove ${row.left.value || "this row"}`));
    const node = h("div", { class: "pair-row", "data-row": String(n) },
      row.left, row.right, remove,
      h("p", { class: "field-error", id: `${row.left.id}-error`, hidden: true }),
      h("p", { class: "field-error", id: `${row.right.id}-error`, hidden: true }));
    const entryOf = { ...row, node };
    remove.addEventListener("click", () => {
      node.remove();
      rows.splice(rows.indexOf(entryOf), 1);
      changed();
      (rows.at(-1)?.left ?? addButton).focus();
    });
    rows.push(entryOf);
    list.append(node);
    return entryOf;
  };
  const addButton = h("button", { type: "button", class: "pair-add", id: `${id}-add` }, addLabel);
  addButton.addEventListener("click", () => {
    add().left.focus();
    changed();
  });
  for (const entry of entries) add(entry);
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const hintNode = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  const group = h("fieldset", {
    class: "group field wide", id, "data-field": id,
    "aria-describedby": [hintNode ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" "),
  }, h("legend", {}, legend), head, list, none, h("p", { class: "pair-actions" }, addButton), hintNode, error);
  changed();
  return { group, rows, addButton };
}

/**
 * A text input whose `read()` gives back `stored` while what it shows is
 * unchanged, and what was typed (trimmed with `trim`) once it is not.
 */
function keptInput(id, stored, attrs, { trim = false } = {}) {
  const control = input(id, { value: stored ?? "", ...attrs });
  // An input drops line breaks from what it shows; an untouched one sends the stored text.
  const shown = control.value;
  const typed = () => (trim ? control.value.trim() : control.value);
  return { control, read: () => (stored !== null && stored !== undefined && control.value === shown ? stored : typed()) };
}

/** Moves the focus to a control, or to the first enabled one inside a group. */
function focusControl(form, id) {
  const control = form.querySelector(`#${CSS.escape(id)}`);
  if (!control) return false;
  const target = control.matches("input, select, textarea, button")
    ? control
    : control.querySelector("input:not(:disabled), select:not(:disabled), textarea:not(:disabled)") ?? control.querySelector("input");
  if (!target) return false;
  target.focus();
  return true;
}

/** Shows (or clears) the error of the field whose control has `id`. */
function setFieldError(form, id, message) {
  const control = form.querySelector(`#${CSS.escape(id)}`);
  const error = form.querySelector(`#${CSS.escape(id)}-error`);
  if (!control || !error) return false;
  // An error inside a collapsed part (the network limits) must be seen.
  const collapsed = control.closest("details:not([open])");
  if (message && collapsed) collapsed.open = true;
  control.setAttribute("aria-invalid", message ? "true" : "false");
  error.hidden = !message;
  error.textContent = message || "";
  return true;
}

/** Which control a server error's `field` (a JSON path) belongs to. */
function controlForField(path) {
  if (!path) return null;
  const map = [
    [/^name$/, "job-name"],
    [/^schedule$|^expr$/, "job-schedule"],
    [/^timezone$|^tz$/, "job-timezone"],
    [/^kind\.wasm\.module$|^module$/, "job-module"],
    [/^kind\.wasm\.args/, "job-args"],
    [/^kind\.wasm\.env/, "job-env"],
    [/^kind\.wasm\.limits\.(\w+)/, (m) => `job-${m[1].replace("_", "-")}`],
    [/^kind\.wasm\.egress/, "job-egress"],
    [/^kind\.wasm\.network\.(\w+)/, (m) => networkId(m[1])],
    [/^kind\.wasm\.network/, networkId("requests")],
    [/^kind\.wasm\.config/, "job-config"],
    [/^kind\.wasm\.secrets_as_env/, "job-secrets-as-env"],
    [/^kind\.wasm\.context_env/, "job-context-env"],
    [/^secrets/, "job-secrets"],
    [/^kind\.shell\.command/, "job-command"],
    [/^kind\.shell\.env/, "job-env"],
    [/^kind\.shell\.timeout_s/, "job-shell-timeout"],
    [/^kind\.shell\.output_kb/, "job-shell-output"],
    [/^kind\.http\.method/, "job-http-method"],
    [/^kind\.http\.url/, "job-http-url"],
    [/^kind\.http\.headers/, "job-http-headers"],
    [/^kind\.http\.body/, "job-http-body"],
    [/^kind\.http\.timeout_s/, "job-http-timeout"],
    [/^kind\.http\.expect_status/, "job-http-expect"],
    [/^kind\.http\.output_kb/, "job-http-output"],
    [/^kind\.http/, "kind-http"],
    [/^kind\.shell/, "kind-shell"],
    [/^kind/, "kind-wasm"],
    [/^completion/, "job-completion"],
    [/^result_timeout_s/, "job-result-timeout"],
    [/^on_success/, "job-on-success"],
    [/^on_failure/, "job-on-failure"],
    [/^broadcast/, "job-broadcast"],
    [/^alerts\.on/, "job-alert-on"],
    [/^alerts\.failure_rate\.window_s/, "job-alert-window"],
    [/^alerts\.failure_rate\.min_runs/, "job-alert-min-runs"],
    [/^alerts\.failure_rate/, "job-alert-threshold"],
    [/^alerts\.no_success_within_s/, "job-alert-no-success"],
    [/^alerts\.expected_duration_s/, "job-alert-expected"],
    [/^alerts\.channels/, "job-alert-channels"],
    [/^alerts/, "job-alert-on"],
    [/^overlap/, "job-overlap"],
    [/^catchup\.window_s/, "job-catchup-window"],
    [/^catchup/, "job-catchup"],
    [/^retry\.max_backoff_s/, "job-retry-max-backoff"],
    [/^retry\.backoff_s/, "job-retry-backoff"],
    [/^retry/, "job-retry-max"],
    [/^selector/, "job-selector"],
    [/^description/, "job-description"],
  ];
  for (const [pattern, target] of map) {
    const m = pattern.exec(path);
    if (m) return typeof target === "function" ? target(m) : target;
  }
  return null;
}

export async function render(view) {
  const editing = view.params[0] ?? null;
  view.title(editing ? `Edit ${editing}` : "New job");
  if (!can("operator")) {
    replace(view.main, h("h1", { tabindex: -1 }, editing ? `Edit ${editing}` : "New job"),
      emptyState("Your role cannot change jobs", `You are signed in as ${session.role}; creating and changing jobs needs the operator role (admin for shell jobs).`,
        h("a", { href: editing ? `#/jobs/${encodeURIComponent(editing)}` : "#/jobs" }, "Back")));
    return;
  }

  // "Duplicate" opens a new job's editor filled from another job.
  const from = editing ? null : view.query.from ?? null;
  // The alert channels a server lists; without the route (or any channel) names are free text.
  const optional = (promise, fallback) => promise.catch((err) => {
    if (err.name === "AbortError") throw err;
    return fallback;
  });
  const [job, modules, workers, allJobs, channelList, storedSecrets] = await Promise.all([
    editing || from ? api(jobPath(editing ?? from), { signal: view.signal }) : null,
    api("/modules", { signal: view.signal }),
    api("/workers", { signal: view.signal }),
    optional(apiAll("/jobs", { signal: view.signal }), []),
    optional(api("/alerts/channels", { signal: view.signal }), { channels: [] }),
    // Without the list (an older server) the job's own secrets are still shown.
    optional(listSecrets(view.signal), null),
  ]);
  const nativeWorkers = workers.filter((w) => w.allow_native).length;
  const shellAllowed = session.role === "admin" && session.shellJobs && nativeWorkers > 0;
  const shellWhyNot = session.role !== "admin"
    ? "Shell jobs need the admin role."
    : !session.shellJobs
      ? "This server does not accept shell jobs (its workers forbid native processes)."
      : nativeWorkers === 0 ? "No live worker permits native processes (allow_native)." : null;
  // HTTP jobs run only on workers with an egress allow-list; any role that writes jobs may write them.
  const httpAllowed = workers.some((w) => w.http);
  const httpWhyNot = httpAllowed ? null : "No live worker runs HTTP jobs: a worker needs an http_allow list in its [worker] configuration.";

  const kind = job ? (job.kind.shell ? "shell" : job.kind.http ? "http" : "wasm") : "wasm";
  const wasm = job?.kind.wasm ?? { module: "", args: [], env: {}, limits: DEFAULT_LIMITS };
  const shell = job?.kind.shell ?? { command: "", env: {}, timeout_s: 3600, output_kb: 1024 };
  const http = job?.kind.http ?? DEFAULT_HTTP;
  const editingShellWithoutRights = editing && kind === "shell" && session.role !== "admin";

  // ---- controls ----
  const name = input("job-name", { value: editing ?? (from ? `${from}-copy` : ""), required: true, pattern: NAME_PATTERN.source, autocomplete: "off", spellcheck: "false", disabled: Boolean(editing), placeholder: "nightly-report" });
  const description = input("job-description", { value: job?.description ?? "", placeholder: "What this job is for (optional)" });
  const schedule = input("job-schedule", { value: job?.schedule ?? "", required: true, class: "mono", autocomplete: "off", spellcheck: "false", placeholder: "*/10 * * * * *" });
  const timezone = input("job-timezone", { value: job?.timezone ?? "UTC", list: "zones", autocomplete: "off", spellcheck: "false" });
  const zoneList = h("datalist", { id: "zones" }, zones().map((z) => h("option", { value: z })));
  const preview = h("div", { class: "preview", id: "schedule-preview", "aria-live": "polite" }, h("p", { class: "muted" }, "Type a schedule to see when it fires."));
  const presets = h("div", { class: "presets", role: "group", "aria-label": "Schedule presets" },
    PRESETS.map(([expr, label]) => h("button", {
      type: "button", class: "chip-button", title: expr, onclick: () => {
        schedule.value = expr;
        schedule.dispatchEvent(new Event("input"));
        schedule.focus();
      },
    }, label)));

  const kindWasm = h("input", { type: "radio", name: "kind", id: "kind-wasm", value: "wasm", checked: kind === "wasm" });
  const kindShell = h("input", { type: "radio", name: "kind", id: "kind-shell", value: "shell", checked: kind === "shell", disabled: !shellAllowed && kind !== "shell" });
  const kindHttp = h("input", { type: "radio", name: "kind", id: "kind-http", value: "http", checked: kind === "http", disabled: !httpAllowed && kind !== "http" });

  const moduleSelect = h("select", { id: "job-module", name: "job-module", required: true },
    h("option", { value: "" }, modules.length ? "Choose an uploaded module…" : "No modules uploaded yet — upload one below"),
    modules.map((m) => h("option", { value: m.digest, selected: m.digest === wasm.module }, moduleLabel(m))));
  const fileInput = h("input", { type: "file", id: "module-file", accept: ".wasm,application/wasm", class: "visually-hidden" });
  const dropLabel = h("label", { for: "module-file", class: "dropzone", id: "dropzone" },
    h("strong", {}, "Drop a .wasm file here"), " or ", h("span", { class: "link-like" }, "choose a file"),
    h("small", { class: "muted" }, "A WASI preview 1 module or a wasi:cli command component; it is validated on upload."));
  const uploadResult = h("div", { id: "upload-result", "aria-live": "polite" });
  const args = h("textarea", { id: "job-args", rows: 2, class: "mono", spellcheck: "false", placeholder: "one argument per line" }, wasm.args.join("\n"));
  const limits = wasm.limits ?? DEFAULT_LIMITS;
  const fuel = number("job-fuel", limits.fuel);
  const memory = number("job-memory-mb", limits.memory_mb, { min: 1 });
  const wasmTimeout = number("job-timeout-s", limits.timeout_s, { min: 1 });
  const wasmOutput = number("job-output-kb", limits.output_kb, { min: 1 });
  const egress = h("textarea", {
    id: "job-egress", rows: 3, class: "mono", spellcheck: "false", autocomplete: "off",
    placeholder: "https://api.example.com\nhttps://*.example.org:8443\ntcp://db.internal:5432",
    "aria-describedby": "job-egress-hint job-egress-check job-egress-module job-egress-error",
  }, (wasm.egress ?? []).join("\n"));
  const egressCheck = h("ul", { class: "field-warn", id: "job-egress-check", "aria-live": "polite", hidden: true });
  const egressModule = h("p", { class: "hint", id: "job-egress-module", "aria-live": "polite" });
  const network = { ...DEFAULT_NETWORK, ...(wasm.network ?? {}) };
  const networkInputs = Object.fromEntries(NETWORK_FIELDS.map(([key]) => [key, number(networkId(key), network[key], { min: 1 })]));
  // Kept open when the job's limits are not the defaults, so they are seen.
  const networkCustom = NETWORK_FIELDS.some(([key]) => network[key] !== DEFAULT_NETWORK[key]);

  const command = h("textarea", { id: "job-command", rows: 3, class: "mono", spellcheck: "false", placeholder: "echo hello from $SANDCRON_JOB" }, shell.command);
  const shellTimeout = number("job-shell-timeout", shell.timeout_s, { min: 1 });
  const shellOutput = number("job-shell-output", shell.output_kb, { min: 1 });
  const env = h("textarea", { id: "job-env", rows: 2, class: "mono", spellcheck: "false", placeholder: "KEY=value, one per line" }, formatPairs(kind === "shell" ? shell.env : wasm.env));

  const httpMethod = select("job-http-method", HTTP_METHODS.map((m) => [m, m]), http.method);
  const httpUrl = input("job-http-url", { type: "url", value: http.url, class: "mono", autocomplete: "off", spellcheck: "false", placeholder: "https://example.com/hooks/nightly", inputmode: "url" });
  const httpHeaders = h("textarea", { id: "job-http-headers", rows: 2, class: "mono", spellcheck: "false", placeholder: "Authorization: Bearer …, one per line" }, formatHeaders(http.headers));
  const httpBody = h("textarea", { id: "job-http-body", rows: 3, class: "mono", spellcheck: "false", placeholder: "Sent as is (optional)" }, http.body ?? "");
  const httpTimeout = number("job-http-timeout", http.timeout_s, { min: 1 });
  const httpExpect = input("job-http-expect", { value: (http.expect_status ?? []).join(", "), class: "mono", autocomplete: "off", spellcheck: "false", placeholder: "any 2xx", inputmode: "numeric" });
  const httpOutput = number("job-http-output", http.output_kb, { min: 1 });

  // ---- completion, broadcast, dependents, alerts ----
  const completion = select("job-completion", [
    ["sync", "sync — a run ends when its call, command or module ends"],
    ["async", "async — a run then waits for the service to report its result"],
  ], job?.completion ?? "sync");
  const resultTimeout = number("job-result-timeout", job?.result_timeout_s ?? "", { min: 1, placeholder: String(DEFAULT_RESULT_TIMEOUT_S) });
  const broadcast = h("input", { type: "checkbox", id: "job-broadcast", checked: job?.broadcast ?? false });

  const otherJobs = allJobs.map((j) => j.name).filter((n) => n !== editing).sort();
  const dependentBoxes = (field, chosen) => {
    // Names no longer listed (a job being created elsewhere) stay, so they are kept.
    const names = [...otherJobs, ...chosen.filter((n) => !otherJobs.includes(n))];
    return names.map((n) => checkbox(field, n, n, chosen.includes(n), otherJobs.includes(n) ? null : "(not listed)"));
  };
  const onSuccess = checkGroup("job-on-success", "Starts on success", dependentBoxes("on_success", job?.on_success ?? []), {
    span2: true, empty: "There is no other job yet.",
  });
  const onFailure = checkGroup("job-on-failure", "Starts on failure", dependentBoxes("on_failure", job?.on_failure ?? []), {
    hint: "after the run's retries, when it ended failed, timed out, out of fuel or memory, or lost",
    span2: true, empty: "There is no other job yet.",
  });

  const alerts = job?.alerts ?? null;
  const alertOn = checkGroup("job-alert-on", "Alert when a run ends",
    ALERTABLE_STATUSES.map((st) => checkbox("alert_on", st, st.replaceAll("_", " "), alerts?.on?.includes(st) ?? false)), { wide: true });
  const rate = alerts?.failure_rate ?? null;
  const initialThreshold = rate ? percent(rate.threshold) : "";
  const alertThreshold = number("job-alert-threshold", initialThreshold, { min: 0, max: 100, step: "any", inputmode: "decimal", placeholder: "off" });
  const alertWindow = number("job-alert-window", rate?.window_s ?? DEFAULT_FAILURE_RATE.window_s, { min: 10 });
  const alertMinRuns = number("job-alert-min-runs", rate?.min_runs ?? DEFAULT_FAILURE_RATE.min_runs, { min: 1 });
  const alertNoSuccess = number("job-alert-no-success", alerts?.no_success_within_s ?? "", { min: 10, placeholder: "off" });
  const alertExpected = number("job-alert-expected", alerts?.expected_duration_s ?? "", { min: 1, placeholder: "off" });
  const configuredChannels = channelList.channels ?? [];
  const storedChannels = alerts?.channels ?? [];
  const alertChannels = configuredChannels.length
    ? checkGroup("job-alert-channels", "Channels",
      [...configuredChannels, ...storedChannels.filter((c) => !configuredChannels.includes(c))]
        .map((c) => checkbox("alert_channel", c, c, storedChannels.includes(c), configuredChannels.includes(c) ? null : "(not configured)")),
      { wide: true, hint: "The channels of this server's [alerts.channels]." })
    : input("job-alert-channels", { value: storedChannels.join(", "), class: "mono", autocomplete: "off", spellcheck: "false", placeholder: "ops, pager" });
  // Names typed where the server lists no channels cannot be checked: say
  // so while typing rather than let an alert go nowhere unnoticed.
  const channelCheck = h("ul", { class: "field-warn full", id: "job-alert-channels-check", "aria-live": "polite", hidden: true });
  if (!configuredChannels.length) {
    const checkChannels = () => {
      const names = alertChannels.value.split(/[\s,]+/).filter(Boolean);
      channelCheck.hidden = !names.length;
      replace(channelCheck, names.length
        ? h("li", {}, `This server lists no alert channels, so ${names.join(", ")} cannot be checked here: `,
          "an alert reaches a channel only if the workers' [alerts.channels] (and the masters', for dead-man alerts) configure one of that name.")
        : null);
    };
    alertChannels.addEventListener("input", checkChannels);
    checkChannels();
  }

  const overlap = select("job-overlap", [
    ["forbid", "forbid — skip a tick while the previous run runs"],
    ["allow", "allow — run both"],
    ["replace", "replace — kill the old run"],
  ], job?.overlap ?? "forbid");
  const catchup = select("job-catchup", [
    ["skip", "skip — record missed ticks as missed"],
    ["latest", "latest — run the newest missed tick"],
    ["all", "all — run every missed tick (oldest first)"],
  ], job?.catchup.policy ?? "skip");
  const catchupWindow = number("job-catchup-window", job?.catchup.window_s ?? 3600);
  const retryMax = number("job-retry-max", job?.retry.max ?? 0);
  const retryBackoff = number("job-retry-backoff", job?.retry.backoff_s ?? 10);
  const retryMaxBackoff = number("job-retry-max-backoff", job?.retry.max_backoff_s ?? 3600);
  const selector = h("textarea", { id: "job-selector", rows: 2, class: "mono", spellcheck: "false", placeholder: "zone=eu-1" }, formatPairs(job?.selector));
  const paused = h("input", { type: "checkbox", id: "job-paused", checked: job?.paused ?? false });

  const wasmSection = h("div", { class: "kind-panel", id: "wasm-panel" },
    h("div", { class: "grid" },
      field("Module", moduleSelect, { wide: true, hint: "The module's SHA-256 digest is what the job stores." }),
      h("div", { class: "field wide" }, fileInput, dropLabel, uploadResult),
      field("Arguments", args, { hint: "argv[0] is the job name; these follow it." }),
      field("Fuel", fuel, { hint: "about one unit per instruction" }),
      field("Memory (MiB)", memory),
      field("Timeout (s)", wasmTimeout),
      field("Output limit (KiB)", wasmOutput),
      h("div", { class: "field wide", "data-field": "job-egress" },
        h("label", { for: "job-egress" }, "Egress: where this job may connect"),
        egress,
        h("p", { class: "hint", id: "job-egress-hint" },
          "One per line: ", h("code", {}, "https://api.example.com"), ", ", h("code", {}, "https://*.example.org:8443"), ", ",
          h("code", {}, "tcp://db.internal:5432"), ". Nothing unless listed; the worker's own policy applies on top. ",
          "Only components (WASI 0.2) can use the network."),
        egressCheck,
        egressModule,
        h("p", { class: "field-error", id: "job-egress-error", hidden: true })),
      h("details", { class: "advanced full", id: "network-limits", open: networkCustom },
        h("summary", {}, "Network limits ", h("small", { class: "muted" }, "per run, for the calls egress allows")),
        h("div", { class: "grid" },
          NETWORK_FIELDS.map(([key, label, hint]) => field(label, networkInputs[key], {
            hint: key.startsWith("bytes_") ? formatBytes(network[key]) : hint,
          })),
          h("p", { class: "hint full" }, "Defaults: 100 requests, 8 at once, 10 MiB sent, 100 MiB received, 10 s to connect, 30 s to the first byte.")))));
  const shellSection = h("div", { class: "kind-panel", id: "shell-panel" },
    h("div", { class: "grid" },
      field("Command", command, { wide: true, hint: "Run by /bin/sh -c in its own process group, with a cleared environment." }),
      field("Timeout (s)", shellTimeout),
      field("Output limit (KiB)", shellOutput)));
  const httpSection = h("div", { class: "kind-panel", id: "http-panel" },
    h("div", { class: "grid" },
      field("Method", httpMethod),
      field("URL", httpUrl, { span2: true, hint: "http:// or https://; the worker's http_allow list decides where it may connect." }),
      field("Headers", httpHeaders, { wide: true, hint: "Name: value per line. sandcron adds X-Sandcron-Job, -Run-Id, -Tick and the like." }),
      field("Body", httpBody, { wide: true }),
      field("Timeout (s)", httpTimeout, { hint: "the whole exchange" }),
      field("Expected statuses", httpExpect, { hint: "comma-separated; empty: any 2xx" }),
      field("Output limit (KiB)", httpOutput, { hint: "status line, headers and body" })));
  const envField = field("Environment", env, { wide: true, hint: "KEY=value per line, added to the SANDCRON_* variables." });

  // ---- secrets and config ----
  const storedNames = (storedSecrets ?? []).map((s) => s.name);
  const secretRows = pairRows("job-secrets", "Secrets", {
    columns: ["Name in the job", "Stored secret"],
    entries: Object.entries(job?.secrets ?? {}),
    addLabel: "Add a secret",
    empty: "No secrets: the job receives none.",
    make: (id, entry) => {
      const [alias, chosen] = entry ?? [null, ""];
      const name = keptInput(`${id}-alias`, alias, {
        class: "mono", autocomplete: "off", spellcheck: "false", placeholder: "API_TOKEN", "aria-label": "Name the job reads the secret under",
      }, { trim: true });
      // A secret the list does not have (deleted meanwhile, or no list) stays chosen, marked.
      const names = chosen && !storedNames.includes(chosen) ? [...storedNames, chosen] : storedNames;
      const pick = h("select", { id: `${id}-name`, name: `${id}-name`, "aria-label": "Stored secret" },
        h("option", { value: "" }, "Choose a stored secret…"),
        names.map((n) => h("option", { value: n, selected: n === chosen }, storedNames.includes(n) ? n : `${n} (not stored)`)));
      return { left: name.control, right: pick, read: () => [name.read(), pick.value] };
    },
  });
  const secretsHint = h("p", { class: "hint", id: "job-secrets-kind-hint" });
  const secretsList = storedSecrets === null
    ? h("p", { class: "hint is-warn" }, "The stored secrets could not be listed; only the job's own are offered.")
    : !storedNames.length
      ? h("p", { class: "hint", id: "job-secrets-none" }, "No secret is stored yet: an admin stores one on the ", h("a", { href: "#/secrets" }, "Secrets page"), ".")
      : null;
  if (storedSecrets !== null && !storedNames.length && !secretRows.rows.length) secretRows.addButton.disabled = true;
  const secretsPart = h("div", { class: "full", id: "job-secrets-part" }, secretRows.group, secretsHint, secretsList);
  const httpSecretsHint = h("p", { class: "hint full", id: "http-secrets-hint" },
    "An HTTP job uses a stored secret where it is needed: write ", h("code", {}, "${secret:NAME}"), " (the secret's own name) in a header value or the body, as in ",
    h("code", {}, "Authorization: Bearer ${secret:billing-api}"), ". ",
    storedNames.length ? ["Stored: ", storedNames.map((n, i) => [i ? ", " : null, h("code", {}, n)]), "."] : "No secret is stored yet.");
  const configRows = pairRows("job-config", "Config", {
    columns: ["Key", "Value"],
    entries: Object.entries(wasm.config ?? {}),
    addLabel: "Add a setting",
    empty: "No settings.",
    hint: ["Plain settings a component reads through ", h("code", {}, "wasi:config"), " (", h("code", {}, 'get("region")'), "), beside its secrets and the run context. Not secret: whoever reads the job sees them."],
    make: (id, entry) => {
      const [key, value] = entry ?? [null, null];
      const k = keptInput(`${id}-key`, key, { class: "mono", autocomplete: "off", spellcheck: "false", placeholder: "region", "aria-label": "Config key" }, { trim: true });
      const v = keptInput(`${id}-value`, value, { autocomplete: "off", spellcheck: "false", placeholder: "eu", "aria-label": "Config value" });
      return { left: k.control, right: v.control, read: () => [k.read(), v.read()] };
    },
  });
  const secretsAsEnv = h("input", { type: "checkbox", id: "job-secrets-as-env", checked: wasm.secrets_as_env ?? false });
  const contextEnv = h("input", { type: "checkbox", id: "job-context-env", checked: wasm.context_env ?? true });
  const checkField = (control, label, hint) => h("div", { class: "field span2", "data-field": control.id },
    h("label", { class: "check" }, control, " ", label),
    h("p", { class: "hint", id: `${control.id}-hint` }, hint),
    h("p", { class: "field-error", id: `${control.id}-error`, hidden: true }));
  const wasmConfigPart = h("div", { class: "grid full", id: "job-config-part" },
    configRows.group,
    checkField(secretsAsEnv, "Secrets as environment variables too",
      "For languages that only read the environment. A core module (WASI preview 1) has no wasi:config and gets its secrets only this way."),
    checkField(contextEnv, "Run context in the environment",
      "SANDCRON_JOB, SANDCRON_TICK and the rest. Unchecked, the environment is exactly what the job declares; wasi:config still has the context."));

  const resultTimeoutField = field("Result timeout (s)", resultTimeout, { hint: `how long to wait for the report (default ${DEFAULT_RESULT_TIMEOUT_S})` });
  const reportHint = h("p", { class: "hint full", id: "report-hint" },
    "The service reports with ", h("code", {}, `POST ${location.origin}/api/v1/runs/{run_id}/result`),
    " and the run's token: an HTTP call carries it in the ", h("code", {}, "X-Sandcron-Run-Token"), " header (the URL in ", h("code", {}, "X-Sandcron-Result-Url"),
    "), a command or module gets ", h("code", {}, "SANDCRON_RUN_TOKEN"), " and ", h("code", {}, "SANDCRON_RESULT_URL"), ".");
  const broadcastNote = (id, text) => h("p", { class: "notice tone-warn full", id, hidden: true }, text);
  const completionNote = broadcastNote("completion-broadcast-note", "A broadcast job completes synchronously: each worker's shard ends on its own, so there is no single result to wait for.");
  const dependentsNote = broadcastNote("dependents-broadcast-note", "A broadcast job cannot start other jobs: each worker's shard ends on its own. Uncheck “Broadcast to every worker” to choose them.");

  const errorSummary = h("div", { class: "notice tone-bad", id: "form-error", role: "alert", hidden: true });
  const bodyPreview = h("pre", { class: "mono body-preview" });
  const save = h("button", { type: "submit", class: "primary", id: "save-job", disabled: editingShellWithoutRights }, editing ? "Save changes" : "Create job");

  const form = h("form", { class: "editor", id: "job-form", novalidate: true },
    errorSummary,
    editingShellWithoutRights ? h("p", { class: "notice tone-warn" }, "This is a shell job: only an admin can change it.") : null,
    h("fieldset", {},
      h("legend", {}, "Job"),
      h("div", { class: "grid" },
        field("Name", name, { hint: editing ? "A job's name cannot change." : "Lowercase letters, digits, - and _; up to 63 characters." }),
        field("Description", description, { span2: true }))),
    h("fieldset", {},
      h("legend", {}, "Schedule"),
      h("div", { class: "grid" },
        field("Cron expression", schedule, { span2: true, hint: "5 fields (minute…), 6 with leading seconds, 7 with a trailing year, @daily or @every 90s." }),
        field("Time zone", timezone, { hint: `IANA name; your browser's zone is ${localZone()}.` }),
        zoneList,
        h("div", { class: "field wide" }, presets),
        h("div", { class: "field wide" }, preview))),
    h("fieldset", {},
      h("legend", {}, "What runs"),
      h("div", { class: "kinds", role: "radiogroup", "aria-label": "Kind" },
        h("label", { class: "kind-option" }, kindWasm, h("span", {}, h("strong", {}, "WebAssembly module"), h("small", {}, "Sandboxed: WASI only; no network or files unless granted."))),
        h("label", { class: `kind-option${kindHttp.disabled ? " disabled" : ""}`, title: httpWhyNot ?? "" }, kindHttp,
          h("span", {}, h("strong", {}, "HTTP request"), h("small", { id: "http-why" }, httpWhyNot ?? "A worker calls a URL; the response is the run's output."))),
        h("label", { class: `kind-option${kindShell.disabled ? " disabled" : ""}`, title: shellWhyNot ?? "" }, kindShell,
          h("span", {}, h("strong", {}, "Shell command"), h("small", {}, shellWhyNot ?? "Runs natively on a worker that permits it (admins only).")))),
      wasmSection,
      httpSection,
      shellSection,
      h("div", { class: "grid" }, envField)),
    h("fieldset", { id: "secrets-config" },
      h("legend", {}, "Secrets and configuration"),
      h("div", { class: "grid" }, secretsPart, httpSecretsHint, wasmConfigPart)),
    h("fieldset", {},
      h("legend", {}, "Policies"),
      h("div", { class: "grid" },
        field("When a run is still running", overlap, { wide: true }),
        field("Ticks missed while no worker ran it", catchup, { span2: true }),
        field("Catch-up window (s)", catchupWindow),
        field("Retries", retryMax, { hint: "of failed, timed-out and lost runs" }),
        field("Backoff (s)", retryBackoff, { hint: "doubles each attempt" }),
        field("Longest backoff (s)", retryMaxBackoff),
        field("Worker labels", selector, { wide: true, hint: "KEY=value per line; only workers with all of them run the job." }),
        h("div", { class: "field span2", "data-field": "job-broadcast" },
          h("label", { class: "check" }, broadcast, " Broadcast to every worker"),
          h("p", { class: "hint", id: "job-broadcast-hint" }, "Each tick runs once on every worker that may run the job, a shard each (SANDCRON_SHARD_INDEX, SANDCRON_SHARD_COUNT)."),
          h("p", { class: "field-error", id: "job-broadcast-error", hidden: true })),
        h("div", { class: "field" }, h("label", { class: "check" }, paused, " Paused"), h("p", { class: "hint" }, "A paused job keeps its history; run now still works.")))),
    h("fieldset", {},
      h("legend", {}, "How a run completes"),
      h("div", { class: "grid" },
        field("Completion", completion, { wide: true }),
        resultTimeoutField,
        reportHint,
        completionNote)),
    h("fieldset", {},
      h("legend", {}, "Dependent jobs"),
      h("div", { class: "grid" },
        onSuccess,
        onFailure,
        dependentsNote,
        h("p", { class: "hint full" }, "Each starts once per run of this job, with trigger dependency and SANDCRON_PARENT_JOB, SANDCRON_PARENT_RUN_ID and SANDCRON_PARENT_STATUS."))),
    h("fieldset", {},
      h("legend", {}, "Alerts"),
      h("div", { class: "grid" },
        alertOn,
        field("Failure rate above (%)", alertThreshold, { hint: "of the runs that ended recently; empty: no failure-rate alert" }),
        field("Over the last (s)", alertWindow),
        field("Counting at least (runs)", alertMinRuns),
        field("No success within (s)", alertNoSuccess, { hint: "dead-man alert, once per period without a successful run, even when no worker runs the job; at least 10; empty: off" }),
        field("Run longer than (s)", alertExpected, { hint: "one warning per run still running after this long; the run goes on; empty: off" }),
        configuredChannels.length
          ? alertChannels
          : [field("Channels", alertChannels, { wide: true, hint: "Comma-separated. This server lists no channels, so any name is accepted: the workers' [alerts.channels] decide where alerts go." }), channelCheck],
        h("p", { class: "hint full" }, "Nothing is sent unless a status, a failure rate, a success period or a run length is set."))),
    h("details", { class: "body-details" }, h("summary", {}, "Request body (PUT ", h("code", { id: "body-path" }, `/api/v1/jobs/${editing ?? "…"}`), ")"), bodyPreview),
    h("div", { class: "form-actions" },
      save,
      h("a", { class: "button", href: editing ? `#/jobs/${encodeURIComponent(editing)}` : "#/jobs" }, "Cancel")));

  replace(view.main,
    h("div", { class: "page-head" },
      h("div", {},
        h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", editing ? [h("a", { href: `#/jobs/${encodeURIComponent(editing)}` }, editing), " /"] : null),
        h("h1", { tabindex: -1 }, editing ? `Edit ${editing}` : "New job"),
        from ? h("p", { class: "muted" }, "A copy of ", h("a", { href: `#/jobs/${encodeURIComponent(from)}` }, from), "; it is saved as a new job.") : null)),
    form);

  const currentKind = () => (kindShell.checked ? "shell" : kindHttp.checked ? "http" : "wasm");
  const showKind = () => {
    wasmSection.hidden = currentKind() !== "wasm";
    shellSection.hidden = currentKind() !== "shell";
    httpSection.hidden = currentKind() !== "http";
    // HTTP jobs have headers, not an environment.
    envField.hidden = currentKind() === "http";
    // HTTP jobs name secrets in their headers and body; only modules have config.
    secretsPart.hidden = currentKind() === "http";
    httpSecretsHint.hidden = currentKind() !== "http";
    wasmConfigPart.hidden = currentKind() !== "wasm";
    replace(secretsHint, currentKind() === "shell"
      ? "A shell job gets each as an environment variable of that name."
      : ["A component reads each through ", h("code", {}, "wasi:config"), " (", h("code", {}, 'get("API_TOKEN")'), "), and from its environment with the box below checked."]);
    for (const section of [wasmSection, shellSection, httpSection, envField, secretsPart, wasmConfigPart]) {
      for (const control of section.querySelectorAll("input, select, textarea")) control.disabled = section.hidden;
    }
  };
  for (const radio of [kindWasm, kindShell, kindHttp]) radio.addEventListener("change", showKind);
  showKind();

  // Async completion shows its timeout and how the service reports; a
  // broadcast job can have neither async completion nor dependents (the
  // server refuses both), so they are switched off while it is checked and
  // come back as they were when it is unchecked.
  let completionBeforeBroadcast = null;
  const showCompletion = () => {
    const async = completion.value === "async";
    resultTimeoutField.hidden = !async;
    resultTimeout.disabled = !async;
    reportHint.hidden = !async;
  };
  const showBroadcast = () => {
    const on = broadcast.checked;
    if (on && completion.value === "async") {
      completionBeforeBroadcast = "async";
      completion.value = "sync";
    } else if (!on && completionBeforeBroadcast) {
      completion.value = completionBeforeBroadcast;
      completionBeforeBroadcast = null;
    }
    completion.disabled = on;
    for (const box of [...onSuccess.querySelectorAll("input"), ...onFailure.querySelectorAll("input")]) box.disabled = on;
    completionNote.hidden = !on;
    dependentsNote.hidden = !on;
    showCompletion();
  };
  completion.addEventListener("change", showCompletion);
  broadcast.addEventListener("change", showBroadcast);
  showBroadcast();

  // ---- live schedule preview ----
  let previewSeq = 0;
  const refreshPreview = async () => {
    const seq = ++previewSeq;
    const expr = schedule.value.trim();
    const zone = timezone.value.trim() || "UTC";
    if (!expr) {
      setFieldError(form, "job-schedule", null);
      replace(preview, h("p", { class: "muted" }, "Type a schedule to see when it fires."));
      return;
    }
    try {
      const answer = await api(`/cron/next${query({ expr, tz: zone, count: 5 })}`, { signal: view.signal });
      if (seq !== previewSeq) return;
      setFieldError(form, "job-schedule", null);
      setFieldError(form, "job-timezone", null);
      replace(preview,
        h("p", { class: "explain-line" }, h("strong", { id: "schedule-explain" }, answer.explain), answer.fixed_time ? h("small", { class: "muted" }, " · fixed time: DST gaps shift it, repeats run once") : null),
        h("p", { class: "muted" }, `Next ${answer.next.length} fire times in ${answer.timezone}:`),
        h("ol", { class: "fire-times", id: "fire-times" }, answer.next.map((t) => h("li", {}, h("time", { datetime: t }, formatTime(t, answer.timezone, true))))));
    } catch (err) {
      if (err.name === "AbortError" || seq !== previewSeq) return;
      const target = err.field === "tz" ? "job-timezone" : "job-schedule";
      setFieldError(form, target === "job-timezone" ? "job-schedule" : "job-timezone", null);
      setFieldError(form, target, err.message);
      replace(preview, h("p", { class: "muted" }, "No preview until the ", target === "job-timezone" ? "time zone" : "schedule", " is valid."));
    }
  };
  const previewSoon = debounce(refreshPreview, 250);
  schedule.addEventListener("input", previewSoon);
  timezone.addEventListener("input", previewSoon);
  timezone.addEventListener("change", refreshPreview);
  refreshPreview();

  name.addEventListener("input", () => {
    const value = name.value.trim();
    setFieldError(form, "job-name", value && !NAME_PATTERN.test(value) ? "use lowercase letters, digits, - and _, starting with a letter or digit (at most 63)" : null);
  });

  // ---- egress: plain mistakes flagged while typing, and what the chosen module can do ----
  const moduleInfo = new Map(modules.map((m) => [m.digest, m]));
  const checkEgress = () => {
    const mistakes = egressEntries(egress.value)
      .map(({ entry, line }) => ({ entry, line, mistake: egressMistake(entry) }))
      .filter((e) => e.mistake);
    replace(egressCheck, mistakes.map(({ entry, line, mistake }) => h("li", {}, `line ${line}: "${entry}" ${mistake}`)));
    egressCheck.hidden = !mistakes.length;
    const chosen = moduleInfo.get(moduleSelect.value);
    const listed = egressEntries(egress.value).length > 0;
    egressModule.classList.remove("is-warn");
    if (!chosen) {
      egressModule.textContent = "";
    } else if (chosen.kind !== "component") {
      egressModule.textContent = listed
        ? "The chosen module is a core module (WASI preview 1): it has no network interface, so the server refuses egress for it."
        : "The chosen module is a core module (WASI preview 1): it cannot use the network.";
      egressModule.classList.toggle("is-warn", listed);
    } else if (!chosen.capabilities?.length) {
      egressModule.textContent = "The chosen component imports neither wasi:http nor wasi:sockets, so it makes no network calls.";
    } else {
      egressModule.textContent = `The chosen component can use: ${chosen.capabilities.join(", ")}.`;
    }
  };
  egress.addEventListener("input", checkEgress);
  moduleSelect.addEventListener("change", checkEgress);
  checkEgress();
  for (const [key, control] of Object.entries(networkInputs)) {
    if (!key.startsWith("bytes_")) continue;
    control.addEventListener("input", () => {
      const value = Number(control.value);
      form.querySelector(`#${networkId(key)}-hint`).textContent = control.value.trim() !== "" && Number.isFinite(value) ? formatBytes(value) : "";
    });
  }

  // ---- module upload ----
  const upload = async (file) => {
    if (!file) return;
    replace(uploadResult, h("p", { class: "muted" }, `Uploading ${file.name} (${formatBytes(file.size)})…`));
    setFieldError(form, "job-module", null);
    try {
      const stored = await uploadModule(file, view.signal);
      moduleInfo.set(stored.digest, stored);
      let option = [...moduleSelect.options].find((o) => o.value === stored.digest);
      if (!option) {
        option = h("option", { value: stored.digest }, moduleLabel({ ...stored, uploaded_at: new Date().toISOString() }));
        moduleSelect.append(option);
      }
      moduleSelect.value = stored.digest;
      replace(uploadResult, h("div", { class: "upload-ok", id: "upload-ok" },
        h("p", {}, h("strong", {}, stored.created ? "Uploaded " : "Already stored: "), file.name),
        h("dl", { class: "facts compact" },
          h("dt", {}, "Digest"), h("dd", {}, h("code", { class: "digest", id: "upload-digest" }, stored.digest)),
          h("dt", {}, "Size"), h("dd", {}, formatBytes(stored.size)),
          h("dt", {}, "Kind"), h("dd", {}, stored.kind === "component" ? "component (WASI 0.2 command)" : "module (WASI preview 1)"),
          h("dt", {}, "Network"), h("dd", { id: "upload-capabilities" }, capabilityText(stored)))));
      checkEgress();
    } catch (err) {
      if (err.name === "AbortError") return;
      replace(uploadResult, h("div", { class: "notice tone-bad", id: "upload-error", role: "alert" },
        h("strong", {}, `${file.name} was refused: `), err.message));
    } finally {
      fileInput.value = "";
    }
  };
  fileInput.addEventListener("change", () => upload(fileInput.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    dropLabel.addEventListener(type, (event) => {
      event.preventDefault();
      dropLabel.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    dropLabel.addEventListener(type, () => dropLabel.classList.remove("over"));
  }
  dropLabel.addEventListener("drop", (event) => {
    event.preventDefault();
    upload(event.dataTransfer.files[0]);
  });

  // ---- the body ----
  const pairs = (text, what, control) => {
    try {
      return parsePairs(text, what);
    } catch (err) {
      throw new FormError(control, err.message);
    }
  };
  const buildHttp = () => {
    const base = job?.kind.http ?? {};
    const spec = {
      ...base,
      method: httpMethod.value,
      url: httpUrl.value.trim(),
      headers: parseHeaders(httpHeaders.value),
      timeout_s: Number(httpTimeout.value),
      output_kb: Number(httpOutput.value),
    };
    // A textarea turns CR LF into LF: an unchanged body is sent back as stored.
    const stored = typeof base.body === "string" ? base.body : null;
    if (stored !== null && httpBody.value === stored.replace(/\r\n?/g, "\n")) spec.body = stored;
    else if (httpBody.value !== "") spec.body = httpBody.value;
    else delete spec.body;
    const statuses = parseStatuses(httpExpect.value);
    if (statuses.length) spec.expect_status = statuses;
    else delete spec.expect_status;
    return spec;
  };
  const buildAlerts = () => {
    const on = ordered(alerts?.on ?? [], checkedValues(alertOn), ALERTABLE_STATUSES);
    const thresholdText = alertThreshold.value.trim();
    let failureRate = null;
    if (thresholdText !== "") {
      const share = thresholdText === initialThreshold && rate ? rate.threshold : Number((Number(thresholdText) / 100).toPrecision(12));
      if (!(share > 0 && share <= 1)) throw new FormError("job-alert-threshold", "failure rate: a percentage above 0 and at most 100");
      failureRate = { threshold: share, window_s: Number(alertWindow.value), min_runs: Number(alertMinRuns.value) };
    }
    const channels = configuredChannels.length
      ? ordered(storedChannels, checkedValues(alertChannels), [...configuredChannels, ...storedChannels])
      : alertChannels.value.split(/[\s,]+/).filter(Boolean);
    // Whole seconds, or nothing when the field is empty (the server checks the range).
    const seconds = (input) => (input.value.trim() === "" ? null : Number(input.value));
    const noSuccess = seconds(alertNoSuccess);
    const expected = seconds(alertExpected);
    if (!on.length && !failureRate && noSuccess === null && expected === null && !channels.length) return null;
    return {
      on,
      ...(failureRate ? { failure_rate: failureRate } : {}),
      ...(noSuccess !== null ? { no_success_within_s: noSuccess } : {}),
      ...(expected !== null ? { expected_duration_s: expected } : {}),
      channels,
    };
  };
  // The secrets table as the job body's `secrets` (empty rows left out).
  const buildSecrets = () => {
    const out = {};
    for (const row of secretRows.rows) {
      const [alias, chosen] = row.read();
      if (!alias && !chosen) continue;
      if (!alias) throw new FormError(row.left.id, "secrets: give the name the job reads this secret under");
      if (!chosen) throw new FormError(row.right.id, `secrets: choose the stored secret ${alias} is`);
      if (!VARIABLE_PATTERN.test(alias)) throw new FormError(row.left.id, `secrets: "${alias}" is not a variable name (letters, digits and _, not starting with a digit)`);
      if (alias.startsWith("SANDCRON_")) throw new FormError(row.left.id, "secrets: the SANDCRON_ prefix is reserved for variables sandcron sets");
      if (alias in out) throw new FormError(row.left.id, `secrets: ${alias} is named twice`);
      out[alias] = chosen;
    }
    return out;
  };
  const buildConfig = () => {
    const out = {};
    for (const row of configRows.rows) {
      const [key, value] = row.read();
      if (!key && !value) continue;
      if (!key) throw new FormError(row.left.id, "config: a setting needs a key");
      if (key.startsWith("SANDCRON_")) throw new FormError(row.left.id, "config: the SANDCRON_ prefix is reserved for the run context");
      if (key in out) throw new FormError(row.left.id, `config: ${key} is set twice`);
      out[key] = value;
    }
    return out;
  };
  const build = () => {
    const spec = {
      // Fields the form does not show (dirs, retention) are kept as they were.
      ...(job ? stripView(job) : {}),
      schedule: schedule.value.trim(),
      timezone: timezone.value.trim() || "UTC",
      overlap: overlap.value,
      catchup: { policy: catchup.value, window_s: Number(catchupWindow.value) },
      retry: { max: Number(retryMax.value), backoff_s: Number(retryBackoff.value), max_backoff_s: Number(retryMaxBackoff.value) },
      paused: paused.checked,
      selector: pairs(selector.value, "worker labels", "job-selector"),
      description: description.value.trim(),
    };
    // Defaults are left out, as the server leaves them out of a job it answers.
    for (const key of ["completion", "result_timeout_s", "on_success", "on_failure", "broadcast", "alerts"]) delete spec[key];
    if (broadcast.checked) {
      spec.broadcast = true;
    } else {
      const successes = ordered(job?.on_success ?? [], checkedValues(onSuccess), otherJobs);
      const failures = ordered(job?.on_failure ?? [], checkedValues(onFailure), otherJobs);
      if (successes.length) spec.on_success = successes;
      if (failures.length) spec.on_failure = failures;
      if (completion.value === "async") {
        spec.completion = "async";
        if (resultTimeout.value.trim() !== "") spec.result_timeout_s = Number(resultTimeout.value);
      }
    }
    const alertRule = buildAlerts();
    if (alertRule) spec.alerts = alertRule;
    delete spec.secrets;
    const secrets = currentKind() === "http" ? {} : buildSecrets();
    if (Object.keys(secrets).length) spec.secrets = secrets;
    if (currentKind() === "http") {
      spec.kind = { http: buildHttp() };
      return spec;
    }
    const envPairs = pairs(env.value, "environment", "job-env");
    if (currentKind() === "shell") {
      spec.kind = { shell: { command: command.value, env: envPairs, timeout_s: Number(shellTimeout.value), output_kb: Number(shellOutput.value) } };
    } else {
      const {
        egress: _egress, network: _network, config: _config, secrets_as_env: _asEnv, context_env: _contextEnv, ...kept
      } = job?.kind.wasm ?? {};
      const config = buildConfig();
      const entries = egressEntries(egress.value).map((e) => e.entry);
      const limitsOfNetwork = Object.fromEntries(NETWORK_FIELDS.map(([key]) => [key, Number(networkInputs[key].value)]));
      // A new job's body leaves the limits out while they are the defaults;
      // a stored job's limits (the server always answers them) go back as they are.
      const networkChanged = NETWORK_FIELDS.some(([key]) => limitsOfNetwork[key] !== DEFAULT_NETWORK[key]);
      spec.kind = {
        wasm: {
          ...kept,
          module: moduleSelect.value,
          args: args.value.split("\n").map((a) => a.trim()).filter(Boolean),
          env: envPairs,
          limits: { fuel: Number(fuel.value), memory_mb: Number(memory.value), timeout_s: Number(wasmTimeout.value), output_kb: Number(wasmOutput.value) },
          ...(entries.length ? { egress: entries } : {}),
          ...(networkChanged || job?.kind.wasm?.network ? { network: limitsOfNetwork } : {}),
          // Defaults are left out, as the server leaves them out.
          ...(Object.keys(config).length ? { config } : {}),
          ...(secretsAsEnv.checked ? { secrets_as_env: true } : {}),
          ...(contextEnv.checked ? {} : { context_env: false }),
        },
      };
    }
    return spec;
  };
  const showBody = () => {
    form.querySelector("#body-path").textContent = `/api/v1/jobs/${editing ?? (name.value.trim() || "…")}`;
    try {
      bodyPreview.textContent = JSON.stringify(build(), null, 2);
    } catch (err) {
      bodyPreview.textContent = err.message;
    }
  };
  form.addEventListener("input", showBody);
  form.addEventListener("change", showBody);
  showBody();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const node of form.querySelectorAll(".field-error")) {
      node.hidden = true;
    }
    for (const node of form.querySelectorAll("[aria-invalid=true]")) node.setAttribute("aria-invalid", "false");
    errorSummary.hidden = true;
    const fail = (message, controlId, atField = null) => {
      errorSummary.hidden = false;
      errorSummary.textContent = message;
      if (!(controlId && setFieldError(form, controlId, atField?.message ?? message) && focusControl(form, controlId))) errorSummary.focus();
      atField?.select?.();
    };
    // An error about egress entry i names its line, and that line is selected.
    // An error about one secret or config key is shown at its row.
    const rowControl = (path, message) => {
      const m = /^(secrets|kind\.wasm\.config)\.(.+)$/.exec(path ?? "");
      if (!m) return null;
      const rows = m[1] === "secrets" ? secretRows.rows : configRows.rows;
      const found = rows.find((row) => row.read()[0] === m[2]);
      if (!found) return null;
      // Which of the two controls: the stored secret that does not exist, a
      // config value that is too long; otherwise the name or key.
      const aboutRight = m[1] === "secrets" ? /no secret named/.test(message) : /^must /.test(message);
      return (aboutRight ? found.right : found.left).id;
    };
    const egressLine = (path, message) => {
      const m = /^kind\.wasm\.egress\[(\d+)\]$/.exec(path ?? "");
      const found = m ? egressEntries(egress.value)[Number(m[1])] : null;
      if (!found) return null;
      return {
        message: `line ${found.line}: ${message}`,
        select: () => {
          const lines = egress.value.split("\n");
          const start = lines.slice(0, found.line - 1).reduce((sum, line) => sum + line.length + 1, 0);
          egress.setSelectionRange(start, start + lines[found.line - 1].length);
        },
      };
    };
    const jobName = editing ?? name.value.trim();
    if (!NAME_PATTERN.test(jobName)) return fail("The name must be lowercase letters, digits, - and _, starting with a letter or digit.", "job-name");
    if (!schedule.value.trim()) return fail("A schedule is needed.", "job-schedule");
    if (currentKind() === "wasm" && !moduleSelect.value) return fail("Choose a module or upload one.", "job-module");
    if (currentKind() === "shell" && !command.value.trim()) return fail("A command is needed.", "job-command");
    if (currentKind() === "http" && !httpUrl.value.trim()) return fail("A URL is needed.", "job-http-url");
    let body;
    try {
      body = build();
    } catch (err) {
      return fail(err.message, err.control ?? null);
    }
    save.disabled = true;
    save.textContent = "Saving…";
    try {
      const headers = editing ? { "If-Match": String(job.revision) } : { "If-None-Match": "*" };
      await api(jobPath(jobName), { method: "PUT", body, headers });
      toast(editing ? `Saved ${jobName}` : `Created ${jobName}`, "ok");
      navigate(`#/jobs/${encodeURIComponent(jobName)}`);
    } catch (err) {
      if (err.status === 412) {
        fail(editing
          ? `${jobName} was changed by someone else since you opened it. Reload to edit the new version (your changes are in the request body below).`
          : `A job named ${jobName} already exists.`, editing ? null : "job-name");
      } else {
        const target = rowControl(err.field, err.message) ?? controlForField(err.field);
        fail(err.field ? `${err.field}: ${err.message}` : err.message, target, egressLine(err.field, err.message));
      }
    } finally {
      save.disabled = false;
      save.textContent = editing ? "Save changes" : "Create job";
    }
  });

  (editing ? schedule : name).focus();
}

/** The job body of a job view: the view's extra fields removed. */
function stripView(job) {
  const {
    name: _name, meta: _meta, revision: _revision, status: _status, reason: _reason, owner: _owner,
    explain: _explain, next_run: _next, last_run: _last, running: _running, pending: _pending,
    history_unavailable: _unavailable, ...spec
  } = job;
  return spec;
}

function moduleLabel(m) {
  const used = m.jobs?.length ? ` · used by ${m.jobs.join(", ")}` : "";
  const network = m.capabilities?.length ? ` (${m.capabilities.join(", ")})` : "";
  return `${m.name ? `${m.name} · ` : ""}${shortDigest(m.digest)} · ${m.kind}${network} · ${formatBytes(m.size)}${m.uploaded_at ? ` · ${formatTime(m.uploaded_at)}` : ""}${used}`;
}

/** What a module can do on the network, in words. */
function capabilityText(m) {
  if (m.kind !== "component") return "none: a core module has no network interface";
  return m.capabilities?.length ? m.capabilities.join(", ") : "none: it imports neither wasi:http nor wasi:sockets";
}
