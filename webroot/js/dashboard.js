// The dashboard (#/dashboard): the last hour at a glance, computed in the
// browser from GET /runs?since=… — runs per minute, success rate, failures
// and misses, the slowest jobs — drawn as inline SVG (no chart library).

import { api, query } from "./api.js";
import {
  emptyState, errorState, FAILURES, formatDuration, formatTime, h, relTime, replace, runDuration,
  shortId, statusBadge, svg,
} from "./ui.js";

const HOUR_MS = 3600e3;
const MAX_PAGES = 20;

/** Every run whose tick is in the last hour (up to MAX_PAGES pages of 1000). */
async function lastHour(signal) {
  const since = new Date(Date.now() - HOUR_MS).toISOString();
  const runs = [];
  let cursor;
  let complete = false;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const answer = await api(`/runs${query({ since, limit: 1000, cursor })}`, { signal });
    runs.push(...answer.runs);
    cursor = answer.next_cursor;
    if (!cursor) {
      complete = true;
      break;
    }
  }
  return { runs, complete };
}

function category(status) {
  if (status === "succeeded") return "ok";
  if (FAILURES.has(status)) return "fail";
  if (status === "running") return "running";
  return "other";
}

/** The numbers the dashboard shows. */
export function summarise(runs, now = Date.now()) {
  const start = now - HOUR_MS;
  const minutes = Array.from({ length: 60 }, (_, i) => ({ at: start + i * 60e3, ok: 0, fail: 0, other: 0, running: 0 }));
  const fives = Array.from({ length: 12 }, (_, i) => ({ at: start + i * 300e3, ok: 0, done: 0 }));
  let executed = 0;
  let succeeded = 0;
  let finished = 0;
  let failures = 0;
  let killed = 0;
  let missed = 0;
  let skipped = 0;
  let running = 0;
  const durations = new Map();
  const problems = [];
  for (const run of runs) {
    const t = new Date(run.tick).getTime();
    const cat = category(run.status);
    const weight = run.status === "missed" ? run.missed_count || 1 : 1;
    const minute = Math.floor((t - start) / 60e3);
    if (minute >= 0 && minute < 60) minutes[minute][cat] += weight;
    if (run.status === "missed") missed += weight;
    else if (run.status === "skipped") skipped += 1;
    else executed += 1;
    if (run.status === "running") running += 1;
    if (run.status === "succeeded") succeeded += 1;
    if (FAILURES.has(run.status)) failures += 1;
    if (run.status === "killed") killed += 1;
    // Killed runs were stopped by someone, so they count neither way.
    const counts = run.status === "succeeded" || FAILURES.has(run.status);
    if (counts) {
      finished += 1;
      const five = Math.floor((t - start) / 300e3);
      if (five >= 0 && five < 12) {
        fives[five].done += 1;
        if (run.status === "succeeded") fives[five].ok += 1;
      }
    }
    if (FAILURES.has(run.status) || run.status === "missed" || run.status === "killed") problems.push(run);
    // A killed run's length says when someone stopped it, not how long the
    // job takes: only runs that ended on their own count as slow.
    const ms = run.ended_at && counts ? runDuration(run) : null;
    if (ms !== null) {
      const entry = durations.get(run.job) ?? { job: run.job, max: 0, total: 0, count: 0, slowest: null };
      entry.total += ms;
      entry.count += 1;
      if (ms >= entry.max) {
        entry.max = ms;
        entry.slowest = run.run_id;
      }
      durations.set(run.job, entry);
    }
  }
  const slowest = [...durations.values()]
    .map((e) => ({ ...e, avg: e.total / e.count }))
    .sort((a, b) => b.max - a.max)
    .slice(0, 6);
  return {
    minutes, fives, executed, succeeded, finished, failures, killed, missed, skipped, running,
    successRate: finished ? succeeded / finished : null,
    problems: problems.slice(0, 12),
    slowest,
  };
}

function niceMax(value) {
  if (value <= 4) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return value;
}

// Charts are drawn in a coordinate space about as wide as they are shown, so
// their text stays readable on a phone.
let W = 640;
const H = 180;
const PAD = { left: 36, right: 8, top: 10, bottom: 24 };

function timeLabel(ms) {
  return formatTime(new Date(ms)).slice(11, 16);
}

function axes(max, ticks, xLabels, format = (v) => String(v)) {
  const plotH = H - PAD.top - PAD.bottom;
  const nodes = [];
  for (let i = 0; i <= ticks; i += 1) {
    const value = (max / ticks) * i;
    const y = PAD.top + plotH - (plotH * i) / ticks;
    nodes.push(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: i === 0 ? "axis" : "grid" }));
    nodes.push(svg("text", { x: PAD.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, format(value)));
  }
  for (const [index, [x, text]] of xLabels.entries()) {
    const anchor = index === xLabels.length - 1 ? "end" : index === 0 ? "start" : "middle";
    nodes.push(svg("text", { x, y: H - 6, class: "tick", "text-anchor": anchor }, text));
  }
  return nodes;
}

/** Stacked bars: succeeded, failed, other (killed, skipped, missed), running. */
function runsPerMinuteChart(minutes) {
  const max = niceMax(Math.max(1, ...minutes.map((m) => m.ok + m.fail + m.other + m.running)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const barW = plotW / minutes.length;
  const bars = minutes.map((m, i) => {
    const x = PAD.left + i * barW;
    let y = PAD.top + plotH;
    const parts = [];
    for (const key of ["ok", "fail", "other", "running"]) {
      if (!m[key]) continue;
      const height = (m[key] / max) * plotH;
      y -= height;
      parts.push(svg("rect", { x: x + 0.5, y, width: Math.max(1, barW - 1), height, class: `bar bar-${key}` }));
    }
    const total = m.ok + m.fail + m.other + m.running;
    return svg("g", {}, svg("title", {}, `${timeLabel(m.at)}: ${total} (${m.ok} succeeded, ${m.fail} failed, ${m.other} other, ${m.running} running)`), ...parts,
      svg("rect", { x, y: PAD.top, width: barW, height: plotH, class: "hit" }));
  });
  const xLabels = [0, 15, 30, 45, 59].map((i) => [PAD.left + i * barW + (i === 0 ? 0 : i === 59 ? barW : barW / 2), timeLabel(minutes[i].at)]);
  const total = minutes.reduce((n, m) => n + m.ok + m.fail + m.other + m.running, 0);
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": `Runs per minute over the last hour: ${total} in total` },
    ...axes(max, 4, xLabels), ...bars);
}

/** Success rate per five minutes, as a line with a point per window. */
function successChart(fives) {
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / fives.length;
  const points = fives.map((f, i) => ({
    x: PAD.left + i * step + step / 2,
    y: f.done ? PAD.top + plotH - (f.ok / f.done) * plotH : null,
    f,
  }));
  const segments = [];
  let current = [];
  for (const p of points) {
    if (p.y === null) {
      if (current.length) segments.push(current);
      current = [];
    } else current.push(p);
  }
  if (current.length) segments.push(current);
  const nodes = segments.map((seg) => svg("polyline", { points: seg.map((p) => `${p.x},${p.y}`).join(" "), class: "line" }));
  const dots = points.filter((p) => p.y !== null).map((p) => svg("circle", { cx: p.x, cy: p.y, r: 3.5, class: p.f.ok === p.f.done ? "dot ok" : "dot bad" },
    svg("title", {}, `${timeLabel(p.f.at)}–${timeLabel(p.f.at + 300e3)}: ${p.f.ok} of ${p.f.done} succeeded`)));
  const xLabels = [0, 3, 6, 9, 11].map((i) => [i === 0 ? PAD.left : i === 11 ? W - PAD.right : points[i].x, timeLabel(i === 11 ? fives[i].at + 300e3 : fives[i].at)]);
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "Success rate per five minutes over the last hour" },
    ...axes(100, 4, xLabels, (v) => `${v}%`), ...nodes, ...dots);
}

/** Horizontal bars of the slowest jobs: the longest run, with the average inside. */
function slowestChart(slowest) {
  const rowH = 30;
  const labelW = Math.min(150, Math.round(W * 0.3));
  const height = slowest.length * rowH + 8;
  const max = Math.max(...slowest.map((s) => s.max), 1);
  const plotW = W - labelW - 90;
  return svg("svg", { viewBox: `0 0 ${W} ${height}`, class: "chart", role: "img", "aria-label": `Slowest jobs: ${slowest.map((s) => `${s.job} ${formatDuration(s.max)}`).join(", ")}` },
    ...slowest.map((s, i) => {
      const y = 4 + i * rowH;
      return svg("g", {},
        svg("title", {}, `${s.job}: longest ${formatDuration(s.max)}, average ${formatDuration(s.avg)} over ${s.count} run${s.count === 1 ? "" : "s"}`),
        svg("text", { x: labelW - 8, y: y + 17, class: "label", "text-anchor": "end" }, s.job.length > 20 ? `${s.job.slice(0, 19)}…` : s.job),
        svg("rect", { x: labelW, y: y + 4, width: Math.max(2, (s.max / max) * plotW), height: rowH - 10, class: "bar bar-max" }),
        svg("rect", { x: labelW, y: y + 9, width: Math.max(2, (s.avg / max) * plotW), height: rowH - 20, class: "bar bar-avg" }),
        svg("text", { x: labelW + Math.max(2, (s.max / max) * plotW) + 6, y: y + 17, class: "value" }, formatDuration(s.max)));
    }));
}

function stat(label, value, { tone, note, id } = {}) {
  return h("div", { class: `stat${tone ? ` tone-${tone}` : ""}`, id },
    h("span", { class: "stat-value" }, value),
    h("span", { class: "stat-label" }, label),
    note ? h("small", { class: "muted" }, note) : null);
}

function legend(items) {
  return h("ul", { class: "legend" }, items.map(([cls, text]) => h("li", {}, h("span", { class: `swatch ${cls}` }), text)));
}

export async function render(view) {
  view.title("Dashboard");
  const region = h("div", { class: "region" }, h("p", { class: "muted" }, "Loading the last hour…"));
  replace(view.main,
    h("div", { class: "page-head" }, h("h1", { tabindex: -1 }, "Dashboard"), h("p", { class: "muted" }, "The last hour, refreshed every 10 s.")),
    region);

  const load = async () => {
    let data;
    let workers;
    try {
      [data, workers] = await Promise.all([lastHour(view.signal), api("/workers", { signal: view.signal })]);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      replace(region, errorState(err, load));
      return;
    }
    if (!view.alive) return;
    const width = region.clientWidth;
    W = width > 1000 ? 640 : Math.max(320, Math.min(640, width - 40));
    const s = summarise(data.runs);
    const rate = s.successRate === null ? "—" : `${(s.successRate * 100).toFixed(s.successRate === 1 ? 0 : 1)} %`;
    replace(region,
      h("div", { class: "stats" },
        stat("runs in the last hour", String(s.executed), { id: "stat-runs", note: data.complete ? null : "(more than shown)" }),
        stat("success rate", rate, { id: "stat-success", tone: s.successRate === null ? null : s.successRate >= 0.99 ? "ok" : s.successRate >= 0.9 ? "warn" : "bad", note: s.finished ? `${s.succeeded} of ${s.finished} finished runs` : "no finished runs" }),
        stat("failures", String(s.failures), { id: "stat-failures", tone: s.failures ? "bad" : "ok", note: s.killed ? `and ${s.killed} killed` : null }),
        stat("missed ticks", String(s.missed), { id: "stat-missed", tone: s.missed ? "warn" : null, note: s.skipped ? `${s.skipped} skipped (overlap)` : null }),
        stat("running now", String(s.running), { id: "stat-running" }),
        stat("live workers", String(workers.length), { id: "stat-workers", tone: workers.length ? null : "bad", note: `${workers.reduce((n, w) => n + w.capacity, 0)} slots` })),
      !data.runs.length
        ? emptyState("No runs in the last hour", "Charts appear as jobs run.", h("a", { href: "#/jobs" }, "Go to the jobs"))
        : h("div", { class: "cards two" },
          h("section", { class: "card", "aria-labelledby": "chart-rpm" },
            h("h2", { id: "chart-rpm" }, "Runs per minute"),
            runsPerMinuteChart(s.minutes),
            legend([["bar-ok", "succeeded"], ["bar-fail", "failed"], ["bar-other", "killed, skipped, missed"], ["bar-running", "running"]])),
          h("section", { class: "card", "aria-labelledby": "chart-success" },
            h("h2", { id: "chart-success" }, "Success rate"),
            successChart(s.fives),
            h("p", { class: "hint" }, "Succeeded out of the runs that ended on their own (failed, timed out, out of fuel or memory, lost), per five minutes. Killed runs count neither way.")),
          h("section", { class: "card", "aria-labelledby": "failures-title" },
            h("h2", { id: "failures-title" }, "Failures, kills and misses"),
            s.problems.length
              ? h("ul", { class: "plain problems" }, s.problems.map((run) => h("li", {},
                statusBadge(run.status, run.missed_count > 1 ? `×${run.missed_count}` : null), " ",
                h("a", { href: `#/jobs/${encodeURIComponent(run.job)}` }, run.job), " ",
                h("a", { href: `#/runs/${run.run_id}`, class: "mono small" }, shortId(run.run_id)), " ",
                h("small", { class: "muted" }, relTime(run.tick)),
                run.error ? h("small", { class: "error-text muted" }, run.error) : null)))
              : h("p", { class: "muted" }, "None in the last hour.")),
          h("section", { class: "card", "aria-labelledby": "slowest-title" },
            h("h2", { id: "slowest-title" }, "Slowest jobs"),
            s.slowest.length
              ? [slowestChart(s.slowest), legend([["bar-max", "longest run"], ["bar-avg", "average"]])]
              : h("p", { class: "muted" }, "No finished runs yet."))));
  };
  await load();
  view.every(10000, load);
}
