// One run: its record, and its output (stdout and stderr interleaved in the
// order they were written, stderr marked) followed live with the API's
// long-poll while the run is running; Kill for running runs. A dependent
// run links to the run that started it, a broadcast shard lists the other
// shards of its tick, and a running run of an async job says it waits for
// the reported result. A WASM run with network access lists its egress
// ledger: each HTTP request, TCP connection and name lookup, allowed or not.
// A run that received secrets names them (the values never reach the API).
// An ended run can be re-run (after a confirmation): its job runs again for
// the same tick, and the answer links to the new run; a re-run links back
// to the run it re-ran.

import { api, can, jobPath, query } from "./api.js";
import { runNow } from "./jobs.js";
import {
  confirmDialog, emptyState, formatBytes, formatCount, formatDuration, formatTime, h, relTime, replace,
  runDuration, shardLabel, shortId, statusBadge, toast,
} from "./ui.js";

const FOLLOW_WAIT_S = 20;

function fact(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

function facts(run, received) {
  const running = run.status === "running";
  return h("dl", { class: "facts grid" },
    fact("Job", h("a", { href: `#/jobs/${encodeURIComponent(run.job)}` }, run.job)),
    fact("Status", statusBadge(run.status, run.missed_count > 1 ? `×${run.missed_count}` : null)),
    fact("Trigger", run.trigger, run.attempt > 1 ? ` (attempt ${run.attempt})` : ""),
    run.parent ? fact("Started by", h("a", { href: `#/runs/${run.parent.run_id}`, id: "parent-run", title: run.parent.run_id },
      `${run.parent.job} run ${shortId(run.parent.run_id)}`), " ", statusBadge(run.parent.status)) : null,
    run.rerun_of ? fact("Re-run of", h("a", { href: `#/runs/${run.rerun_of}`, id: "rerun-of", title: run.rerun_of }, `run ${shortId(run.rerun_of)}`)) : null,
    run.shard ? fact("Shard", h("span", { id: "run-shard", title: `SANDCRON_SHARD_INDEX=${run.shard.index}, SANDCRON_SHARD_COUNT=${run.shard.count}` }, shardLabel(run.shard))) : null,
    fact("Tick", formatTime(run.tick, undefined, true), " · ", relTime(run.tick)),
    run.missed_until ? fact("Missed until", formatTime(run.missed_until, undefined, true)) : null,
    fact("Worker", h("span", { class: "mono" }, run.worker || "—"),
      run.handed_off_from ? h("small", { class: "muted", id: "run-handed-off" }, ` · taken over from ${run.handed_off_from}, whose slots were all in use`) : null),
    fact("Started", run.started_at ? formatTime(run.started_at, undefined, true) : "—"),
    fact("Ended", run.ended_at ? formatTime(run.ended_at, undefined, true) : running ? "still running" : "—"),
    fact("Duration", running && run.started_at
      ? h("span", { "data-since": run.started_at }, formatDuration(runDuration(run)))
      : formatDuration(runDuration(run))),
    fact("Exit code", run.exit_code ?? "—"),
    run.kind === "wasm" ? fact("Fuel used", run.fuel_used === null ? "—" : h("span", { title: String(run.fuel_used) }, formatCount(run.fuel_used))) : null,
    run.kind === "wasm" ? fact("Peak memory", formatBytes(run.peak_memory)) : null,
    run.module_wait_ms != null ? fact("Waited for module", h("span", { id: "run-module-wait", title: "the module was compiled (or loaded from the worker's disk cache) before the guest could start: part of the duration, not of the timeout" }, formatDuration(run.module_wait_ms))) : null,
    fact("Output", h("span", { id: "output-bytes" }, running ? `${formatBytes(received)} so far` : formatBytes(run.output_bytes)), run.truncated ? " (truncated)" : ""),
    run.module ? fact("Module", h("code", { title: run.module }, run.module.replace(/^sha256:/, "").slice(0, 16))) : null,
    fact("Fence", String(run.fence)),
    run.secrets?.length ? fact("Secrets", h("span", { id: "run-secrets", title: "the stored secrets the run received (never their values)" },
      run.secrets.map((name) => h("span", { class: "chip" }, name)))) : null,
  );
}

const OUTCOME_TONES = { ok: "ok", error: "bad", refused: "warn" };

/** "3 calls", "1 call". */
function calls(n) {
  return `${n.toLocaleString("en")} call${n === 1 ? "" : "s"}`;
}

/**
 * The run's egress ledger: its totals, a note when later calls were only
 * counted, and a row per kept call. Null for a run without one (no network
 * grant and no call).
 */
function egressSection(run) {
  const ledger = run.egress;
  if (!ledger) return null;
  const { entries = [], totals } = ledger;
  const started = run.started_at ? new Date(run.started_at).getTime() : null;
  const count = (n, label, tone) => {
    const text = `${n.toLocaleString("en")} ${label}`;
    return h("span", { "data-total": label }, n && tone ? h("span", { class: `badge tone-${tone}` }, text) : text);
  };
  const ok = totals.calls - totals.refused - totals.failed;
  const when = (at) => {
    const ms = new Date(at).getTime() - started;
    return started === null || Number.isNaN(ms) ? formatTime(at) : `+${formatDuration(ms)}`;
  };
  const head = ["When", "Kind", "Method", "Destination", "Outcome", "Status or error", "Sent", "Received", "Duration"];
  return h("section", { class: "card egress", id: "egress", "aria-labelledby": "egress-title" },
    h("div", { class: "egress-head" },
      h("h2", { id: "egress-title" }, "Network calls"),
      h("p", { class: "egress-totals", id: "egress-totals" },
        h("strong", { "data-total": "calls" }, calls(totals.calls)),
        count(ok, "ok"), count(totals.refused, "refused", "warn"), count(totals.failed, "failed", "bad"),
        h("span", { "data-total": "bytes" }, `${formatBytes(totals.bytes_out)} sent · ${formatBytes(totals.bytes_in)} received`))),
    totals.dropped_entries
      ? h("p", { class: "notice tone-warn", id: "egress-dropped" },
        `Only the first ${calls(entries.length)} are listed: ${calls(totals.dropped_entries)} after them ${totals.dropped_entries === 1 ? "is" : "are"} counted in the totals but not kept.`)
      : null,
    entries.length
      ? h("div", { class: "table-wrap ledger-wrap", tabindex: 0, role: "region", "aria-label": "Network calls of this run" },
        h("table", { class: "data ledger", id: "egress-ledger" },
          h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, entries.map((e) => h("tr", { "data-kind": e.kind, "data-outcome": e.outcome },
            h("td", { "data-label": "When", class: "num", title: formatTime(e.at, undefined, true) }, when(e.at)),
            h("td", { "data-label": "Kind" }, h("span", { class: "kind" }, e.kind)),
            h("td", { "data-label": "Method" }, e.method ?? h("span", { class: "muted" }, "—")),
            // One block per cell: on a phone a cell lays out its children in a row.
            h("th", { scope: "row", "data-label": "Destination" }, h("div", {},
              h("span", { class: "destination" }, e.target, e.path ?? ""),
              e.address ? h("small", { class: "address", title: "the address connected to" }, `→ ${e.address}`) : null)),
            h("td", { "data-label": "Outcome" }, h("span", { class: `badge tone-${OUTCOME_TONES[e.outcome] ?? "muted"}` }, e.outcome)),
            h("td", { "data-label": "Status or error" }, h("div", {},
              (e.status ?? null) !== null ? h("span", { class: "mono" }, `HTTP ${e.status}`) : null,
              e.error ? h("span", { class: "ledger-error" }, e.error) : null,
              (e.status ?? null) === null && !e.error ? h("span", { class: "muted" }, "—") : null)),
            h("td", { "data-label": "Sent", class: "num" }, formatBytes(e.bytes_out)),
            h("td", { "data-label": "Received", class: "num" }, formatBytes(e.bytes_in)),
            h("td", { "data-label": "Duration", class: "num" }, formatDuration(e.duration_ms)))))))
      : null);
}

/**
 * Asks, then asks the server to run the job of `run` again for its tick;
 * draws the server's answer (the new run, the tick, any note) into `box`.
 */
async function rerun(run, box) {
  const confirmed = await confirmDialog({
    title: `Re-run run ${shortId(run.run_id)}?`,
    body: h("p", {},
      `Job ${run.job} runs again for this run's tick, ${formatTime(run.tick, undefined, true)}, as the job is now. `,
      "The new run has trigger rerun and links back to this one.",
      run.shard ? ` Only this shard runs again, on worker ${run.worker}.` : ""),
    confirm: "Re-run",
  });
  if (!confirmed) return;
  let answer;
  try {
    answer = await api(`/runs/${encodeURIComponent(run.run_id)}/rerun`, { method: "POST" });
  } catch (err) {
    toast(err.message, "bad");
    return;
  }
  const link = answer.run_id
    ? h("a", { href: `#/runs/${answer.run_id}`, id: "rerun-new" }, `run ${shortId(answer.run_id)}`)
    : h("a", { href: `#/jobs/${encodeURIComponent(answer.job)}`, id: "rerun-new" }, `the runs of ${answer.job}`);
  // The new run exists once a worker has taken the request: until then
  // its id is shown, then it becomes a link (as after Run now).
  const newRun = h("span", { id: "rerun-new-run" }, answer.run_id ? `run ${shortId(answer.run_id)} (waiting for a worker to start it)` : link);
  replace(box, h("p", { class: "notice tone-ok", id: "rerun-answer", role: "status" },
    "Re-run requested: ", newRun,
    ` for tick ${formatTime(answer.tick, undefined, true)}${answer.worker ? `, on worker ${answer.worker}` : ""}.`,
    answer.note ? ` Note: ${answer.note}.` : ""));
  if (!answer.run_id) return;
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline && box.isConnected) {
    try {
      await api(`/runs/${encodeURIComponent(answer.run_id)}`);
      break;
    } catch (err) {
      if (err.status !== 404) break;
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  replace(newRun, link);
}

/** Rows drawn at most; the rest stay in memory for Download, so a huge output cannot stall the tab. */
const MAX_SHOWN_LINES = 20000;

/**
 * Output as rows of one stream each. Chunks are pieces of what the process
 * wrote, not lines: a piece continues the previous row when that row is of
 * the same stream and has no newline yet.
 */
class OutputView {
  constructor() {
    this.lines = h("ol", { class: "output-lines", id: "output-lines" });
    this.box = h("div", { class: "output", tabindex: 0, role: "log", "aria-label": "Run output", "aria-live": "off" }, this.lines);
    this.overflow = h("p", { class: "notice tone-warn output-overflow", id: "output-overflow", hidden: true });
    this.rows = [];
    this.open = null;
    this.bytes = 0;
    this.autoScroll = true;
    this.box.addEventListener("scroll", () => {
      const atBottom = this.box.scrollHeight - this.box.scrollTop - this.box.clientHeight < 24;
      this.autoScroll = atBottom;
    });
  }

  append(chunks) {
    const encoder = new TextEncoder();
    // New rows go into the page at once, not one by one.
    const fragment = document.createDocumentFragment();
    for (const chunk of chunks) {
      this.bytes += encoder.encode(chunk.data).length;
      const pieces = chunk.data.match(/[^\n]*\n|[^\n]+/g) || [];
      const title = `${chunk.stream} · ${formatTime(chunk.at)}`;
      for (const piece of pieces) {
        const ends = piece.endsWith("\n");
        const text = ends ? piece.slice(0, -1) : piece;
        if (!this.open || this.open.stream !== chunk.stream) {
          this.open = { stream: chunk.stream, text: "", node: null };
          this.rows.push(this.open);
          if (this.rows.length <= MAX_SHOWN_LINES) {
            // Built by hand: this runs once per line, thousands of times.
            const li = document.createElement("li");
            li.className = `line ${chunk.stream}`;
            li.dataset.stream = chunk.stream;
            li.dataset.n = String(this.rows.length);
            li.title = title;
            const mark = document.createElement("span");
            mark.className = "stream-mark";
            mark.setAttribute("aria-label", chunk.stream);
            mark.textContent = chunk.stream === "stderr" ? "err" : "out";
            this.open.node = document.createElement("span");
            this.open.node.className = "text";
            li.append(mark, this.open.node);
            fragment.append(li);
          }
        }
        this.open.text += text;
        this.open.node?.append(text);
        if (ends) this.open = null;
      }
    }
    this.lines.append(fragment);
    if (this.rows.length > MAX_SHOWN_LINES) {
      this.overflow.hidden = false;
      this.overflow.textContent = `Showing the first ${MAX_SHOWN_LINES.toLocaleString("en")} of ${this.rows.length.toLocaleString("en")} lines; Download saves all of them.`;
    }
    if (chunks.length && this.autoScroll) this.box.scrollTop = this.box.scrollHeight;
  }

  /** The whole output as text, stderr lines marked. */
  text() {
    return this.rows.map((row) => `${row.stream === "stderr" ? "[stderr] " : ""}${row.text}`).join("\n");
  }

  get empty() {
    return this.rows.length === 0;
  }
}

/** Saves the output as text; stderr lines are prefixed so both streams survive in one file. */
function download(runId, output) {
  const url = URL.createObjectURL(new Blob([`${output.text()}\n`], { type: "text/plain" }));
  const link = h("a", { href: url, download: `sandcron-run-${runId}.log` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export async function render(view) {
  const runId = view.params[0];
  view.title(`Run ${runId.slice(-8)}`);
  let run;
  try {
    run = await api(`/runs/${encodeURIComponent(runId)}`, { signal: view.signal });
  } catch (err) {
    if (err.status === 404 || err.status === 422) {
      replace(view.main, h("h1", { tabindex: -1 }, "Run not found"), emptyState("No such run", err.message, h("a", { href: "#/runs" }, "All runs")));
      return;
    }
    throw err;
  }

  const head = h("div", { class: "page-head" });
  const factsBox = h("section", { class: "card" });
  const resultBox = h("div", {});
  const asyncBox = h("div", { "aria-live": "polite" });
  const rerunBox = h("div", { "aria-live": "polite" });
  const shardsBox = h("div", {});
  const egressBox = h("div", {});
  const output = new OutputView();
  // A running run's output follows its end; a finished one is read from the top.
  output.autoScroll = run.status === "running";
  const liveNote = h("span", { class: "live-note", id: "output-state", "aria-live": "polite" });
  const truncation = h("p", { class: "notice tone-warn", id: "output-truncated", hidden: true });
  const emptyNote = h("p", { class: "muted output-empty", hidden: true },
    run.status === "missed" || run.status === "skipped"
      ? `This tick was ${run.status}${run.error ? ` (${run.error})` : ""}: nothing ran, so there is no output.`
      : "This run wrote no output.");
  // A running run that has written nothing yet: say so instead of an empty box.
  const waitingNote = h("p", { class: "muted output-empty", id: "output-waiting", hidden: run.status !== "running" },
    "Waiting for output: the run has written nothing yet.");
  output.box.hidden = run.status === "running";
  const wrap = h("input", { type: "checkbox", id: "output-wrap", checked: true });
  const streams = h("select", { id: "output-streams", "aria-label": "Streams shown" },
    h("option", { value: "" }, "stdout and stderr"), h("option", { value: "stdout" }, "stdout only"), h("option", { value: "stderr" }, "stderr only"));
  wrap.addEventListener("change", () => output.box.classList.toggle("nowrap", !wrap.checked));
  streams.addEventListener("change", () => {
    output.box.dataset.only = streams.value;
  });

  replace(view.main,
    head,
    rerunBox,
    asyncBox,
    factsBox,
    shardsBox,
    resultBox,
    egressBox,
    h("section", { class: "card output-card", "aria-labelledby": "output-title" },
      h("div", { class: "output-head" },
        h("h2", { id: "output-title" }, "Output"),
        liveNote,
        h("div", { class: "output-tools" },
          streams,
          h("button", { type: "button", id: "output-download", onclick: () => download(runId, output) }, "Download"),
          h("label", { class: "check" }, wrap, " Wrap lines"))),
      truncation,
      output.box,
      output.overflow,
      waitingNote,
      emptyNote));

  let killing = false;
  let job = null;
  const drawRun = () => {
    const running = run.status === "running";
    replace(head,
      h("div", {},
        h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ", h("a", { href: `#/jobs/${encodeURIComponent(run.job)}`, class: "whole-name" }, run.job), " /"),
        h("h1", { tabindex: -1 }, h("span", { class: "mono" }, run.run_id), " ", h("span", { id: "run-status" }, statusBadge(run.status)))),
      h("div", { class: "actions" },
        can("operator") && !running
          ? h("button", {
            type: "button", id: "rerun-run", title: `Run ${run.job} again for this run's tick`,
            onclick: () => rerun(run, rerunBox),
          }, "Re-run")
          : null,
        can("operator") && !running
          ? h("button", { type: "button", id: "run-again", onclick: () => runNow({ name: run.job }) }, "Run the job again")
          : null,
        running && can("operator")
          ? h("button", {
          type: "button", class: "danger", id: "kill-run", disabled: killing,
          onclick: async () => {
            const confirmed = await confirmDialog({
              title: `Kill run ${shortId(run.run_id)}?`,
              body: h("p", {}, `The run of ${run.job} is stopped now and ends killed; what it has not finished stays undone. `,
                "The job's schedule is not changed."),
              confirm: "Kill run",
              danger: true,
            });
            if (!confirmed || run.status !== "running") return;
            killing = true;
            drawRun();
            try {
              await api(jobPath(run.job, `/kill${query({ run_id: run.run_id })}`), { method: "POST" });
              toast(`Kill requested for run ${run.run_id.slice(-8)}`, "ok");
              watchUntilEnded();
            } catch (err) {
              killing = false;
              toast(err.message, "bad");
              drawRun();
            }
          },
        }, killing ? "Killing…" : "Kill")
          : null));
    replace(factsBox, h("h2", { class: "sr-only" }, "Details"), facts(run, output.bytes));
    const reportHow = [" The service reports with ", h("code", {}, `POST /api/v1/runs/${run.run_id}/result`), " and the run's token."];
    replace(asyncBox, run.status === "running" && run.result_due
      ? h("p", { class: "notice tone-live", id: "async-wait" },
        `The ${job?.kind?.http ? "call" : "process"} ended; waiting for the reported result until `,
        formatTime(run.result_due, undefined, true), " (", relTime(run.result_due), ").", reportHow)
      : run.status === "running" && job?.completion === "async"
        ? h("p", { class: "notice tone-live", id: "async-wait" },
          `Once it ends well, the run waits up to ${job.result_timeout_s ?? 3600} s for its reported result.`, reportHow)
        : null);
    replace(egressBox, egressSection(run));
    replace(resultBox, run.result !== undefined && run.result !== null
      ? h("section", { class: "card" }, h("h2", {}, "Result"), h("pre", { class: "result" }, JSON.stringify(run.result, null, 2)))
      : null);
  };
  drawRun();
  // The job, for a running run: whether it waits for a reported result.
  if (run.status === "running") {
    api(jobPath(run.job), { signal: view.signal }).then((answer) => {
      job = answer;
      if (view.alive) drawRun();
      // The record says when the run starts waiting (and until when); its
      // status does not change then, so the output stream does not tell.
      if (job.completion === "async") {
        view.every(2000, async () => {
          if (run.status === "running" && !run.result_due) await refreshRun();
        });
      }
    }).catch(() => {});
  }

  const refreshRun = async () => {
    run = await api(`/runs/${encodeURIComponent(runId)}`, { signal: view.signal });
    drawRun();
  };

  // The shards of a broadcast tick: the runs of the job with this very tick
  // and this shard group. Ticks are kept to the millisecond, so the tick is
  // cut to its millisecond for `since` and the next one is `until`.
  if (run.shard) {
    const tickMs = new Date(run.tick).getTime();
    const siblingsQuery = query({
      job: run.job, since: new Date(tickMs).toISOString(), until: new Date(tickMs + 1).toISOString(), limit: 1000,
    });
    const loadShards = async () => {
      const page = await api(`/runs${siblingsQuery}`, { signal: view.signal });
      const shards = page.runs
        .filter((r) => r.shard?.group === run.shard.group)
        .sort((a, b) => a.shard.index - b.shard.index || a.attempt - b.attempt);
      drawShards(shards);
      return shards;
    };
    const drawShards = (shards) => {
      const missing = run.shard.count - new Set(shards.map((r) => r.shard.index)).size;
      replace(shardsBox, h("section", { class: "card", "aria-labelledby": "shards-title" },
        h("h2", { id: "shards-title" }, "Shards of this tick"),
        h("ol", { class: "plain shards", id: "shard-list" }, shards.map((r) => h("li", { "data-run": r.run_id, class: r.run_id === run.run_id ? "is-current" : null },
          r.run_id === run.run_id
            ? h("strong", { "aria-current": "page" }, shardLabel(r.shard), " (this run)")
            : h("a", { href: `#/runs/${r.run_id}` }, shardLabel(r.shard)),
          r.attempt > 1 ? ` · attempt ${r.attempt}` : null,
          " · ", h("span", { class: "mono small" }, r.worker || "—"), " ", statusBadge(r.status)))),
        missing > 0 ? h("p", { class: "muted" }, `${missing} of ${run.shard.count} shards not recorded yet.`) : null));
    };
    loadShards().then((shards) => {
      // Shards still running, or not yet recorded, are read again until all have ended.
      let done = false;
      const settled = (list) => list.length >= run.shard.count && list.every((r) => r.status !== "running");
      if (settled(shards)) return;
      view.every(2000, async () => {
        if (done) return;
        done = settled(await loadShards());
      });
    }).catch((err) => {
      if (err.name !== "AbortError" && view.alive) replace(shardsBox, h("p", { class: "stale" }, `Could not list the shards of this tick: ${err.message}`));
    });
  }

  // After a kill, the record is read a few times a second until it is final,
  // so the page shows `killed` as soon as the worker records it.
  let watching = false;
  const watchUntilEnded = async () => {
    if (watching) return;
    watching = true;
    const deadline = Date.now() + 15000;
    while (view.alive && run.status === "running" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      try {
        await refreshRun();
      } catch (err) {
        if (err.name === "AbortError") return;
      }
    }
    watching = false;
  };

  // Output: read everything so far, then long-poll while the run is running.
  // The loop runs beside the page, which is ready as soon as it is drawn.
  const follow = async () => {
    let after = null;
    let failures = 0;
    while (view.alive) {
      const live = run.status === "running";
      liveNote.replaceChildren(live ? h("span", { class: "dot" }) : "", live ? "following live output" : "");
      liveNote.dataset.state = live ? "live" : "ended";
      let page;
      try {
        page = await api(`/runs/${encodeURIComponent(runId)}/output${query({
          after: after ?? undefined, limit: 5000, follow: live ? "true" : undefined, wait_s: live ? FOLLOW_WAIT_S : undefined,
        })}`, { signal: view.signal });
        failures = 0;
      } catch (err) {
        if (err.name === "AbortError" || !view.alive) return;
        failures += 1;
        liveNote.textContent = `output unavailable (${err.message}); retrying`;
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** failures, 15000)));
        continue;
      }
      output.append(page.chunks);
      const waiting = run.status === "running" && output.empty;
      waitingNote.hidden = !waiting;
      output.box.hidden = waiting;
      if (run.status === "running" && page.chunks.length) {
        const received = document.getElementById("output-bytes");
        if (received) received.textContent = `${formatBytes(output.bytes)} so far`;
      }
      after = page.next_after ?? after;
      if (page.truncated) {
        truncation.hidden = false;
        truncation.textContent = "The output was cut at the job's output limit; the rest was not kept.";
      }
      if (page.status !== run.status) await refreshRun();
      if (page.done) {
        if (run.status === "running") await refreshRun();
        break;
      }
    }
    if (!view.alive) return;
    liveNote.dataset.state = "ended";
    liveNote.textContent = `ended ${run.ended_at ? formatTime(run.ended_at) : ""}`.trim();
    waitingNote.hidden = true;
    emptyNote.hidden = !output.empty;
    output.box.hidden = output.empty;
  };
  follow().catch((err) => {
    if (err.name !== "AbortError" && view.alive) liveNote.textContent = `output unavailable: ${err.message}`;
  });
}
