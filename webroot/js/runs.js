// Run history, overall (#/runs) and per job (embedded in a job's page):
// filters by job, status, worker, trigger and time, cursor paging, and a
// first page that keeps itself current. Dependent runs link to their parent run; the shards
// of a broadcast tick are drawn together, marked as one group.

import { api, apiAll, query } from "./api.js";
import {
  emptyState, errorState, failureOf, formatCount, formatDuration, h, keepFocus, localZone,
  replace, runDuration, RUN_STATUSES, shardLabel, shortId, stackedTime, statusBadge,
} from "./ui.js";

const RANGES = [
  ["", "Any time"],
  ["15m", "Last 15 minutes"],
  ["1h", "Last hour"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
];
const RANGE_MS = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };
// Why a run exists: the API's `trigger` values.
const TRIGGERS = ["schedule", "manual", "catchup", "retry", "dependency", "rerun"];

function durationCell(run) {
  if (run.status === "running" && run.started_at) {
    return h("span", { "data-since": run.started_at }, formatDuration(runDuration(run)));
  }
  const ms = runDuration(run);
  return ms === null ? h("span", { class: "muted" }, "—") : formatDuration(ms);
}

function statusCell(run) {
  const extra = run.status === "missed" && run.missed_count > 1 ? `×${run.missed_count}` : null;
  return h("div", { class: "stack" },
    statusBadge(run.status, extra),
    run.error ? h("small", { class: "muted error-text", title: run.error }, run.error) : null);
}

function triggerCell(run) {
  return h("div", { class: "stack" },
    h("span", {}, run.trigger, run.attempt > 1 ? h("small", { class: "muted" }, ` #${run.attempt}`) : null),
    run.parent
      ? h("small", { class: "muted" }, "after ", h("a", {
        href: `#/runs/${run.parent.run_id}`, class: "parent-link",
        title: `started by run ${run.parent.run_id} of ${run.parent.job} (${run.parent.status.replaceAll("_", " ")})`,
      }, run.parent.job))
      : null,
    run.shard ? h("small", { class: "shard-label", title: `SANDCRON_SHARD_INDEX=${run.shard.index}` }, shardLabel(run.shard)) : null);
}

/**
 * The runs in the page's order, except that the shards of one broadcast
 * tick follow the first of them, by shard index: runs of other jobs with
 * the same tick would otherwise be interleaved with them.
 */
function withShardsTogether(runs) {
  const groups = new Map();
  for (const run of runs) {
    const group = run.shard?.group;
    if (group) groups.set(group, [...(groups.get(group) ?? []), run]);
  }
  const out = [];
  const placed = new Set();
  for (const run of runs) {
    const group = run.shard?.group;
    if (!group) out.push(run);
    else if (!placed.has(group)) {
      placed.add(group);
      out.push(...groups.get(group).sort((a, b) => a.shard.index - b.shard.index || b.attempt - a.attempt));
    }
  }
  return { runs: out, groups };
}

function shardClass(run, groups, index, list) {
  const group = run.shard?.group;
  if (!group || groups.get(group).length < 2) return null;
  const first = list[index - 1]?.shard?.group !== group;
  const last = list[index + 1]?.shard?.group !== group;
  return `shard-row${first ? " shard-first" : ""}${last ? " shard-last" : ""}`;
}

/** The table of a page of runs. */
export function runsTable(page, { showJob = true, zone } = {}) {
  const { runs, groups } = withShardsTogether(page);
  const heads = ["Run", showJob ? "Job" : null, "Status", "Trigger", "Worker", "Tick", "Duration", "Fuel", "Exit"].filter(Boolean);
  return h(
    "table",
    { class: "data runs-table" },
    h("caption", { class: "sr-only" }, "Runs"),
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, runs.map((run, index) => h(
      "tr",
      { "data-run": run.run_id, "data-status": run.status, "data-trigger": run.trigger, "data-shard-group": run.shard?.group, class: shardClass(run, groups, index, runs) },
      h("th", { scope: "row", "data-label": "Run" }, h("a", { href: `#/runs/${run.run_id}`, title: run.run_id, "data-focus-key": `run:${run.run_id}`, class: "mono" }, shortId(run.run_id))),
      showJob ? h("td", { "data-label": "Job" }, h("a", { href: `#/jobs/${encodeURIComponent(run.job)}`, class: "whole-name" }, run.job)) : null,
      h("td", { "data-label": "Status" }, statusCell(run)),
      h("td", { "data-label": "Trigger" }, triggerCell(run)),
      h("td", { "data-label": "Worker", class: "mono small" }, run.worker || "—"),
      h("td", { "data-label": "Tick" }, stackedTime(run.tick, zone)),
      h("td", { "data-label": "Duration", class: "num" }, durationCell(run)),
      h("td", { "data-label": "Fuel", class: "num", title: run.fuel_used ?? "" }, run.fuel_used === null || run.fuel_used === undefined ? h("span", { class: "muted" }, "—") : formatCount(run.fuel_used)),
      h("td", { "data-label": "Exit", class: "num" }, run.exit_code ?? h("span", { class: "muted" }, "—")),
    ))),
  );
}

/** Fills `datalist` with the names of the jobs: suggestions for a job filter. */
export function suggestJobs(view, datalist) {
  apiAll("/jobs", { signal: view.signal }).then((jobs) => {
    replace(datalist, jobs.map((j) => h("option", { value: j.name })));
  }).catch(() => {});
}

/** Fills `datalist` with the ids of the live workers: suggestions for a worker filter. */
function suggestWorkers(view, datalist) {
  api("/workers", { signal: view.signal }).then((workers) => {
    replace(datalist, workers.map((w) => h("option", { value: w.id })));
  }).catch(() => {});
}

/** A note saying which zone times are shown in: a job's, or else the browser's. */
export function zoneNote(zone) {
  return h("small", { class: "muted zone-note" }, zone ? `Times in the job's zone, ${zone}.` : `Times in your browser's zone, ${localZone()}.`);
}

/**
 * Draws a filtered, paged run history into `container`. With `job` the
 * history is that job's; otherwise a job filter is offered.
 */
export async function runHistory(view, container, { job = null, title = "Runs", heading = "h2", zone } = {}) {
  const state = {
    job: job ?? view.query.job ?? "",
    status: view.query.status ?? "",
    worker: view.query.worker ?? "",
    trigger: view.query.trigger ?? "",
    range: view.query.range ?? "",
    limit: Number(view.query.limit) || 25,
  };
  // Cursors of the pages before the current one, for "Newer".
  const cursors = [];
  let cursor = null;
  let since = null;

  const controls = [];
  let jobFilter = null;
  if (job === null) {
    jobFilter = h("input", { type: "search", id: "runs-job", placeholder: "Job name", value: state.job, "aria-label": "Filter by job", list: "runs-job-names", autocomplete: "off" });
    controls.push(jobFilter, h("datalist", { id: "runs-job-names" }));
  }
  const statusFilter = h("select", { id: "runs-status", "aria-label": "Filter by status" },
    h("option", { value: "" }, "Any status"),
    RUN_STATUSES.map((s) => h("option", { value: s, selected: state.status === s }, s.replaceAll("_", " "))));
  const workerFilter = h("input", { type: "search", id: "runs-worker", placeholder: "Worker", value: state.worker, "aria-label": "Filter by worker", list: "runs-worker-ids", autocomplete: "off" });
  const triggerFilter = h("select", { id: "runs-trigger", "aria-label": "Filter by trigger" },
    h("option", { value: "" }, "Any trigger"),
    TRIGGERS.map((t) => h("option", { value: t, selected: state.trigger === t }, t)));
  const rangeFilter = h("select", { id: "runs-range", "aria-label": "Time range" },
    RANGES.map(([value, label]) => h("option", { value, selected: state.range === value }, label)));
  const limitFilter = h("select", { id: "runs-limit", "aria-label": "Runs per page" },
    [25, 50, 100, 250].map((n) => h("option", { value: n, selected: state.limit === n }, `${n} per page`)));
  controls.push(statusFilter, workerFilter, h("datalist", { id: "runs-worker-ids" }), triggerFilter, rangeFilter, limitFilter);

  const region = h("div", { class: "region" }, h("p", { class: "muted" }, "Loading runs…"));
  const newer = h("button", { type: "button", id: "runs-newer", disabled: true }, "← Newer");
  const older = h("button", { type: "button", id: "runs-older", disabled: true }, "Older →");
  const pageInfo = h("span", { class: "muted" });
  const pager = h("nav", { class: "pager", "aria-label": "Run pages" }, zoneNote(zone), newer, pageInfo, older);

  replace(
    container,
    h(heading, { tabindex: heading === "h1" ? -1 : undefined, id: "history-title" }, title),
    h("div", { class: "filters", role: "search" }, controls),
    region,
    pager,
  );

  if (jobFilter) suggestJobs(view, container.querySelector("#runs-job-names"));
  suggestWorkers(view, container.querySelector("#runs-worker-ids"));

  let page = null;
  let error = null;
  const load = async () => {
    error = await failureOf(async () => {
      page = await api(`/runs${query({
        job: state.job || undefined,
        status: state.status || undefined,
        worker: state.worker || undefined,
        trigger: state.trigger || undefined,
        since: since ?? undefined,
        limit: state.limit,
        cursor: cursor ?? undefined,
      })}`, { signal: view.signal });
    });
    draw();
  };
  const draw = () => {
    if (!view.alive) return;
    keepFocus(() => {
      if (error && !page) replace(region, errorState(error, load));
      else if (error && error.field) replace(region, h("p", { class: "notice tone-bad", role: "alert" }, `${error.field}: ${error.message}`));
      else if (!page.runs.length) {
        const filtered = state.status || state.worker || state.trigger || state.range || (job === null && state.job);
        replace(region, emptyState(
          filtered ? "No run matches these filters" : "No runs yet",
          filtered ? null : job ? "Runs appear here as the job fires, or when you run it now." : "Runs appear here as jobs fire.",
        ));
      } else {
        replace(region, h("div", { class: "table-wrap" }, runsTable(page.runs, { showJob: job === null, zone })),
          error ? h("p", { class: "stale", role: "status" }, `Could not refresh: ${error.message}`) : null);
      }
    });
    newer.disabled = cursors.length === 0;
    older.disabled = !page?.next_cursor;
    pageInfo.textContent = page?.runs.length ? `page ${cursors.length + 1}` : "";
  };
  const restart = () => {
    cursors.length = 0;
    cursor = null;
    since = state.range ? new Date(Date.now() - RANGE_MS[state.range]).toISOString() : null;
    if (job === null) {
      view.setQuery({
        job: state.job, status: state.status, worker: state.worker, trigger: state.trigger, range: state.range,
        limit: state.limit === 25 ? "" : state.limit,
      });
    }
    return load();
  };

  jobFilter?.addEventListener("change", () => {
    state.job = jobFilter.value.trim();
    restart();
  });
  statusFilter.addEventListener("change", () => {
    state.status = statusFilter.value;
    restart();
  });
  workerFilter.addEventListener("change", () => {
    state.worker = workerFilter.value.trim();
    restart();
  });
  triggerFilter.addEventListener("change", () => {
    state.trigger = triggerFilter.value;
    restart();
  });
  rangeFilter.addEventListener("change", () => {
    state.range = rangeFilter.value;
    restart();
  });
  limitFilter.addEventListener("change", () => {
    state.limit = Number(limitFilter.value);
    restart();
  });
  older.addEventListener("click", () => {
    if (!page?.next_cursor) return;
    cursors.push(cursor);
    cursor = page.next_cursor;
    load();
  });
  newer.addEventListener("click", () => {
    if (!cursors.length) return;
    cursor = cursors.pop();
    load();
  });

  await restart();
  // The first page follows new runs; older pages stay still while read.
  view.every(3000, async () => {
    if (cursors.length === 0) {
      if (state.range) since = new Date(Date.now() - RANGE_MS[state.range]).toISOString();
      await load();
    }
  });
}

export async function render(view) {
  view.title("Runs");
  const section = h("section", {});
  replace(view.main, section);
  await runHistory(view, section, { title: "Runs", heading: "h1" });
}
