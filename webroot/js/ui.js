// DOM construction, formatting of times, sizes and statuses, toasts and the
// confirmation dialog. Everything the views share that is not the API.

/** Builds an element: h("a", {href, class, onclick}, child, [children], null). */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key === "value" || key === "checked" || key === "selected") {
      node[key] = value;
    } else if (key === "style") {
      // Through the CSSOM: the Content-Security-Policy allows no inline
      // style attributes.
      node.style.cssText = String(value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** An SVG element (charts). */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

/** Replaces the children of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** Goes to a console page ("#/jobs/x"); re-renders when already there. */
export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}

// ---- times ---------------------------------------------------------------

const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
export function localZone() {
  return browserZone;
}

const formatters = new Map();
function formatter(zone, withZone) {
  const key = `${zone}|${withZone}`;
  if (!formatters.has(key)) {
    formatters.set(
      key,
      new Intl.DateTimeFormat("en-CA", {
        timeZone: zone,
        year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
        hourCycle: "h23",
        timeZoneName: withZone ? "short" : undefined,
      }),
    );
  }
  return formatters.get(key);
}

/** "2026-11-22 05:28:40" in `zone` (default the browser's), optionally with the zone's abbreviation. */
export function formatTime(instant, zone = browserZone, withZone = false) {
  if (!instant) return "—";
  const date = instant instanceof Date ? instant : new Date(instant);
  if (Number.isNaN(date.getTime())) return String(instant);
  let parts;
  try {
    parts = formatter(zone, withZone).formatToParts(date);
  } catch {
    parts = formatter("UTC", withZone).formatToParts(date);
  }
  const get = (type) => parts.find((p) => p.type === type)?.value ?? "";
  const text = `${get("year")}-${get("month")}-${get("day")} ${get("hour")}:${get("minute")}:${get("second")}`;
  return withZone ? `${text} ${get("timeZoneName")}` : text;
}

/** "in 12 s", "3 min ago", "just now". */
export function relativeTime(instant, now = Date.now()) {
  if (!instant) return "—";
  const ms = new Date(instant).getTime() - now;
  const future = ms > 0;
  const s = Math.abs(ms) / 1000;
  if (s < 1) return future ? "in <1 s" : "just now";
  let text;
  if (s < 60) text = `${Math.floor(s)} s`;
  else if (s < 3600) text = `${Math.floor(s / 60)} min`;
  else if (s < 86400) text = `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  else text = `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  return future ? `in ${text}` : `${text} ago`;
}

/** A <time> whose relative text is kept current by `tickRelativeTimes`. */
export function relTime(instant, { zone, className } = {}) {
  if (!instant) return h("span", { class: "muted" }, "—");
  return h(
    "time",
    { datetime: instant, "data-rel": instant, title: formatTime(instant, zone || browserZone, true), class: className },
    relativeTime(instant),
  );
}

export function tickRelativeTimes(root = document) {
  const now = Date.now();
  for (const node of root.querySelectorAll("[data-rel]")) {
    const text = relativeTime(node.dataset.rel, now);
    if (node.textContent !== text) node.textContent = text;
  }
  for (const node of root.querySelectorAll("[data-since]")) {
    const text = formatDuration(now - new Date(node.dataset.since).getTime());
    if (node.textContent !== text) node.textContent = text;
  }
}

/** "850 ms", "12.3 s", "4 min 02 s", "2 h 05 min". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

export function formatUptime(seconds) {
  return formatDuration(seconds * 1000);
}

/** Milliseconds a run took (or has taken so far), or null. */
export function runDuration(run, now = Date.now()) {
  if (!run.started_at) return null;
  const end = run.ended_at ? new Date(run.ended_at).getTime() : now;
  return end - new Date(run.started_at).getTime();
}

// ---- numbers -------------------------------------------------------------

export function formatBytes(n) {
  if (n === null || n === undefined) return "—";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** 2 743 → "2.7 k", 10 000 000 000 → "10 G". */
export function formatCount(n) {
  if (n === null || n === undefined) return "—";
  const steps = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [size, suffix] of steps) {
    if (n >= size) {
      const value = n / size;
      return `${value.toFixed(value < 10 ? 1 : 0).replace(/\.0$/, "")} ${suffix}`;
    }
  }
  return String(n);
}

export function shortDigest(digest) {
  return digest ? digest.replace(/^sha256:/, "").slice(0, 12) : "—";
}

export function shortId(id) {
  return id ? id.slice(-8) : "—";
}

// ---- statuses ------------------------------------------------------------

/** Statuses that count as failures on the dashboard and in colours. */
export const FAILURES = new Set(["failed", "timed_out", "out_of_fuel", "out_of_memory", "lost"]);
export const RUN_STATUSES = [
  "running", "succeeded", "failed", "timed_out", "killed", "out_of_fuel",
  "out_of_memory", "skipped", "missed", "lost",
];

/** Statuses a job's alert rule may name (the server refuses running and succeeded). */
export const ALERTABLE_STATUSES = [
  "failed", "timed_out", "killed", "out_of_fuel", "out_of_memory", "skipped", "missed", "lost",
];

/** "shard 1 of 3": shards are counted from 1 here (SANDCRON_SHARD_INDEX counts from 0). */
export function shardLabel(shard) {
  return `shard ${shard.index + 1} of ${shard.count}`;
}

/** The host (and port) of a URL, or the text itself when it does not parse. */
export function urlHost(url) {
  try {
    return new URL(url).host || url;
  } catch {
    return url;
  }
}

export function statusTone(status) {
  if (status === "succeeded" || status === "scheduled") return "ok";
  if (FAILURES.has(status) || status === "unschedulable") return "bad";
  if (status === "running") return "live";
  if (status === "killed" || status === "missed" || status === "skipped") return "warn";
  return "muted";
}

export function statusBadge(status, extra) {
  return h(
    "span",
    { class: `badge tone-${statusTone(status)}`, "data-status": status },
    status.replaceAll("_", " "),
    extra ? ` ${extra}` : null,
  );
}

// ---- feedback ------------------------------------------------------------

/** A short notice in the corner; `kind` is "ok", "bad" or "info". */
export function toast(message, kind = "info", { action } = {}) {
  const box = document.getElementById("toasts");
  // Only the latest few stay; older notices have been read or are stale.
  while (box.childElementCount >= 3) box.firstElementChild.remove();
  const node = h("div", { class: `toast tone-${kind}`, role: kind === "bad" ? "alert" : "status", "data-born": String(Date.now()) }, h("span", {}, message));
  if (action) node.append(" ", action);
  const close = h("button", { class: "link", "aria-label": "Dismiss", onclick: () => node.remove() }, "×");
  node.append(close);
  box.append(node);
  setTimeout(() => node.remove(), kind === "bad" ? 12000 : 6000);
  return node;
}

/**
 * Removes the notices of the page being left: they speak of it, and would
 * cover the next one. A notice raised by the action that navigates (saved,
 * deleted) is younger than a moment and stays.
 */
export function dropStaleToasts(now = Date.now()) {
  for (const node of [...document.querySelectorAll("#toasts .toast")]) {
    if (now - Number(node.dataset.born || 0) > 1500) node.remove();
  }
}

/** Asks a yes/no question in a modal dialog; resolves true when confirmed. */
export function confirmDialog({ title, body, confirm = "Confirm", danger = false }) {
  const dialog = document.getElementById("confirm-dialog");
  replace(dialog.querySelector("h2"), title);
  replace(dialog.querySelector(".body"), body);
  const button = dialog.querySelector("button[value=confirm]");
  button.textContent = confirm;
  button.className = danger ? "danger" : "primary";
  dialog.returnValue = "";
  dialog.showModal();
  dialog.querySelector("button[value=cancel]").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

/** A clear empty state: what is missing and what to do about it. */
export function emptyState(title, text, ...actions) {
  return h("div", { class: "empty" }, h("p", { class: "empty-title" }, title), text ? h("p", {}, text) : null, actions.length ? h("p", {}, actions) : null);
}

/** An error state with the server's message and a retry button. */
export function errorState(err, retry) {
  const message = err?.message || String(err);
  return h(
    "div",
    { class: "error-state", role: "alert" },
    h("p", { class: "empty-title" }, err?.status === 403 ? "Not allowed" : err?.status === 0 ? "Cannot reach the server" : "Something went wrong"),
    h("p", {}, message),
    retry ? h("p", {}, h("button", { onclick: retry }, "Try again")) : null,
  );
}

/**
 * Runs a page's `fetch` (which keeps what it fetched) and answers the error
 * it failed with, or null, so that the page shows a failed load, or keeps
 * its last data marked stale, instead of failing. An abort (the page was
 * left) is thrown on.
 */
export async function failureOf(fetch) {
  try {
    await fetch();
    return null;
  } catch (err) {
    if (err.name === "AbortError") throw err;
    return err;
  }
}

/** Job names as links to their pages, comma-separated. */
export function jobLinks(names) {
  return names.map((name, i) => [i ? ", " : null, h("a", { href: `#/jobs/${encodeURIComponent(name)}` }, name)]);
}

/** An instant in a table cell: the time, and under it how long ago. */
export function stackedTime(instant, zone) {
  return h("div", { class: "stack" }, formatTime(instant, zone), h("small", { class: "muted" }, relTime(instant, { zone })));
}

/** Debounces `fn` by `ms`. */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** "key=value" lines → object; throws naming the bad line. */
export function parsePairs(text, what) {
  const out = {};
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`${what}, line ${index + 1}: expected KEY=value, got "${line}"`);
    out[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return out;
}

export function formatPairs(object) {
  return Object.entries(object || {}).map(([k, v]) => `${k}=${v}`).join("\n");
}

/**
 * Redraws part of a page without losing the keyboard focus: an element with
 * `data-focus-key` that had the focus gets it back after `draw`.
 */
export function keepFocus(draw) {
  const active = document.activeElement;
  const key = active?.dataset?.focusKey;
  draw();
  if (key) {
    const again = document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
    if (again && again !== active) again.focus({ preventScroll: true });
  }
}
