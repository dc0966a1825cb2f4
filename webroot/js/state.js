// A job's key-value state on its page: the keys its components keep through
// wasi:keyvalue (names and sizes, never values), the totals against the
// quota, the fence, and for operators deleting a key or every key. Viewers
// are not shown state (the API refuses them), and are told so.

import { api, can, jobPath, session } from "./api.js";
import { confirmDialog, failureOf, formatBytes, h, keepFocus, replace, toast } from "./ui.js";

/** Keys a URL path segment cannot carry: the browser would resolve them as "." and "..". */
const UNADDRESSABLE = new Set([".", ".."]);

/**
 * Draws the state of the job `current()` names into `box` and keeps it
 * current while the view is shown. A job that is not a WebAssembly job
 * shows the section only when it holds keys (left from when it was one).
 */
export function watchState(view, current, box) {
  const name = current().name;
  const isWasm = () => Boolean(current().kind.wasm);
  if (!can("operator")) {
    replace(box, isWasm() ? section(
      h("p", { class: "muted", id: "state-not-allowed" },
        `A job's state may hold what it keeps to itself, so only operators see it; you are signed in as ${session.role}.`),
    ) : null);
    return;
  }
  let state = null;
  let problem = null;
  const load = async () => {
    problem = await failureOf(async () => {
      state = await api(jobPath(name, "/state"), { signal: view.signal });
    });
    if (view.alive) keepFocus(draw);
  };
  const draw = () => {
    if (problem?.status === 403) {
      replace(box, section(h("p", { class: "muted", id: "state-not-allowed" }, "Your role may not see this job's state: ", problem.message)));
      return;
    }
    if (problem?.status === 404) {
      replace(box);
      return;
    }
    if (!state) {
      replace(box, section(h("p", { class: "stale", role: "status" }, `Could not read the state: ${problem.message}`)));
      return;
    }
    if (!isWasm() && !state.keys.length) {
      replace(box);
      return;
    }
    replace(box, section(
      summary(state, load),
      problem ? h("p", { class: "stale", role: "status" }, `Could not refresh: ${problem.message}`) : null,
      state.keys.length ? keyTable(name, state, load) : h("p", { class: "muted", id: "state-empty" },
        "No keys. A component keeps state from one run to the next through wasi:keyvalue."),
      quotaLine(state.quota)));
  };
  view.every(3000, load);
  return load();
}

function section(...children) {
  return h("section", { class: "card state-card", id: "job-state", "aria-labelledby": "state-title" }, ...children);
}

function summary(state, reload) {
  const { keys, bytes } = state.total;
  const limit = state.quota ? ` of ${formatBytes(state.quota.max_job_bytes)}` : "";
  return h("div", { class: "state-head" },
    h("h2", { id: "state-title" }, "State"),
    h("p", { class: "state-totals", id: "state-totals" },
      h("strong", {}, `${keys.toLocaleString("en")} key${keys === 1 ? "" : "s"}`),
      h("span", {}, `${formatBytes(bytes)}${limit}`),
      h("span", { id: "state-fence", title: "Only runs with this fence or a newer one may write the state" },
        state.fence === null ? "no run has opened it" : `fence ${state.fence}`)),
    keys ? h("div", { class: "actions" }, h("button", {
      type: "button", class: "danger-quiet", id: "state-delete-all", "data-focus-key": "state:all",
      onclick: () => deleteAll(state, reload),
    }, "Delete all")) : null);
}

function keyTable(name, state, reload) {
  return h("div", { class: "table-wrap state-wrap" }, h("table", { class: "data state-keys", id: "state-keys" },
    h("caption", { class: "sr-only" }, `State keys of ${name}`),
    h("thead", {}, h("tr", {},
      ["Key", "Size", "Revision"].map((t) => h("th", { scope: "col" }, t)),
      h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
    h("tbody", {}, state.keys.map((entry) => h("tr", { "data-key": entry.key },
      h("th", { scope: "row", "data-label": "Key" }, h("code", { class: "state-key" }, entry.key)),
      h("td", { "data-label": "Size", class: "num" }, formatBytes(entry.size)),
      h("td", { "data-label": "Revision", class: "num", title: "the coordination store's revision of its last write" }, String(entry.revision)),
      h("td", { class: "row-actions" }, h("div", { class: "actions" }, UNADDRESSABLE.has(entry.key)
        ? h("small", { class: "muted" }, "only Delete all removes it")
        : h("button", {
          type: "button", class: "danger-quiet", "data-focus-key": `state:${entry.key}`, "aria-label": `Delete state key ${entry.key}`,
          onclick: () => deleteKey(name, entry.key, reload),
        }, "Delete"))))))));
}

function quotaLine(quota) {
  if (!quota) return null;
  return h("p", { class: "hint", id: "state-quota" },
    `Quota, as of the last write: ${quota.max_keys.toLocaleString("en")} keys, ${formatBytes(quota.max_value_bytes)} a value, `,
    `${formatBytes(quota.max_job_bytes)} of keys and values in all.`);
}

async function deleteKey(name, key, reload) {
  const ok = await confirmDialog({
    title: `Delete state key ${key}?`,
    body: h("p", {}, `The next run of ${name} finds no value under it. The delete is not fenced: a run writing now may write it again.`),
    confirm: "Delete key",
    danger: true,
  });
  if (!ok) return;
  try {
    await api(jobPath(name, `/state/${encodeURIComponent(key)}`), { method: "DELETE" });
    toast(`Deleted state key ${key} of ${name}`, "ok");
  } catch (err) {
    if (err.name !== "AbortError") toast(err.message, "bad");
  }
  await reload();
}

async function deleteAll(state, reload) {
  const count = state.total.keys;
  const ok = await confirmDialog({
    title: `Delete all state of ${state.job}?`,
    body: h("p", {}, `Its ${count === 1 ? "one key is" : `${count} keys are`} deleted; the next run starts from nothing. `,
      "The fence stays, so a superseded run still cannot write."),
    confirm: "Delete all keys",
    danger: true,
  });
  if (!ok) return;
  try {
    const answer = await api(jobPath(state.job, "/state"), { method: "DELETE" });
    toast(`Deleted ${answer.deleted} state key${answer.deleted === 1 ? "" : "s"} of ${state.job}`, "ok");
  } catch (err) {
    if (err.name !== "AbortError") toast(err.message, "bad");
  }
  await reload();
}
