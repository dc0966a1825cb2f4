// Live workers (#/workers): labels, slots in use of the capacity (and runs
// waiting for a slot, which another worker with a free one takes over), the
// log backlog (output spooled on the worker's disk while the log store is
// down or behind, and runs held back once the spool is full), version,
// uptime.
// Workers seen earlier in this tab that no longer hold their lease stay
// listed as gone, so a worker disappearing is visible, not silent.

import { api } from "./api.js";
import {
  emptyState, errorState, failureOf, formatBytes, formatDuration, formatTime, formatUptime, h, keepFocus, relTime, replace,
} from "./ui.js";

/** Every worker this tab has seen: id → {info, lastSeen, goneAt}. */
const seen = new Map();

/** Slots in use of the capacity, and the runs waiting for one (the API
 * derives both from the runs in progress that name the worker). */
function loadBar(info) {
  const { slots_in_use: inUse, waiting, capacity } = info;
  const share = capacity ? Math.min(1, inUse / capacity) : 0;
  return h("div", { class: "load", title: `${inUse} of ${capacity} slots in use` },
    h("div", { class: "load-bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": capacity, "aria-valuenow": inUse, "aria-label": "Slots in use" },
      h("span", { style: `width: ${(share * 100).toFixed(1)}%` })),
    h("span", { class: "num" }, `${inUse} / ${capacity}`),
    waiting ? h("small", { class: "muted", "data-waiting": waiting }, ` · ${waiting} waiting`) : null);
}

/** How far behind the log store a worker's history is: "—" when nothing
 * waits (or the worker published nothing), else what its spool holds and
 * the age of its oldest batch; a warning while its runs wait for the log
 * sink (the spool's disk budget is spent). */
function logBacklog(info) {
  const backlog = info.log_backlog;
  if (!backlog) return h("span", { class: "muted", title: "This worker has not published its log backlog" }, "—");
  const { spool_bytes: bytes, spool_lag_s: lag, backpressure } = backlog;
  if (!bytes && !backpressure) return h("span", { class: "muted", "data-backlog": "none" }, "—");
  const behind = lag < 60 ? `${lag} s` : formatDuration(lag * 1000);
  return h("div", { class: "stack", "data-backlog": backpressure ? "held" : "spooled" },
    bytes ? h("span", { title: "Run output and records safe on the worker's disk, not yet in the log store" }, `${formatBytes(bytes)} spooled, ${behind} behind`) : null,
    backpressure
      ? h("span", { class: "badge tone-warn", title: "The worker's log spool is full: its runs wait until the log store catches up" }, "runs held back")
      : null);
}

export async function render(view) {
  view.title("Workers");
  const summary = h("p", { class: "muted", id: "workers-summary", "aria-live": "polite" });
  const banner = h("div", { "aria-live": "assertive" });
  const region = h("div", { class: "region" }, h("p", { class: "muted" }, "Loading workers…"));
  replace(view.main, h("div", { class: "page-head" }, h("h1", { tabindex: -1 }, "Workers")), summary, banner, region);

  let error = null;
  const load = async () => {
    error = await failureOf(async () => {
      const live = await api("/workers", { signal: view.signal });
      const now = Date.now();
      const ids = new Set(live.map((w) => w.id));
      for (const worker of live) seen.set(worker.id, { info: worker, lastSeen: now, goneAt: null });
      for (const [id, entry] of seen) {
        if (!ids.has(id) && entry.goneAt === null) entry.goneAt = now;
      }
    });
    keepFocus(draw);
  };
  const draw = () => {
    if (!view.alive) return;
    const entries = [...seen.values()].sort((a, b) => (a.goneAt !== null) - (b.goneAt !== null) || a.info.id.localeCompare(b.info.id));
    const live = entries.filter((e) => e.goneAt === null);
    const gone = entries.filter((e) => e.goneAt !== null);
    if (error && !entries.length) {
      replace(region, errorState(error, load));
      return;
    }
    const total = live.reduce((n, e) => n + e.info.capacity, 0);
    const busy = live.reduce((n, e) => n + e.info.slots_in_use, 0);
    const waiting = live.reduce((n, e) => n + e.info.waiting, 0);
    const held = live.filter((e) => e.info.log_backlog?.backpressure).length;
    summary.textContent = `${live.length} live worker${live.length === 1 ? "" : "s"} · ${busy} of ${total} slots in use${waiting ? ` · ${waiting} run${waiting === 1 ? "" : "s"} waiting for a slot` : ""}${held ? ` · runs held back on ${held} worker${held === 1 ? "" : "s"} (log spool full)` : ""} · refreshed every 2 s`;
    replace(banner, gone.length
      ? h("p", { class: "notice tone-bad", id: "workers-gone", role: "status" },
        `${gone.length} worker${gone.length === 1 ? "" : "s"} disappeared while this page was open: `,
        gone.map((e) => e.info.id).join(", "),
        ". Their jobs move to the remaining workers; runs they had in progress are recorded lost.",
        " ",
        h("button", {
          type: "button", class: "link", onclick: () => {
            for (const e of gone) seen.delete(e.info.id);
            draw();
          },
        }, "Dismiss"))
      : null,
    error ? h("p", { class: "stale", role: "status" }, `Could not refresh: ${error.message}`) : null);
    if (!entries.length) {
      replace(region, emptyState("No live worker", "Jobs wait until a worker joins: start one with `sandcron dev` or `sandcron worker`."));
      return;
    }
    replace(region, h("div", { class: "table-wrap" }, h("table", { class: "data workers-table" },
      h("thead", {}, h("tr", {}, ["Worker", "State", "Labels", "Native", "Slots in use", "Log backlog", "Version", "Started", "Uptime"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, entries.map(({ info, goneAt, lastSeen }) => h("tr", { "data-worker": info.id, class: goneAt ? "is-gone" : null },
        h("th", { scope: "row", "data-label": "Worker" }, h("div", { class: "stack" }, h("span", { class: "mono" }, info.id), h("small", { class: "muted" }, info.hostname))),
        h("td", { "data-label": "State" }, goneAt
          ? h("div", { class: "stack" }, h("span", { class: "badge tone-bad" }, "gone"), h("small", { class: "muted" }, "last seen ", relTime(new Date(lastSeen).toISOString())))
          : h("span", { class: "badge tone-ok" }, "live")),
        h("td", { "data-label": "Labels" }, Object.keys(info.labels).length ? Object.entries(info.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)) : h("span", { class: "muted" }, "none")),
        h("td", { "data-label": "Native" }, info.allow_native ? "shell jobs allowed" : h("span", { class: "muted" }, "wasm only")),
        h("td", { "data-label": "Slots in use" }, goneAt ? h("span", { class: "muted" }, "—") : loadBar(info)),
        h("td", { "data-label": "Log backlog" }, goneAt ? h("span", { class: "muted" }, "—") : logBacklog(info)),
        h("td", { "data-label": "Version" }, info.version),
        h("td", { "data-label": "Started" }, formatTime(info.started_at)),
        h("td", { "data-label": "Uptime", class: "num" }, goneAt ? h("span", { class: "muted" }, "—") : h("span", { "data-since": info.started_at }, formatUptime(info.uptime_s)))))))));
  };
  await load();
  view.every(2000, load);
}
