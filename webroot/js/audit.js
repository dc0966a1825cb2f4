// The audit log (#/audit): every write made through the API, who made it
// and when, filtered by job, actor, action and time, read page after page.
// Operators and admins only; a viewer is told so without a request.

import { api, can, jobPath, query, session } from "./api.js";
import { suggestJobs, zoneNote } from "./runs.js";
import { emptyState, errorState, formatTime, h, keepFocus, relTime, replace, shortDigest, shortId } from "./ui.js";

/** What the audit log records, by the names the API stores and filters on (host/src/audit.rs). */
const AUDIT_ACTIONS = [
  "job_create", "job_replace", "job_delete", "job_pause", "job_resume", "run_now", "rerun", "kill",
  "module_upload", "module_delete", "secret_set", "secret_delete", "secret_rekey", "state_delete", "state_clear",
];
/** Actions that remove something or stop runs: drawn in the warning tone. */
const DESTRUCTIVE = new Set(["job_delete", "kill", "module_delete", "secret_delete", "state_delete", "state_clear"]);
/** Entries a page holds unless the address says otherwise (`#/audit?limit=N`, 1–1000). */
const AUDIT_PAGE = 50;

function actionBadge(action) {
  return h("span", { class: `badge tone-${DESTRUCTIVE.has(action) ? "warn" : "muted"}`, "data-action": action },
    action.replaceAll("_", " "));
}

/** Who (the token's name and its role then) and from where. */
function actorCell(entry) {
  return h("div", { class: "stack" },
    h("span", {}, h("span", { class: "audit-actor-name" }, entry.actor), " ",
      h("span", { class: `badge role role-${entry.role}`, "data-role": entry.role }, entry.role)),
    entry.remote ? h("small", { class: "muted mono", title: "The address the request came from (a proxy's, behind one)" }, `from ${entry.remote}`) : null,
    entry.forwarded_for ? h("small", { class: "muted mono", title: "The request's X-Forwarded-For header, as sent: not proof on its own" }, `forwarded for ${entry.forwarded_for}`) : null);
}

/** The job links to its page; another target (a state key, a module, a secret) names its job when it has one. */
function targetCell(entry) {
  const job = entry.job ? h("a", { href: `#${jobPath(entry.job)}`, class: "audit-job" }, entry.job) : null;
  if (job && entry.target === entry.job) return job;
  const target = entry.action.startsWith("module_")
    ? h("code", { title: entry.target }, shortDigest(entry.target))
    : h("code", {}, entry.target);
  return job ? h("span", {}, target, " of ", job) : target;
}

/** "r12 → r13"; "new → r1" for a create, "r12 → deleted" for a delete, "r12" when the job did not change. */
function revisionsCell(entry) {
  const before = entry.revision_before ?? null;
  const after = entry.revision_after ?? null;
  if (before === null && after === null) return h("span", { class: "muted" }, "—");
  if (before === after) return h("span", { class: "mono", title: "The job's revision; this did not change it" }, `r${before}`);
  return h("span", { class: "mono" }, before === null ? "new" : `r${before}`, " → ", after === null ? "deleted" : `r${after}`);
}

function detailCell(entry) {
  const runs = entry.runs ?? [];
  if (!entry.detail && !runs.length) return h("span", { class: "muted" }, "—");
  return h("div", { class: "stack" },
    entry.detail ? h("span", { class: "audit-detail" }, entry.detail) : null,
    runs.length ? h("small", {}, runs.length === 1 ? "run " : "runs ", runs.map((id, i) => [
      i ? ", " : null, h("a", { href: `#/runs/${id}`, class: "mono", title: id }, shortId(id))])) : null);
}

/** The table of the audit entries read so far, newest first. */
function auditTable(entries) {
  const heads = ["Time", "Actor", "Action", "Target", "Revision", "Changed", "Detail"];
  return h("table", { class: "data audit-table", id: "audit-table" },
    h("caption", { class: "sr-only" }, "Audit log, newest first"),
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, entries.map((entry) => h("tr", { "data-audit": entry.id, "data-action": entry.action },
      h("th", { scope: "row", "data-label": "Time" }, h("div", { class: "stack" },
        h("time", { datetime: entry.at, title: entry.at, class: "audit-time" }, formatTime(entry.at)),
        h("small", { class: "muted" }, relTime(entry.at)))),
      h("td", { "data-label": "Actor", class: "audit-actor" }, actorCell(entry)),
      h("td", { "data-label": "Action" }, actionBadge(entry.action)),
      h("td", { "data-label": "Target", class: "audit-target" }, targetCell(entry)),
      h("td", { "data-label": "Revision", class: "audit-revisions" }, revisionsCell(entry)),
      h("td", { "data-label": "Changed", class: "audit-changed" }, entry.changed?.length
        ? entry.changed.map((field) => h("span", { class: "chip" }, field))
        : h("span", { class: "muted" }, "—")),
      h("td", { "data-label": "Detail" }, detailCell(entry))))));
}

/** What a viewer sees instead of the log (the API refuses them). */
function auditNotAllowed(reason) {
  const box = emptyState(
    "The audit log is for operators and admins",
    `It names every token's activity and every job's history; you are signed in as ${session.role ?? "a viewer"}.${reason ? ` The server says: ${reason}` : ""}`,
    h("a", { href: "#/jobs" }, "Back to the jobs"));
  box.id = "audit-not-allowed";
  box.setAttribute("role", "status");
  return box;
}

/** An instant as a datetime-local field's value, in the browser's zone ("2026-12-06T18:30"). */
function localInputValue(instant) {
  if (!instant || Number.isNaN(new Date(instant).getTime())) return "";
  return formatTime(instant).replace(" ", "T").slice(0, 16);
}

export async function renderAudit(view) {
  view.title("Audit log");
  const head = h("div", { class: "page-head" }, h("h1", { tabindex: -1 }, "Audit log"));
  const lead = h("p", { class: "lead" },
    "Every write made through the API (jobs, runs started and killed, modules, secrets, state): who made it, when and from where. Newest first.");
  if (!can("operator")) {
    replace(view.main, head, auditNotAllowed());
    return;
  }

  const limit = Math.min(Math.max(Number.parseInt(view.query.limit, 10) || AUDIT_PAGE, 1), 1000);
  const state = {
    job: view.query.job ?? "",
    actor: view.query.actor ?? "",
    action: view.query.action ?? "",
    since: view.query.since ?? "",
  };

  const jobFilter = h("input", {
    type: "search", id: "audit-job", placeholder: "Job name", value: state.job, "aria-label": "Filter by job",
    list: "audit-job-names", autocomplete: "off", spellcheck: "false",
  });
  const actorFilter = h("input", {
    type: "search", id: "audit-actor", placeholder: "Actor (token name)", value: state.actor, "aria-label": "Filter by actor",
    autocomplete: "off", spellcheck: "false",
  });
  const actionFilter = h("select", { id: "audit-action", "aria-label": "Filter by action" },
    h("option", { value: "" }, "Any action"),
    AUDIT_ACTIONS.map((a) => h("option", { value: a, selected: state.action === a }, a.replaceAll("_", " "))));
  const sinceFilter = h("input", { type: "datetime-local", id: "audit-since", value: localInputValue(state.since) });
  const clear = h("button", { type: "button", id: "audit-clear", class: "link" }, "Clear filters");
  const datalist = h("datalist", { id: "audit-job-names" });
  const form = h("form", { class: "filters", role: "search", id: "audit-filters", "aria-label": "Filter the audit log" },
    jobFilter, datalist, actorFilter, actionFilter,
    h("span", { class: "since-filter" }, h("label", { for: "audit-since", class: "muted" }, "Since"), sinceFilter), clear);

  const region = h("div", { class: "region" }, h("p", { class: "muted" }, "Loading the audit log…"));
  const count = h("span", { class: "muted", id: "audit-count", tabindex: -1, "aria-live": "polite" });
  const more = h("button", { type: "button", id: "audit-more", hidden: true }, "Load more");
  const pager = h("div", { class: "pager" }, zoneNote(), count, more);
  replace(view.main, head, lead, form, region, pager);
  suggestJobs(view, datalist);

  let entries = [];
  let next = null;
  let error = null;
  let loaded = false;
  // Bumped when the filters change: an answer to an older question is dropped.
  let generation = 0;

  const filtered = () => Boolean(state.job || state.actor || state.action || state.since);
  const fetchPage = async (cursor) => {
    const asked = generation;
    region.setAttribute("aria-busy", "true");
    try {
      const page = await api(`/audit${query({ ...state, limit, cursor })}`, { signal: view.signal });
      if (asked !== generation) return;
      entries = cursor ? [...entries, ...page.entries] : page.entries;
      next = page.entries.length ? page.next_cursor : null;
      error = null;
      loaded = true;
    } catch (err) {
      if (err.name === "AbortError") throw err;
      if (asked !== generation) return;
      error = err;
    } finally {
      if (asked === generation) region.removeAttribute("aria-busy");
    }
    draw();
  };
  const draw = () => {
    if (!view.alive) return;
    clear.hidden = !filtered();
    keepFocus(() => {
      if (error?.status === 403) replace(region, auditNotAllowed(error.message));
      else if (error?.field) replace(region, h("p", { class: "notice tone-bad", id: "audit-error", role: "alert" }, `${error.field}: ${error.message}`));
      else if (error && !loaded) replace(region, errorState(error, restart));
      else if (!entries.length) {
        replace(region, emptyState(
          filtered() ? "No entry matches these filters" : "Nothing recorded yet",
          filtered() ? null : "Each write made through the API (a job saved, paused or run now, a module uploaded, a secret stored…) appears here."));
      } else {
        replace(region, h("div", { class: "table-wrap" }, auditTable(entries)),
          error ? h("p", { class: "stale", role: "status" }, `Could not load more: ${error.message}`) : null);
      }
    });
    more.hidden = !next || Boolean(error && !loaded);
    count.textContent = entries.length
      ? `${entries.length} entr${entries.length === 1 ? "y" : "ies"}${next ? "; older ones follow" : ", all there are"}`
      : "";
  };
  const restart = () => {
    generation += 1;
    entries = [];
    next = null;
    error = null;
    loaded = false;
    view.setQuery({ ...state, limit: limit === AUDIT_PAGE ? "" : limit });
    return fetchPage(null);
  };
  const filterChanged = (key, value) => {
    if (state[key] === value) return;
    state[key] = value;
    restart().catch(() => {});
  };

  // "search" comes with Enter and with the field's clear button.
  for (const type of ["change", "search"]) {
    jobFilter.addEventListener(type, () => filterChanged("job", jobFilter.value.trim()));
    actorFilter.addEventListener(type, () => filterChanged("actor", actorFilter.value.trim()));
  }
  actionFilter.addEventListener("change", () => filterChanged("action", actionFilter.value));
  sinceFilter.addEventListener("change", () => {
    const date = sinceFilter.value ? new Date(sinceFilter.value) : null;
    filterChanged("since", date && !Number.isNaN(date.getTime()) ? date.toISOString() : "");
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  clear.addEventListener("click", () => {
    jobFilter.value = "";
    actorFilter.value = "";
    actionFilter.value = "";
    sinceFilter.value = "";
    Object.assign(state, { job: "", actor: "", action: "", since: "" });
    restart().catch(() => {});
    jobFilter.focus();
  });
  let busy = false;
  more.addEventListener("click", async () => {
    if (busy || !next) return;
    busy = true;
    more.setAttribute("aria-busy", "true");
    more.textContent = "Loading…";
    try {
      await fetchPage(next);
    } catch {
      return; // Only an abort: the page was left.
    } finally {
      busy = false;
      more.removeAttribute("aria-busy");
      more.textContent = "Load more";
    }
    // The last page: the button goes, and the focus to the count saying so.
    if (more.hidden && (document.activeElement === more || document.activeElement === document.body)) count.focus({ preventScroll: true });
  });

  await restart();
}
