// The jobs table (search, filters, row actions) and one job's page (its
// settings, next fire times, running runs and run history), plus the job
// actions both share: run now, pause/resume, kill, delete.
// A job is a WebAssembly module, a shell command or an HTTP request; it may
// complete asynchronously, broadcast to every worker, start other jobs,
// reach the network (a module's egress) and raise alerts, and both pages
// say so. A job's page also lists the secrets it receives, its config and
// its key-value state.

import { api, apiAll, can, jobPath, query } from "./api.js";
import {
  confirmDialog, emptyState, errorState, failureOf, formatBytes, formatCount, formatTime, h, jobLinks, keepFocus,
  navigate, relTime, replace, shardLabel, shortDigest, statusBadge, toast, urlHost,
} from "./ui.js";
import { runHistory } from "./runs.js";
import { watchState } from "./state.js";

const JOB_STATES = ["scheduled", "running", "paused", "unschedulable"];

export const JOB_KINDS = ["wasm", "shell", "http"];

export function jobKind(job) {
  return job.kind.shell ? "shell" : job.kind.http ? "http" : "wasm";
}

/** The jobs a job starts: on success, then on failure (the server refuses duplicates within one list). */
export function dependentsOf(job) {
  return [...(job.on_success ?? []), ...(job.on_failure ?? [])];
}

/** The job's integrations as small badges: async, broadcast, dependents, egress, alerts. */
function flags(job) {
  const items = [];
  if (job.completion === "async") {
    items.push(h("span", { class: "flag", "data-flag": "async", title: `Waits up to ${job.result_timeout_s ?? 3600} s for the called service to report the result` }, "async"));
  }
  if (job.broadcast) {
    items.push(h("span", { class: "flag", "data-flag": "broadcast", title: "Each tick runs once on every eligible worker" }, "broadcast"));
  }
  const dependents = new Set(dependentsOf(job));
  if (dependents.size) {
    items.push(h("span", {
      class: "flag", "data-flag": "dependents",
      title: [job.on_success?.length ? `on success: ${job.on_success.join(", ")}` : null, job.on_failure?.length ? `on failure: ${job.on_failure.join(", ")}` : null].filter(Boolean).join("; "),
    }, `→ ${dependents.size} dependent${dependents.size === 1 ? "" : "s"}`));
  }
  const egress = job.kind.wasm?.egress ?? [];
  if (egress.length) {
    items.push(h("span", { class: "flag", "data-flag": "egress", title: `May connect to ${egress.join(", ")}` }, "egress"));
  }
  if (job.alerts) {
    items.push(h("span", { class: "flag", "data-flag": "alerts", title: `Alerts to ${job.alerts.channels.join(", ")}` }, "alerts"));
  }
  return items.length ? h("span", { class: "flags" }, items) : null;
}

function kindCell(job) {
  const kind = jobKind(job);
  const http = job.kind.http;
  return h("div", { class: "stack" },
    h("span", { class: `kind kind-${kind}` }, kind),
    http ? h("small", { class: "muted mono http-target", title: `${http.method} ${http.url}` }, `${http.method} ${urlHost(http.url)}`) : null,
    flags(job));
}

/** Whether the caller may change or delete this job (shell jobs need admin). */
export function canWrite(job) {
  return can(jobKind(job) === "shell" ? "admin" : "operator");
}

// ---- actions --------------------------------------------------------------

async function act(work, done) {
  try {
    await work();
    await done?.();
  } catch (err) {
    if (err.name !== "AbortError") toast(err.message, "bad");
  }
}

/** Runs the job now and, once its run appears, offers a link to it. */
export async function runNow(job, after) {
  const requested = Date.now();
  await act(async () => {
    const answer = await api(jobPath(job.name, "/run"), { method: "POST" });
    const note = answer?.note ? ` (${answer.note})` : "";
    const notice = toast(`Run of ${job.name} requested${note}`, "ok");
    // The run record appears once a worker claims it; link to it when it does.
    const deadline = requested + 10000;
    while (Date.now() < deadline && notice.isConnected) {
      const page = await api(`/runs${query({ job: job.name, limit: 5 })}`);
      const run = page.runs.find((r) => r.trigger === "manual" && new Date(r.tick).getTime() >= requested - 2000);
      if (run) {
        notice.querySelector("span").append(" — ", h("a", { href: `#/runs/${run.run_id}` }, "open the run"));
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  }, after);
}

export async function setPaused(job, paused, after) {
  await act(async () => {
    await api(jobPath(job.name, paused ? "/pause" : "/resume"), { method: "POST" });
    toast(`${job.name} ${paused ? "paused" : "resumed"}`, "ok");
  }, after);
}

export async function killRuns(job, runId, after) {
  // A kill cannot be undone: ask first, as a delete does.
  const count = runId ? 1 : (job.running?.length ?? 1);
  const confirmed = await confirmDialog({
    title: count === 1 ? `Kill the running run of ${job.name || job}?` : `Kill ${count} running runs of ${job.name || job}?`,
    body: h("p", {}, `${count === 1 ? "It is" : "They are"} stopped now and ${count === 1 ? "ends" : "end"} killed; `,
      "what has not finished stays undone. The job's schedule is not changed."),
    confirm: count === 1 ? "Kill run" : `Kill ${count} runs`,
    danger: true,
  });
  if (!confirmed) return;
  await act(async () => {
    const answer = await api(jobPath(job.name || job, `/kill${query({ run_id: runId })}`), { method: "POST" });
    toast(`Kill requested for ${answer.runs.length} run${answer.runs.length === 1 ? "" : "s"} of ${answer.job}`, "ok");
  }, after);
}

export async function deleteJob(job, after) {
  const running = job.running?.length ?? 0;
  const confirmed = await confirmDialog({
    title: `Delete job ${job.name}?`,
    body: h(
      "p",
      {},
      "The job stops being scheduled. ",
      running ? h("strong", {}, `Its ${running} running run${running === 1 ? " is" : "s are"} killed. `) : null,
      "Its run history stays until retention removes it.",
    ),
    confirm: "Delete job",
    danger: true,
  });
  if (!confirmed) return false;
  let deleted = false;
  await act(async () => {
    await api(jobPath(job.name), { method: "DELETE" });
    deleted = true;
    toast(`Job ${job.name} deleted`, "ok");
  }, after);
  return deleted;
}

/** The row (or page) actions of a job, for the caller's role. */
function actions(job, refresh, { compact = false, onDeleted } = {}) {
  if (!can("operator")) return null;
  const key = (what) => `${what}:${job.name}`;
  const items = [
    h("button", {
      type: "button", "data-focus-key": key("run"), "aria-label": `Run ${job.name} now`,
      onclick: () => runNow(job, refresh),
    }, "Run now"),
    job.paused
      ? h("button", {
        type: "button", "data-focus-key": key("toggle"), "aria-label": `Resume ${job.name}`,
        onclick: () => setPaused(job, false, refresh),
      }, "Resume")
      : h("button", {
        type: "button", "data-focus-key": key("toggle"), "aria-label": `Pause ${job.name}`,
        onclick: () => setPaused(job, true, refresh),
      }, "Pause"),
  ];
  if (!compact && job.running?.length) {
    items.push(h("button", {
      type: "button", class: "danger", "data-focus-key": key("kill"),
      onclick: () => killRuns(job, undefined, refresh),
    }, job.running.length === 1 ? "Kill run" : `Kill ${job.running.length} runs`));
  }
  if (canWrite(job)) {
    items.push(
      h("a", { class: "button", href: `#/jobs/${encodeURIComponent(job.name)}/edit`, "aria-label": `Edit ${job.name}`, "data-focus-key": key("edit") }, "Edit"),
      compact ? null : h("a", { class: "button", href: `#/jobs/new?from=${encodeURIComponent(job.name)}`, "aria-label": `Duplicate ${job.name}` }, "Duplicate"),
      h("button", {
        type: "button", class: "danger-quiet", "aria-label": `Delete ${job.name}`, "data-focus-key": key("delete"),
        onclick: async () => {
          // A deleted job's own page has nothing left to refresh.
          if (await deleteJob(job, onDeleted ? undefined : refresh)) onDeleted?.();
        },
      }, "Delete"),
    );
  }
  return h("div", { class: "actions" }, items);
}

// ---- the jobs table --------------------------------------------------------

function zoneAbbrev(zone) {
  return formatTime(new Date(), zone, true).split(" ").pop();
}

function nextRunCell(job) {
  if (job.paused) return h("span", { class: "muted" }, "paused");
  if (!job.next_run) return h("span", { class: "muted" }, "never");
  return h(
    "div",
    { class: "stack" },
    relTime(job.next_run, { zone: job.timezone }),
    h("small", { class: "muted" }, formatTime(job.next_run, job.timezone), " ", zoneAbbrev(job.timezone)),
  );
}

function lastRunCell(job) {
  const run = job.last_run;
  if (!run) return h("span", { class: "muted" }, "no runs yet");
  return h(
    "div",
    { class: "stack" },
    h("a", { href: `#/runs/${run.run_id}`, class: "badge-link", "aria-label": `Last run of ${job.name}: ${run.status}` }, statusBadge(run.status)),
    h("small", { class: "muted" }, relTime(run.tick)),
  );
}

function stateCell(job) {
  const badge = statusBadge(job.status);
  if (job.reason) badge.title = job.reason;
  // A running job links to its run, where the output is followed live.
  const first = job.running?.[0];
  const shown = first
    ? h("a", { href: `#/runs/${first.run_id}`, class: "badge-link", "aria-label": `${job.name} is running: open the run` }, badge)
    : badge;
  return h("div", { class: "stack" }, shown, job.reason ? h("small", { class: "muted reason" }, job.reason) : null);
}

/** Sortable columns: key → how two jobs compare. */
const SORTS = {
  name: (a, b) => a.name.localeCompare(b.name),
  zone: (a, b) => a.timezone.localeCompare(b.timezone) || a.name.localeCompare(b.name),
  next: (a, b) => timeOf(a.next_run, Infinity) - timeOf(b.next_run, Infinity) || a.name.localeCompare(b.name),
  last: (a, b) => timeOf(b.last_run?.tick, -Infinity) - timeOf(a.last_run?.tick, -Infinity) || a.name.localeCompare(b.name),
  state: (a, b) => JOB_STATES.indexOf(b.status) - JOB_STATES.indexOf(a.status) || a.name.localeCompare(b.name),
};

function timeOf(instant, missing) {
  return instant ? new Date(instant).getTime() : missing;
}

function sortJobs(list, { key, descending }) {
  const sorted = [...list].sort(SORTS[key] ?? SORTS.name);
  return descending ? sorted.reverse() : sorted;
}

function jobsTable(list, refresh, sort, onSort) {
  const head = (label, key) => {
    if (!key) return h("th", { scope: "col" }, label);
    const active = sort.key === key;
    return h("th", { scope: "col", "aria-sort": active ? (sort.descending ? "descending" : "ascending") : "none" },
      h("button", {
        type: "button", class: "sort", "data-focus-key": `sort:${key}`,
        title: `Sort by ${label.toLowerCase()}`,
        onclick: () => onSort({ key, descending: active ? !sort.descending : false }),
      }, label, h("span", { class: "sort-mark", "aria-hidden": "true" }, active ? (sort.descending ? " ▼" : " ▲") : "")));
  };
  return h(
    "table",
    { class: "data jobs-table" },
    h("caption", { class: "sr-only" }, "Jobs"),
    h("thead", {}, h("tr", {},
      head("Name", "name"), head("Kind"), head("Schedule"), head("Time zone", "zone"), head("Next run", "next"),
      head("Last run", "last"), head("State", "state"), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
    h(
      "tbody",
      {},
      list.map((job) => h(
        "tr",
        { "data-job": job.name, class: job.paused ? "is-paused" : null },
        h("th", { scope: "row", "data-label": "Name" },
          h("a", { href: `#/jobs/${encodeURIComponent(job.name)}`, class: "job-name" }, job.name),
          job.description ? h("small", { class: "muted desc" }, job.description) : null),
        h("td", { "data-label": "Kind", class: "kind-cell" }, kindCell(job)),
        h("td", { "data-label": "Schedule" }, h("div", { class: "stack" }, h("span", { class: "explain" }, job.explain), h("code", { class: "muted" }, job.schedule))),
        h("td", { "data-label": "Time zone" }, job.timezone),
        h("td", { "data-label": "Next run", class: "next-run" }, nextRunCell(job)),
        h("td", { "data-label": "Last run", class: "last-run" }, lastRunCell(job)),
        h("td", { "data-label": "State", class: "state" }, stateCell(job)),
        h("td", { class: "row-actions" }, actions(job, refresh, { compact: true })),
      )),
    ),
  );
}

export async function renderList(view) {
  view.title("Jobs");
  const search = h("input", {
    type: "search", id: "job-search", placeholder: "Search name or description  ( / )",
    value: view.query.q || "", "aria-label": "Search jobs", autocomplete: "off",
  });
  const stateFilter = h("select", { id: "job-state", "aria-label": "Filter by state" },
    h("option", { value: "" }, "Any state"),
    JOB_STATES.map((s) => h("option", { value: s, selected: view.query.state === s }, s)));
  const kindFilter = h("select", { id: "job-kind", "aria-label": "Filter by kind" },
    h("option", { value: "" }, "Any kind"),
    JOB_KINDS.map((k) => h("option", { value: k, selected: view.query.kind === k }, k)));
  const lastFilter = h("select", { id: "job-last", "aria-label": "Filter by last run" },
    h("option", { value: "" }, "Any last run"),
    h("option", { value: "failing", selected: view.query.last === "failing" }, "last run failed"),
    h("option", { value: "ok", selected: view.query.last === "ok" }, "last run succeeded"));
  const count = h("span", { class: "muted count", "aria-live": "polite" });
  const region = h("div", { class: "region" }, h("p", { class: "muted" }, "Loading jobs…"));
  replace(
    view.main,
    h("div", { class: "page-head" },
      h("h1", { tabindex: -1 }, "Jobs"),
      can("operator") ? h("a", { class: "button primary", href: "#/jobs/new", id: "new-job" }, "New job") : null),
    h("div", { class: "filters", role: "search" }, search, stateFilter, kindFilter, lastFilter, count),
    region,
  );

  let jobs = null;
  let error = null;
  let sort = { key: (view.query.sort || "name").replace(/^-/, ""), descending: (view.query.sort || "").startsWith("-") };
  const load = async () => {
    error = await failureOf(async () => {
      jobs = await apiAll("/jobs", { signal: view.signal });
    });
    draw();
  };
  const draw = () => {
    if (!view.alive) return;
    if (error && !jobs) {
      replace(region, errorState(error, load));
      return;
    }
    const q = search.value.trim().toLowerCase();
    const shown = jobs.filter((job) =>
      (!q || job.name.includes(q) || job.description?.toLowerCase().includes(q))
      && (!stateFilter.value || job.status === stateFilter.value)
      && (!kindFilter.value || jobKind(job) === kindFilter.value)
      && (!lastFilter.value || (lastFilter.value === "ok"
        ? job.last_run?.status === "succeeded"
        : job.last_run && job.last_run.status !== "succeeded" && job.last_run.status !== "running")));
    count.textContent = jobs.length ? `${shown.length} of ${jobs.length} job${jobs.length === 1 ? "" : "s"}` : "";
    keepFocus(() => {
      if (!jobs.length) {
        replace(region, emptyState(
          "No jobs yet",
          "A job runs a WebAssembly module, a shell command or an HTTP request on a cron schedule.",
          can("operator") ? h("a", { class: "button primary", href: "#/jobs/new" }, "Create the first job") : "Ask an operator to create one.",
        ));
      } else if (!shown.length) {
        replace(region, emptyState("No job matches these filters", null, h("button", {
          type: "button", onclick: () => {
            search.value = "";
            stateFilter.value = kindFilter.value = lastFilter.value = "";
            filtersChanged();
          },
        }, "Clear the filters")));
      } else {
        replace(region, h("div", { class: "table-wrap" }, jobsTable(sortJobs(shown, sort), load, sort, (next) => {
          sort = next;
          filtersChanged();
        })),
          error ? h("p", { class: "stale", role: "status" }, `Could not refresh: ${error.message}`) : null);
      }
    });
  };
  const filtersChanged = () => {
    const sortParam = sort.key === "name" && !sort.descending ? "" : `${sort.descending ? "-" : ""}${sort.key}`;
    view.setQuery({ q: search.value.trim(), state: stateFilter.value, kind: kindFilter.value, last: lastFilter.value, sort: sortParam });
    draw();
  };
  search.addEventListener("input", filtersChanged);
  for (const select of [stateFilter, kindFilter, lastFilter]) select.addEventListener("change", filtersChanged);

  await load();
  view.every(3000, load);
}

// ---- one job ---------------------------------------------------------------

function fact(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

function pairsBlock(object, separator) {
  return h("code", { class: "block" }, Object.entries(object).map(([k, v]) => `${k}${separator}${v}`).join("\n"));
}

function kindFacts(job, module) {
  if (job.kind.http) {
    const http = job.kind.http;
    return [
      fact("Request", h("code", { class: "block", id: "http-request" }, `${http.method} ${http.url}`)),
      Object.keys(http.headers || {}).length ? fact("Headers", pairsBlock(http.headers, ": ")) : null,
      http.body !== undefined && http.body !== null ? fact("Body", h("code", { class: "block" }, http.body || h("span", { class: "muted" }, "(empty)"))) : null,
      fact("Succeeds on", http.expect_status?.length ? `HTTP ${http.expect_status.join(", ")}` : "any 2xx status"),
      fact("Limits", `timeout ${http.timeout_s} s · output ${http.output_kb} KiB`),
    ];
  }
  if (job.kind.shell) {
    const shell = job.kind.shell;
    return [
      fact("Command", h("code", { class: "block" }, shell.command)),
      Object.keys(shell.env || {}).length ? fact("Environment", h("code", { class: "block" }, Object.entries(shell.env).map(([k, v]) => `${k}=${v}`).join("\n"))) : null,
      fact("Limits", `timeout ${shell.timeout_s} s · output ${shell.output_kb} KiB`),
    ];
  }
  const wasm = job.kind.wasm;
  const l = wasm.limits;
  return [
    fact("Module", module?.name ? [h("span", { id: "job-module-name" }, module.name), " "] : null,
      h("code", { title: wasm.module }, shortDigest(wasm.module))),
    wasm.args?.length ? fact("Arguments", h("code", {}, wasm.args.join(" "))) : null,
    Object.keys(wasm.env || {}).length ? fact("Environment", h("code", { class: "block" }, Object.entries(wasm.env).map(([k, v]) => `${k}=${v}`).join("\n"))) : null,
    wasm.dirs?.length ? fact("Directories", wasm.dirs.map((d) => `${d.grant} → ${d.guest_path}${d.writable ? " (writable)" : ""}`).join(", ")) : null,
    fact("Limits", `fuel ${formatCount(l.fuel)} · memory ${l.memory_mb} MiB · timeout ${l.timeout_s} s · output ${formatBytes(l.output_kb * 1024)}`),
    fact("Egress", wasm.egress?.length
      ? h("span", { id: "job-egress-list" }, wasm.egress.map((entry) => h("span", { class: "chip" }, entry)))
      : h("span", { class: "muted" }, "none: it reaches nothing")),
    wasm.egress?.length && wasm.network ? fact("Network limits", networkLimits(wasm.network)) : null,
    Object.keys(wasm.config || {}).length ? fact("Config", h("code", { class: "block", id: "job-config-list" }, Object.entries(wasm.config).map(([k, v]) => `${k}=${v}`).join("\n"))) : null,
    wasm.context_env === false ? fact("Run context", "through wasi:config only, not in the environment") : null,
  ];
}

/** The stored secrets a job receives, by the name it reads each under. */
function secretFacts(job) {
  const entries = Object.entries(job.secrets || {});
  if (!entries.length) return null;
  const how = job.kind.shell ? "as environment variables" : job.kind.wasm?.secrets_as_env ? "through wasi:config and as environment variables" : "through wasi:config";
  return fact("Secrets", h("span", { id: "job-secrets-list" }, entries.map(([alias, secret]) => h("span", { class: "chip", title: `${alias} is the stored secret ${secret}` },
    `${alias} ← `, h("a", { href: "#/secrets" }, secret)))), h("small", { class: "muted" }, ` ${how}`));
}

/** "100 requests, 8 at once · 10 MiB out, 100 MiB in · connect 10 s, first byte 30 s". */
function networkLimits(n) {
  return `${n.requests} requests, ${n.concurrent} at once · ${formatBytes(n.bytes_out)} out, ${formatBytes(n.bytes_in)} in · connect ${n.connect_timeout_s} s, first byte ${n.first_byte_timeout_s} s`;
}

/** "when a run ends failed, timed out, or more than 50% of at least 5 runs in 600 s failed → ops, pager". */
export function describeAlerts(alerts) {
  const parts = [];
  if (alerts.on?.length) parts.push(`a run ends ${alerts.on.map((s) => s.replaceAll("_", " ")).join(", ")}`);
  const rate = alerts.failure_rate;
  if (rate) parts.push(`more than ${+(rate.threshold * 100).toPrecision(12)}% of at least ${rate.min_runs} runs in ${rate.window_s} s failed`);
  if (alerts.no_success_within_s) parts.push(`no run succeeded within ${alerts.no_success_within_s} s`);
  if (alerts.expected_duration_s) parts.push(`a run is still running after ${alerts.expected_duration_s} s`);
  return `when ${parts.join(", or ")} → ${alerts.channels.join(", ")}`;
}

/** Completion, broadcast, dependents (both ways) and alerts, where set. */
function integrationFacts(job, startedBy) {
  return [
    job.completion === "async" ? fact("Completion", `async: waits up to ${job.result_timeout_s ?? 3600} s for the reported result`) : null,
    job.broadcast ? fact("Broadcast", "each tick runs on every eligible worker, a shard each") : null,
    job.on_success?.length ? fact("Starts on success", h("span", { id: "job-on-success-list" }, jobLinks(job.on_success))) : null,
    job.on_failure?.length ? fact("Starts on failure", h("span", { id: "job-on-failure-list" }, jobLinks(job.on_failure))) : null,
    startedBy.length ? fact("Started by", startedBy.map((s, i) => [i ? ", " : null, h("a", { href: `#/jobs/${encodeURIComponent(s.job)}` }, s.job), ` (${s.when})`])) : null,
    job.alerts ? fact("Alerts", h("span", { id: "job-alerts" }, describeAlerts(job.alerts))) : null,
  ];
}

export async function renderDetail(view) {
  const name = view.params[0];
  view.title(name);
  const head = h("div", { class: "page-head" });
  const body = h("div", {});
  const stateBox = h("div", {});
  const history = h("section", { class: "history", "aria-labelledby": "history-title" });
  replace(view.main, head, body, stateBox, history);

  let job;
  // The jobs that start this one (read once: it changes only when they are edited).
  let startedBy = [];
  // The next fire times in the job's zone, read again when the schedule changes.
  let upcoming = [];
  let upcomingFor = null;
  // The stored module of a WASM job (for its name), read when the digest changes.
  let module = null;
  const load = async () => {
    job = await api(jobPath(name), { signal: view.signal });
    const digest = job.kind.wasm?.module;
    if (digest && module?.digest !== digest) {
      module = await api(`/modules/${encodeURIComponent(digest)}`, { signal: view.signal }).catch((err) => {
        if (err.name === "AbortError") throw err;
        return { digest };
      });
    }
    const key = `${job.schedule}|${job.timezone}|${job.paused}`;
    const stale = upcoming.length && new Date(upcoming[0]).getTime() < Date.now();
    if (key !== upcomingFor || stale) {
      upcomingFor = key;
      upcoming = job.paused ? [] : (await api(`/cron/next${query({ expr: job.schedule, tz: job.timezone, count: 5 })}`, { signal: view.signal }).catch((err) => {
        if (err.name === "AbortError") throw err;
        return { next: [] };
      })).next;
    }
    draw();
  };
  const draw = () => {
    if (!view.alive) return;
    keepFocus(() => {
      replace(head,
        h("div", {},
          h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / "),
          h("h1", { tabindex: -1 }, h("span", { class: "whole-name" }, job.name), " ", statusBadge(job.status))),
        actions(job, load, { onDeleted: () => navigate("#/jobs") }));
      const retry = job.retry;
      const later = upcoming.filter((t) => job.next_run && new Date(t) > new Date(job.next_run)).slice(0, 4);
      replace(body,
        job.description ? h("p", { class: "lead" }, job.description) : null,
        job.reason ? h("p", { class: "notice tone-bad" }, job.reason) : null,
        h("div", { class: "cards two" },
          h("section", { class: "card" },
            h("h2", {}, "Schedule"),
            h("dl", { class: "facts" },
              fact("Expression", h("code", {}, job.schedule)),
              fact("In words", job.explain),
              fact("Time zone", job.timezone),
              fact("Next run", job.next_run ? [relTime(job.next_run, { zone: job.timezone }), " · ", formatTime(job.next_run, job.timezone, true)] : (job.paused ? "paused" : "never")),
              later.length ? fact("Then", h("ol", { class: "fire-times compact" }, later.map((t) => h("li", {}, formatTime(t, job.timezone, true))))) : null,
              fact("Overlap", job.overlap),
              fact("Catch-up", `${job.catchup.policy}, window ${job.catchup.window_s} s`),
              fact("Retry", retry.max ? `up to ${retry.max}×, backoff ${retry.backoff_s} s doubling to ${retry.max_backoff_s} s` : "no retries"),
              integrationFacts(job, startedBy),
              Object.keys(job.selector || {}).length ? fact("Worker labels", Object.entries(job.selector).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`))) : null,
              fact("Scheduled by", job.owner ? h("a", { href: "#/workers" }, job.owner) : h("span", { class: "muted" }, "no worker")))),
          h("section", { class: "card" },
            h("h2", {}, job.kind.shell ? "Shell command" : job.kind.http ? "HTTP request" : "WebAssembly module"),
            h("dl", { class: "facts" },
              kindFacts(job, module),
              secretFacts(job),
              fact("Created", formatTime(job.meta.created_at, job.timezone, true)),
              fact("Updated", formatTime(job.meta.updated_at, job.timezone, true), job.meta.written_by ? ` by ${job.meta.written_by}` : ""),
              fact("Revision", String(job.revision), can("operator")
                ? [" · ", h("a", { href: `#/audit${query({ job: job.name })}`, id: "job-audit-link", "data-focus-key": "audit-link" }, "History of changes")]
                : null)))),
        job.running.length
          ? h("section", { class: "card running-now" },
            h("h2", {}, "Running now"),
            h("ul", { class: "plain" }, job.running.map((entry) => h("li", {},
              h("a", { href: `#/runs/${entry.run_id}` }, entry.run_id), " on ", entry.worker,
              " · claimed ", relTime(entry.claimed_at, { zone: job.timezone }), entry.trigger !== "schedule" ? ` · ${entry.trigger}` : null,
              entry.shard ? ` · ${shardLabel(entry.shard)}` : null))))
          : null,
        job.pending?.length
          ? h("section", { class: "card pending-runs" },
            h("h2", {}, "Waiting to run"),
            h("ul", { class: "plain" }, job.pending.map((run) => h("li", {},
              h("strong", {}, run.attempt > 1 ? `${run.trigger} (attempt ${run.attempt})` : run.trigger),
              " for ", formatTime(run.tick, job.timezone, true),
              run.not_before ? [" · starts ", relTime(run.not_before, { zone: job.timezone })] : null,
              run.worker ? ` · on ${run.worker}` : null,
              run.shard ? ` · ${shardLabel(run.shard)}` : null,
              h("span", { class: "muted" }, ` · requested by ${run.requested_by}`)))))
          : null);
    });
  };

  try {
    const [, all] = await Promise.all([load(), apiAll("/jobs", { signal: view.signal }).catch((err) => {
      if (err.name === "AbortError") throw err;
      return [];
    })]);
    startedBy = all.flatMap((other) => [
      ...(other.on_success ?? []).includes(name) ? [{ job: other.name, when: "on success" }] : [],
      ...(other.on_failure ?? []).includes(name) ? [{ job: other.name, when: "on failure" }] : [],
    ]);
    draw();
  } catch (err) {
    if (err.status === 404) {
      replace(view.main, h("h1", { tabindex: -1 }, name), emptyState("No such job", `There is no job named ${name}; it may have been deleted.`, h("a", { href: "#/jobs" }, "Back to the jobs")));
      return;
    }
    throw err;
  }
  view.every(3000, load);
  await Promise.all([
    watchState(view, () => job, stateBox),
    // The job's page shows every time in the job's zone, as its schedule is.
    runHistory(view, history, { job: name, title: "Run history", zone: job?.timezone }),
  ]);
}
