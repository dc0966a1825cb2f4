// The console: a small hash-routed page over the JSON API. No build step, no CDN.
"use strict";

const main = document.getElementById("main");

async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem("sandcron-token");
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch("/api/v1" + path, { headers });
  if (response.status === 401) {
    const entered = prompt("This server needs a token:");
    if (entered) { sessionStorage.setItem("sandcron-token", entered); return api(path); }
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))));
}

function status(text) { return el("span", { class: "status-" + text }, text); }

async function jobs() {
  const list = await api("/jobs");
  if (list.length === 0) return el("p", {}, "No jobs yet. Create one with `sandcron job apply -f job.toml`.");
  return table(["Name", "Kind", "Schedule", "Status", "Next run", "Last run"], list.map((job) => [
    el("a", { href: "#runs/" + job.name }, job.name), Object.keys(job.kind)[0],
    job.schedule + " (" + job.explain + ")", status(job.status), job.next_run || "—",
    job.last_run ? status(job.last_run.status) : "—",
  ]));
}

async function runs(job) {
  const page = await api("/runs?limit=100" + (job ? "&job=" + encodeURIComponent(job) : ""));
  return table(["Run", "Job", "Tick", "Trigger", "Status", "Exit", "Error"], page.runs.map((run) => [
    el("a", { href: "#run/" + run.run_id }, run.run_id), run.job, run.tick, run.trigger,
    status(run.status), run.exit_code ?? "", run.error || "",
  ]));
}

async function run(id) {
  const record = await api("/runs/" + id);
  const out = await api("/runs/" + id + "/output?limit=5000");
  const pre = el("pre", {});
  for (const chunk of out.chunks) pre.append(el("span", { class: chunk.stream }, chunk.data));
  return el("div", {}, el("h2", {}, record.job + " · " + record.run_id), status(record.status), pre);
}

async function workers() {
  const list = await api("/workers");
  return table(["Worker", "Host", "Capacity", "Running", "Native", "Uptime (s)"], list.map((w) => [
    w.id, w.hostname, w.capacity, w.running, w.allow_native ? "yes" : "no", w.uptime_s,
  ]));
}

async function route() {
  const [page, arg] = location.hash.slice(1).split("/");
  try {
    const view = page === "runs" ? await runs(arg) : page === "run" ? await run(arg)
      : page === "workers" ? await workers() : await jobs();
    main.replaceChildren(view);
  } catch (error) {
    main.replaceChildren(el("p", { class: "stderr" }, "Error: " + error.message));
  }
}

window.addEventListener("hashchange", route);
route();
