// End-to-end tests of the web console in a real browser: playwright-core
// drives Debian's chromium against a real `sandcron dev`. Started by the Rust
// e2e test tests/e2e/console.rs, which starts the servers and passes:
//
//   SANDCRON_URL          a `sandcron dev` without tokens (every caller is admin)
//   SANDCRON_AUTH_URL     a `sandcron dev` with tokens
//   SANDCRON_VIEWER_TOKEN, SANDCRON_OPERATOR_TOKEN, SANDCRON_ADMIN_TOKEN
//                         tokens of the second server
//   SANDCRON_EXAMPLE_WASM an example guest to upload (target/guests/rust-module.wasm)
//   SANDCRON_NET_PROBE_WASM a component that makes the calls its args ask for
//                         (target/guests/net-probe.wasm: `get URL` is an HTTP GET)
//   SANDCRON_KV_PROBE_WASM a component that keeps key-value state as its args say
//                         (target/guests/kv-probe.wasm: `incr KEY N`, `set KEY VALUE`)
//   SANDCRON_REFUSED_WASM a module the server must refuse (imports env::host_fn)
//   SANDCRON_SLEEP_WASM   a module that prints "sleeping" and sleeps for a minute
//   ARTIFACT_DIR          where screenshots go (under target/)
//   DOCS_SCREENSHOTS_DIR  optional: also write the README's screenshots there
//
// Every wait has a deadline and waits for a condition (Playwright's
// auto-waiting, locator.waitFor, page.waitForFunction); nothing sleeps.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run this through tests/e2e/console.rs`);
  return value;
};
const BASE = env("SANDCRON_URL");
const AUTH_BASE = env("SANDCRON_AUTH_URL");
const VIEWER_TOKEN = env("SANDCRON_VIEWER_TOKEN");
const OPERATOR_TOKEN = env("SANDCRON_OPERATOR_TOKEN");
const ADMIN_TOKEN = env("SANDCRON_ADMIN_TOKEN");
const EXAMPLE_WASM = env("SANDCRON_EXAMPLE_WASM");
const NET_PROBE_WASM = env("SANDCRON_NET_PROBE_WASM");
const KV_PROBE_WASM = env("SANDCRON_KV_PROBE_WASM");
const REFUSED_WASM = env("SANDCRON_REFUSED_WASM");
const SLEEP_WASM = env("SANDCRON_SLEEP_WASM");
const ARTIFACTS = env("ARTIFACT_DIR");
const DOCS = process.env.DOCS_SCREENSHOTS_DIR || null;

/** Deadlines, in milliseconds. */
const SHORT = 10_000;
const RUNS = 20_000;
/** How soon a killed run must show as killed: the issue asks for a second. */
const KILL_SHOWN = 1_000;

let browser;
let context;
let page;
const pageErrors = [];

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  if (DOCS) mkdirSync(DOCS, { recursive: true });
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: "light", timezoneId: "UTC" });
  context.setDefaultTimeout(SHORT);
  page = await context.newPage();
  page.on("pageerror", (err) => pageErrors.push(err.message));
  page.on("console", (message) => {
    if (message.type() === "error" && !/status of (401|404|409|412|422)/.test(message.text())) pageErrors.push(message.text());
  });
});

after(async () => {
  await browser?.close();
});

/** Saves a screenshot as an artifact (and, for the README's set, into docs/console). */
async function shot(name, { docs = false, target = page } = {}) {
  const file = join(ARTIFACTS, `${name}.png`);
  // A full-page shot keeps the sticky header where the page was scrolled to.
  await target.evaluate(() => window.scrollTo(0, 0));
  if (docs) {
    // The README's pictures show the page, not the notices of earlier steps.
    await target.evaluate(() => {
      document.activeElement?.blur();
      document.getElementById("toasts").replaceChildren();
    });
  }
  await target.screenshot({ path: file, fullPage: true });
  if (docs && DOCS) copyFileSync(file, join(DOCS, `${name}.png`));
}

/** The API of the server without tokens, for facts the console's actions should have caused. */
async function apiGet(path) {
  const response = await fetch(`${BASE}/api/v1${path}`);
  assert.equal(response.status, 200, `GET ${path}`);
  return response.json();
}

/** PUT of a job body on the server without tokens (for a job the editor then opens). */
async function apiPutJob(name, body) {
  const response = await fetch(`${BASE}/api/v1/jobs/${name}`, {
    method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, 201, `PUT /jobs/${name}: ${text}`);
  return JSON.parse(text);
}

/** The body of a job view: what was PUT, without the server's bookkeeping. */
function specOf(view) {
  const { name, meta, revision, status, reason, owner, explain, next_run, last_run, running, pending, history_unavailable, ...spec } = view;
  return spec;
}

/** Fills a shell job's command in the editor. */
async function shellCommand(command) {
  await page.getByLabel("Shell command").check();
  await page.getByLabel("Command", { exact: true }).fill(command);
}

/** A checkbox of a labelled group in the editor (the jobs a job starts, alert statuses). */
function choice(group, label) {
  return page.getByRole("group", { name: group }).getByLabel(label, { exact: true });
}

/** Opens a console page and waits for its heading. */
async function open(hash, heading) {
  const url = `${BASE}/${hash}`;
  // Going to the very URL the page shows would not render it afresh.
  if (page.url() === url) await page.reload();
  else await page.goto(url);
  await page.getByRole("heading", { level: 1, name: heading }).waitFor();
}

function row(name) {
  return page.locator(`tr[data-job="${name}"]`);
}

/** Fills the editor's common fields for a new job. */
async function newJob(name, schedule, zone = "UTC") {
  await open("#/jobs/new", "New job");
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("Cron expression").fill(schedule);
  await fillZone(zone);
  await previewIn(zone);
}

/** Waits for the schedule preview of `zone`: the form's layout is settled then. */
async function previewIn(zone) {
  await page.locator("#schedule-preview", { hasText: `fire times in ${zone}:` }).waitFor();
}

/** Clicks Run now on a job's page and follows the notice's link to the new run. */
async function runNowAndOpen(name) {
  await page.getByRole("button", { name: `Run ${name} now` }).click();
  await page.locator(".toast", { hasText: `Run of ${name} requested` }).getByRole("link", { name: "open the run" }).click({ timeout: 10_000 });
  await page.locator("#output-title").waitFor();
}

/** Types a time zone and closes the browser's suggestion list, as a user would. */
async function fillZone(zone) {
  const input = page.getByLabel("Time zone");
  await input.fill(zone);
  await input.press("Escape");
}

/** Fails if `value` is anywhere in the page: its HTML, its text, or the value of a field. */
async function assertNotInPage(value, target = page) {
  assert.ok(!(await target.content()).includes(value), "the value is not in the page's HTML");
  assert.ok(!(await target.locator("body").innerText()).includes(value), "the value is not in the page's text");
  const fields = await target.evaluate((v) => [...document.querySelectorAll("input, textarea, select")]
    .filter((field) => field.value.includes(v)).map((field) => field.id || field.name), value);
  assert.deepEqual(fields, [], "no field holds the value");
}

async function save(name) {
  await page.getByRole("button", { name: "Create job" }).click();
  await page.getByRole("heading", { level: 1, name: new RegExp(`^${name}`) }).waitFor();
}

test("the jobs page starts empty and says what to do", async () => {
  await open("#/jobs", "Jobs");
  await page.getByText("No jobs yet").waitFor();
  await page.getByRole("link", { name: "Create the first job" }).waitFor();
  // Role-aware: the local dev server makes every caller admin.
  assert.equal(await page.locator("#who [data-role]").textContent(), "admin");
});

test("a bad schedule is refused with the error naming the field", async () => {
  await open("#/jobs/new", "New job");
  const schedule = page.getByLabel("Cron expression");
  await schedule.fill("0 25 * * *");
  const error = page.locator("#job-schedule-error");
  await error.waitFor({ state: "visible" });
  assert.match(await error.textContent(), /hour field "25": 25 is out of range 0-23/);
  assert.equal(await schedule.getAttribute("aria-invalid"), "true");
  await schedule.fill("0 9 * * MON-FRI");
  await fillZone("Mars/Olympus");
  const zoneError = page.locator("#job-timezone-error");
  await zoneError.waitFor({ state: "visible" });
  assert.match(await zoneError.textContent(), /unknown time zone "Mars\/Olympus"/);
  await error.waitFor({ state: "hidden" });
  await shot("editor-errors");
  // Saving anyway shows the server's answer at the field too.
  await page.getByLabel("Name", { exact: true }).fill("bad");
  await fillZone("UTC");
  // The zone's error goes away with the new preview; click only once it has.
  await previewIn("UTC");
  await zoneError.waitFor({ state: "hidden" });
  await page.getByLabel("Shell command").check();
  await page.getByLabel("Command", { exact: true }).fill("true");
  await schedule.fill("61 * * * *");
  await page.getByRole("button", { name: "Create job" }).click();
  await page.locator("#form-error", { hasText: 'schedule: minute field "61"' }).waitFor();
  await page.locator("#job-schedule-error", { hasText: "61 is out of range 0-59" }).waitFor();
});

test("a refused module shows the server's reason", async () => {
  await open("#/jobs/new", "New job");
  await page.locator("#module-file").setInputFiles(REFUSED_WASM);
  const refusal = page.locator("#upload-error");
  await refusal.waitFor();
  assert.match(await refusal.textContent(), /env::host_fn/);
});

test("upload an example module and create a job from it with a seconds schedule", async () => {
  await newJob("greeter", "*/2 * * * * *", "Europe/Berlin");
  // The preview: the schedule in words and the next five fire times in the job's zone.
  await page.locator("#schedule-explain", { hasText: "every 2 seconds" }).waitFor();
  const times = await page.locator("#fire-times li").allTextContents();
  assert.equal(times.length, 5, `five fire times: ${times}`);
  for (const time of times) assert.match(time, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d GMT\+1$/);
  await page.getByLabel("Description").fill("Greets every two seconds (the rust-module example)");

  await page.locator("#module-file").setInputFiles(EXAMPLE_WASM);
  const uploaded = page.locator("#upload-ok");
  await uploaded.waitFor();
  const digest = (await page.locator("#upload-digest").textContent()).trim();
  assert.match(digest, /^sha256:[0-9a-f]{64}$/);
  assert.match(await uploaded.textContent(), /module \(WASI preview 1\)/);
  assert.equal(await page.locator("#job-module").inputValue(), digest);
  await page.getByLabel("Arguments").fill("--verbose");
  await shot("editor", { docs: true });

  await save("greeter");
  const job = await apiGet("/jobs/greeter");
  assert.equal(job.kind.wasm.module, digest);
  assert.deepEqual(job.kind.wasm.args, ["--verbose"]);
  assert.equal(job.timezone, "Europe/Berlin");
  assert.equal(job.schedule, "*/2 * * * * *");
});

test("runs appear on the job's page, and a run shows its output", async () => {
  await open("#/jobs/greeter", /^greeter/);
  // The history refreshes itself: wait for three succeeded runs.
  await page.waitForFunction(
    () => document.querySelectorAll('.runs-table tr[data-status="succeeded"]').length >= 3,
    null,
    { timeout: RUNS },
  );
  await shot("job");
  // The whole page is in the job's zone (Berlin), not the browser's (UTC):
  // the schedule, the history's ticks and the dates of the job itself.
  await page.locator(".zone-note", { hasText: "Times in the job's zone, Europe/Berlin." }).waitFor();
  const [first] = (await apiGet("/runs?job=greeter&limit=1")).runs;
  const shown = await page.locator(`tr[data-run="${first.run_id}"] td[data-label=Tick] .stack`).evaluate((cell) => cell.firstChild.textContent);
  const berlin = new Intl.DateTimeFormat("sv-SE", { timeZone: "Europe/Berlin", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  assert.equal(shown, berlin.format(new Date(first.tick)), `tick ${first.tick}`);
  assert.match(await page.locator("dt", { hasText: "Created" }).locator("xpath=following-sibling::dd[1]").textContent(), /GMT\+1|CET/);
  assert.equal(await page.locator("#job-module-name").textContent(), "rust-module.wasm");
  await page.locator('.runs-table tr[data-status="succeeded"] a[href^="#/runs/"]').first().click();
  await page.locator("#output-lines li", { hasText: "hello from rust-module: job=greeter" }).waitFor();
  // The guest's structured log line went to stderr, and is marked so.
  await page.locator("#output-lines li.stderr").first().waitFor();
  await page.locator("#run-status [data-status=succeeded]").waitFor();
  await page.getByText("Result", { exact: true }).waitFor();
  assert.equal(await page.locator("#egress").count(), 0, "no network calls shown for a job without egress");
});

/** The run of `netprobe` whose egress ledger the phone test shows again. */
let ledgerRunId = null;

test("a component's egress is written in the editor, and a bad entry is refused at its line", async () => {
  await newJob("netprobe", "@yearly");
  await page.locator("#module-file").setInputFiles(NET_PROBE_WASM);
  await page.locator("#upload-ok").waitFor();
  assert.equal(await page.locator("#upload-capabilities").textContent(), "http, sockets");
  await page.locator("#job-egress-module", { hasText: "The chosen component can use: http, sockets." }).waitFor();
  // One call to the dev server itself (the dev worker's policy allows
  // loopback), one to a name no entry lists: refused before any lookup.
  await page.getByLabel("Arguments").fill(`get\n${BASE}/healthz\nget\nhttp://example.invalid/`);
  const egress = page.getByLabel(/^Egress/);
  // A plain mistake is pointed out while typing…
  await egress.fill("api.example.com");
  await page.locator("#job-egress-check", { hasText: 'line 1: "api.example.com" needs a scheme' }).waitFor();
  // …the rest is the server's to judge: its 422 is shown at the field, naming the entry's line.
  await egress.fill(`${BASE}\nhttps://example.com:99999`);
  await page.locator("#job-egress-check").waitFor({ state: "hidden" });
  await page.getByRole("button", { name: "Create job" }).click();
  const error = page.locator("#job-egress-error");
  await error.waitFor({ state: "visible" });
  assert.match(await error.textContent(), /^line 2: "https:\/\/example\.com:99999": port "99999" is not a number from 1 to 65535$/);
  assert.match(await page.locator("#form-error").textContent(), /^kind\.wasm\.egress\[1\]: /);
  assert.equal(await egress.getAttribute("aria-invalid"), "true");
  // The keyboard focus is on the field, with the bad entry selected.
  assert.equal(await page.evaluate(() => {
    const area = document.activeElement;
    return area.id === "job-egress" ? area.value.slice(area.selectionStart, area.selectionEnd) : null;
  }), "https://example.com:99999");
  await shot("editor-egress-error");
  assert.equal((await fetch(`${BASE}/api/v1/jobs/netprobe`)).status, 404);

  await egress.fill(BASE);
  await page.locator("#network-limits summary").click();
  await page.getByLabel("Requests", { exact: true }).fill("20");
  await page.getByLabel("Bytes received").fill("2097152");
  await page.locator("#job-net-bytes-in-hint", { hasText: "2.0 MiB" }).waitFor();
  await shot("editor-egress");
  await save("netprobe");
  const saved = await apiGet("/jobs/netprobe");
  assert.deepEqual(saved.kind.wasm.egress, [BASE]);
  assert.deepEqual(saved.kind.wasm.network, {
    requests: 20, concurrent: 8, bytes_out: 10 * 1024 * 1024, bytes_in: 2097152, connect_timeout_s: 10, first_byte_timeout_s: 30,
  });
  await page.locator("#job-egress-list", { hasText: BASE }).waitFor();

  // Editing keeps the egress and the limits: unchanged, the job is saved as it was.
  await open("#/jobs/netprobe/edit", "Edit netprobe");
  assert.equal(await egress.inputValue(), BASE);
  assert.equal(await page.locator("#network-limits").getAttribute("open"), "", "limits that are not the defaults are shown");
  assert.equal(await page.getByLabel("Requests", { exact: true }).inputValue(), "20");
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.getByRole("heading", { level: 1, name: /^netprobe/ }).waitFor();
  const again = await apiGet("/jobs/netprobe");
  assert.ok(again.revision > saved.revision, "saved");
  assert.deepEqual(specOf(again), specOf(saved));

  // A core module has no network interface: the editor says so, and the server refuses egress for it.
  await open("#/jobs/greeter/edit", "Edit greeter");
  await page.locator("#job-egress-module", { hasText: "core module (WASI preview 1): it cannot use the network" }).waitFor();
  await egress.fill("https://api.example.com");
  await page.locator("#job-egress-module.is-warn", { hasText: "the server refuses egress for it" }).waitFor();
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.locator("#job-egress-error", { hasText: "only components (WASI 0.2, wasi:http and wasi:sockets) can use egress" }).waitFor();
  assert.equal((await apiGet("/jobs/greeter")).kind.wasm.egress, undefined);
});

test("a run lists its network calls: what was reached, what was refused, and the totals", async () => {
  // The jobs table marks a job that may reach the network.
  await open("#/jobs?q=netprobe", "Jobs");
  assert.equal(await row("netprobe").locator("[data-flag=egress]").getAttribute("title"), `May connect to ${BASE}`);
  await open("#/jobs/netprobe", /^netprobe/);
  await runNowAndOpen("netprobe");
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: RUNS });
  ledgerRunId = new URL(page.url()).hash.replace("#/runs/", "");
  const rows = page.locator("#egress-ledger tbody tr");
  await rows.nth(1).waitFor();
  assert.equal(await rows.count(), 2);
  const cells = async (index) => rows.nth(index).locator("th, td").allInnerTexts();
  const [, kind, method, destination, outcome, status] = await cells(0);
  assert.deepEqual([kind, method, outcome, status], ["http", "GET", "ok", "HTTP 200"]);
  assert.equal(destination, `${BASE}/healthz\n→ ${new URL(BASE).host}`);
  const refused = await cells(1);
  assert.equal(refused[3], "http://example.invalid:80/");
  assert.equal(refused[4], "refused");
  assert.match(refused[5], /^http:\/\/example\.invalid:80 is not in the job's egress/);
  assert.equal(await rows.nth(1).locator(".badge.tone-warn").count(), 1, "refused has the warning tone");
  assert.match(await page.locator("#egress-totals").textContent(), /^2 calls1 ok1 refused0 failed\d+ B sent · [\d.]+ (B|KiB) received$/);
  assert.equal(await page.locator("#egress-dropped").count(), 0);
  // What the guest saw, in its output.
  await page.locator("#output-lines li", { hasText: "get http://example.invalid/ error" }).waitFor();
  await shot("run-egress");

  // A run that made more calls than its ledger keeps says how many were only counted.
  await page.route(`**/api/v1/runs/${ledgerRunId}`, async (route) => {
    const run = await (await route.fetch()).json();
    run.egress.totals = { ...run.egress.totals, calls: 1502, failed: 1500, dropped_entries: 1500 };
    await route.fulfill({ json: run });
  });
  await page.reload();
  await page.locator("#egress-dropped", { hasText: "Only the first 2 calls are listed: 1,500 calls after them are counted in the totals but not kept." }).waitFor();
  await page.locator("#egress-totals [data-total=failed] .tone-bad", { hasText: "1,500 failed" }).waitFor();
  await page.unrouteAll();
});

test("a running job's output arrives live, stdout and stderr interleaved", async () => {
  await newJob("ticker", "@yearly");
  await page.getByLabel("Shell command").check();
  await page.getByLabel("Command", { exact: true }).fill('for i in 1 2 3 4 5; do echo "line $i"; echo "warning $i" >&2; sleep 1; done');
  await save("ticker");

  await runNowAndOpen("ticker");
  await page.locator("#run-status [data-status=running]").waitFor();
  // The first lines are there while the run is still running…
  await page.locator("#output-lines li.stdout", { hasText: "line 1" }).waitFor();
  assert.equal(await page.locator("#output-state").getAttribute("data-state"), "live");
  assert.equal(await page.locator("#run-status [data-status=running]").count(), 1, "still running after line 1");
  assert.equal(await page.locator("#output-lines li", { hasText: "line 5" }).count(), 0, "line 5 not yet written");
  await page.locator("#output-lines li.stderr", { hasText: "warning 1" }).waitFor();
  await page.locator("#output-lines li", { hasText: "line 3" }).waitFor({ timeout: 10_000 });
  await shot("run-live", { docs: true });
  // …and the rest follows without a reload, until the run ends.
  await page.locator("#output-lines li", { hasText: "line 5" }).waitFor({ timeout: 10_000 });
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: 10_000 });
  const lines = await page.locator("#output-lines li").evaluateAll((items) => items.map((li) => `${li.dataset.stream}:${li.querySelector(".text").textContent}`));
  assert.deepEqual(lines.filter((l) => l.startsWith("stdout:")), [1, 2, 3, 4, 5].map((i) => `stdout:line ${i}`));
  assert.deepEqual(lines.filter((l) => l.startsWith("stderr:")), [1, 2, 3, 4, 5].map((i) => `stderr:warning ${i}`));
  assert.equal(lines.length, 10);
  // The output downloads as text, stderr lines marked.
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download" }).click()]);
  const text = readFileSync(await download.path(), "utf8");
  // The two streams are separate pipes, so their relative order may vary.
  assert.match(text, /^line 1$/m);
  assert.match(text, /^\[stderr\] warning 1$/m);
  assert.equal(text.trim().split("\n").length, 10);
});

test("a long-running job is killed from the console", async () => {
  // Upload the sleeping guest on the modules page, then pick it in the editor.
  await open("#/modules", "Modules");
  await page.locator("#modules-file").setInputFiles(SLEEP_WASM);
  const digest = (await page.locator("#modules-upload-result code").textContent()).trim();
  await page.locator(`tr[data-digest="${digest}"]`).waitFor();
  await newJob("sleeper", "@yearly");
  await page.getByLabel("Module", { exact: true }).selectOption(digest);
  await save("sleeper");
  await runNowAndOpen("sleeper");
  await page.locator("#output-lines li", { hasText: "sleeping" }).waitFor();
  await page.locator("#run-status [data-status=running]").waitFor();
  // A kill asks first, as a delete does: cancelled, the run goes on.
  const dialog = page.locator("#confirm-dialog");
  await page.getByRole("button", { name: "Kill", exact: true }).click();
  await dialog.getByText("ends killed").waitFor();
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await dialog.waitFor({ state: "hidden" });
  assert.equal(await page.locator("#run-status [data-status]").getAttribute("data-status"), "running");
  await page.getByRole("button", { name: "Kill", exact: true }).click();
  const started = Date.now();
  await dialog.getByRole("button", { name: "Kill run" }).click();
  await page.locator("#run-status [data-status=killed]").waitFor({ timeout: KILL_SHOWN });
  console.log(`# the run view showed killed ${Date.now() - started} ms after Kill was clicked`);
  await page.locator("#output-state[data-state=ended]").waitFor();
  assert.equal(await page.locator("#kill-run").count(), 0, "no Kill button on an ended run");
  await shot("run-killed");
  const runs = await apiGet("/runs?job=sleeper");
  assert.equal(runs.runs[0].status, "killed");
});

test("a running run that has written nothing yet says it is waiting for output", async () => {
  await apiPutJob("quiet", { schedule: "@yearly", timezone: "UTC", kind: { shell: { command: "sleep 2; echo awake" } } });
  await open("#/jobs/quiet", /^quiet/);
  await runNowAndOpen("quiet");
  await page.locator("#output-waiting").waitFor();
  assert.ok(await page.locator("#output-lines").isHidden(), "no empty output box beside the note");
  await page.locator("#output-lines li", { hasText: "awake" }).waitFor({ timeout: 10_000 });
  assert.ok(await page.locator("#output-waiting").isHidden());
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: 10_000 });
  const deleted = await fetch(`${BASE}/api/v1/jobs/quiet`, { method: "DELETE" });
  assert.equal(deleted.status, 204, await deleted.text());
});

test("a notice does not follow the user to the next page, unless the move raised it", async () => {
  await open("#/jobs", "Jobs");
  const ui = "/js/ui.js";
  await page.evaluate(async (path) => (await import(path)).toast("about the jobs page"), ui);
  const stale = page.locator(".toast", { hasText: "about the jobs page" });
  await stale.waitFor();
  // Old enough to have been read where it was raised.
  await page.waitForFunction(() => [...document.querySelectorAll(".toast")].every((t) => Date.now() - Number(t.dataset.born) > 1600));
  await page.evaluate(async (path) => (await import(path)).toast("raised by the move"), ui);
  await page.evaluate(() => { location.hash = "#/runs"; });
  await page.getByRole("heading", { level: 1, name: "Runs" }).waitFor();
  await stale.waitFor({ state: "detached" });
  await page.locator(".toast", { hasText: "raised by the move" }).waitFor();
});

test("a shell job is killed from its job page", async () => {
  await newJob("napper", "@yearly");
  await page.getByLabel("Shell command").check();
  await page.getByLabel("Command", { exact: true }).fill("echo going to sleep; sleep 300");
  await save("napper");
  await page.getByRole("button", { name: "Run napper now" }).click();
  await page.getByRole("heading", { level: 1, name: /^napper/ }).locator("[data-status=running]").waitFor({ timeout: 10_000 });
  await page.getByRole("button", { name: "Kill run" }).click();
  const dialog = page.locator("#confirm-dialog");
  await dialog.getByText("The job's schedule is not changed.").waitFor();
  await dialog.getByRole("button", { name: "Kill run" }).click();
  await page.locator('.runs-table tr[data-status="killed"]').waitFor({ timeout: 10_000 });
  await page.getByRole("heading", { level: 1, name: /^napper/ }).locator("[data-status=scheduled]").waitFor({ timeout: 10_000 });
});

test("a failed run's retry waits on the job page until its backoff ends", async () => {
  // One tick, three seconds from now (UTC); it fails, and its retry waits ten minutes.
  const at = new Date(Date.now() + 3000);
  const cron = `${at.getUTCSeconds()} ${at.getUTCMinutes()} ${at.getUTCHours()} ${at.getUTCDate()} ${at.getUTCMonth() + 1} *`;
  await apiPutJob("shaky", {
    schedule: cron,
    timezone: "UTC",
    kind: { shell: { command: "echo failing; exit 1" } },
    retry: { max: 1, backoff_s: 600 },
  });
  await open("#/jobs/shaky", /^shaky/);
  await page.locator('.runs-table tr[data-status="failed"]').waitFor({ timeout: RUNS });
  const waiting = page.locator(".pending-runs li", { hasText: "retry (attempt 2)" });
  await waiting.waitFor({ timeout: RUNS });
  const text = await waiting.textContent();
  assert.match(text, /starts in (9|10) min/, text);
  assert.match(text, /requested by retry of run [0-9A-Z]{26}/, text);
  const [pending] = (await apiGet("/jobs/shaky")).pending;
  assert.equal(pending.trigger, "retry");
  assert.equal(pending.attempt, 2);
  // Tidy up: the pending retry goes with the job.
  const deleted = await fetch(`${BASE}/api/v1/jobs/shaky`, { method: "DELETE" });
  assert.equal(deleted.status, 204, await deleted.text());
});

test("a duplicated job's output is cut at its limit, and the run says so", async () => {
  await open("#/jobs/napper", /^napper/);
  await page.getByRole("link", { name: "Duplicate napper" }).click();
  await page.getByRole("heading", { level: 1, name: "New job" }).waitFor();
  const name = page.getByLabel("Name", { exact: true });
  assert.equal(await name.inputValue(), "napper-copy");
  assert.equal(await page.getByLabel("Command", { exact: true }).inputValue(), "echo going to sleep; sleep 300");
  await name.fill("flood");
  await page.getByLabel("Command", { exact: true }).fill("yes 0123456789 | head -c 5000");
  await page.locator("#job-shell-output").fill("1");
  await save("flood");
  await runNowAndOpen("flood");
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: 10_000 });
  await page.locator("#output-truncated").waitFor();
  await page.locator("#output-lines li.stderr", { hasText: "output truncated at 1024 bytes" }).waitFor();
  const [run] = (await apiGet("/runs?job=flood")).runs;
  assert.equal(run.truncated, true);
  await shot("run-truncated");
});

test("an HTTP job is offered only where a worker runs them, and its run shows the response", async () => {
  // Where no live worker runs HTTP jobs the kind is offered disabled, with the reason.
  await page.route("**/api/v1/workers", async (route) => {
    const workers = await (await route.fetch()).json();
    await route.fulfill({ json: workers.map((w) => ({ ...w, http: false })) });
  });
  await open("#/jobs/new", "New job");
  assert.equal(await page.getByLabel("HTTP request").isDisabled(), true);
  await page.locator("#http-why", { hasText: "No live worker runs HTTP jobs" }).waitFor();
  await page.unroute("**/api/v1/workers");

  // The dev server's worker does (its default allow-list includes loopback):
  // the job calls the dev server itself.
  await newJob("healthz", "@yearly");
  await page.getByLabel("HTTP request").check();
  await page.getByLabel("Method").selectOption("GET");
  await page.getByLabel("URL", { exact: true }).fill(`${BASE}/healthz`);
  await page.getByLabel("Headers").fill("Accept: text/plain\nX-Probe: console");
  await page.getByLabel("Expected statuses").fill("200, 204");
  await page.locator("#job-http-timeout").fill("5");
  // HTTP jobs have headers, not an environment.
  assert.equal(await page.locator("#job-env").isVisible(), false);
  await shot("editor-http", { docs: true });
  await save("healthz");
  assert.deepEqual((await apiGet("/jobs/healthz")).kind, {
    http: { method: "GET", url: `${BASE}/healthz`, headers: { Accept: "text/plain", "X-Probe": "console" }, timeout_s: 5, expect_status: [200, 204], output_kb: 1024 },
  });
  await page.locator("#http-request", { hasText: `GET ${BASE}/healthz` }).waitFor();
  await runNowAndOpen("healthz");
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: RUNS });
  await page.locator("#output-lines li", { hasText: `> GET ${BASE}/healthz` }).waitFor();
  await page.locator("#output-lines li", { hasText: "< HTTP/1.1 200 OK" }).waitFor();
  await shot("run-http");
  // The jobs table names the kind, with the method and the host.
  await open("#/jobs?kind=http", "Jobs");
  await row("healthz").locator(".kind-http", { hasText: "http" }).waitFor();
  await row("healthz").locator(".http-target", { hasText: `GET ${new URL(BASE).host}` }).waitFor();
  assert.equal(await page.locator("tbody tr").count(), 1, "the kind filter knows http");
});

test("a job started by another's success links to the run that started it", async () => {
  await newJob("report", "@yearly");
  await shellCommand('echo "parent=$SANDCRON_PARENT_JOB/$SANDCRON_PARENT_STATUS"');
  await save("report");
  await newJob("extract", "@yearly");
  await shellCommand("echo extracted");
  await choice("Starts on success", "report").check();
  await save("extract");
  assert.deepEqual((await apiGet("/jobs/extract")).on_success, ["report"]);
  await page.locator("#job-on-success-list", { hasText: "report" }).waitFor();
  await runNowAndOpen("extract");
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: RUNS });
  const parentId = new URL(page.url()).hash.replace("#/runs/", "");
  // The child's run is in its job's history, marked with the parent's job.
  await open("#/jobs/report", /^report/);
  await page.getByText("extract (on success)").waitFor();
  const child = page.locator('.runs-table tr[data-status="succeeded"]', { has: page.locator(".parent-link") });
  await child.waitFor({ timeout: RUNS });
  assert.equal(await child.locator(".parent-link").textContent(), "extract");
  assert.match(await child.textContent(), /dependency/);
  await child.locator("th a").click();
  const parent = page.locator("#parent-run");
  await parent.waitFor();
  assert.match(await parent.textContent(), /^extract run /);
  await page.locator("#output-lines li", { hasText: "parent=extract/succeeded" }).waitFor();
  await shot("run-dependency");
  await parent.click();
  await page.getByRole("heading", { level: 1, name: parentId }).waitFor();
});

test("an ended run is re-run for its tick from its page, after a confirmation", async () => {
  await apiPutJob("again", {
    schedule: "@yearly", timezone: "UTC",
    kind: { shell: { command: 'echo "tick=$SANDCRON_TICK trigger=$SANDCRON_TRIGGER"' } },
  });
  await open("#/jobs/again", /^again/);
  await runNowAndOpen("again");
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: RUNS });
  const originalId = new URL(page.url()).hash.replace("#/runs/", "");
  const { tick } = await apiGet(`/runs/${originalId}`);
  // It asks first; cancelling asks nothing of the server.
  const dialog = page.locator("#confirm-dialog");
  await page.locator("#rerun-run").click();
  await dialog.getByText(`Re-run run ${originalId.slice(-8)}?`).waitFor();
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await dialog.waitFor({ state: "hidden" });
  assert.deepEqual((await apiGet("/jobs/again")).pending, []);
  // Confirmed: the page says what the server did and links to the new run.
  await page.locator("#rerun-run").click();
  await dialog.getByRole("button", { name: "Re-run", exact: true }).click();
  const answer = page.locator("#rerun-answer");
  await answer.waitFor();
  assert.match(await answer.textContent(), /^Re-run requested: run /);
  await shot("run-rerun");
  await answer.locator("a#rerun-new").click({ timeout: SHORT });
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: RUNS });
  const rerunId = new URL(page.url()).hash.replace("#/runs/", "");
  assert.notEqual(rerunId, originalId);
  const rerun = await apiGet(`/runs/${rerunId}`);
  assert.deepEqual([rerun.trigger, rerun.rerun_of, rerun.tick], ["rerun", originalId, tick]);
  await page.locator("#output-lines li", { hasText: `tick=${tick} trigger=rerun` }).waitFor();
  // The new run's page links back to the one it re-ran.
  const back = page.locator("#rerun-of");
  assert.equal(await back.textContent(), `run ${originalId.slice(-8)}`);
  await back.click();
  await page.getByRole("heading", { level: 1, name: originalId }).waitFor();
});

test("a dependency cycle is refused with the server's message at the field", async () => {
  await open("#/jobs/report/edit", "Edit report");
  await choice("Starts on success", "extract").check();
  await page.getByRole("button", { name: "Save changes" }).click();
  const error = page.locator("#job-on-success-error");
  await error.waitFor({ state: "visible" });
  assert.match(await error.textContent(), /dependencies would form a cycle: report -> extract -> report/);
  assert.equal(await page.locator("#job-on-success").getAttribute("aria-invalid"), "true");
  // The keyboard focus is taken to the field.
  await page.waitForFunction(() => document.activeElement?.closest("#job-on-success") !== null);
  await shot("editor-cycle");
  assert.equal((await apiGet("/jobs/report")).on_success, undefined);
});

test("alerts set in the editor survive a reload, and every new field round-trips", async () => {
  await open("#/jobs/extract/edit", "Edit extract");
  await choice("Alert when a run ends", "timed out").check();
  await choice("Alert when a run ends", "failed").check();
  await page.getByLabel("Failure rate above (%)").fill("50");
  await page.getByLabel("Over the last (s)").fill("900");
  await page.getByLabel("Counting at least (runs)").fill("3");
  await page.getByLabel("No success within (s)").fill("600");
  // sandcron dev configures no channels, so the names are free text.
  assert.deepEqual(await apiGet("/alerts/channels"), { channels: [] });
  await page.getByLabel("Channels", { exact: true }).fill("ops, pager");
  // This server lists no channels: the names are accepted, with a warning.
  await page.locator("#job-alert-channels-check", { hasText: "so ops, pager cannot be checked here" }).waitFor();
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.locator("#job-alerts", { hasText: "→ ops, pager" }).waitFor();
  const alerts = { on: ["failed", "timed_out"], failure_rate: { threshold: 0.5, window_s: 900, min_runs: 3 }, no_success_within_s: 600, channels: ["ops", "pager"] };
  assert.deepEqual((await apiGet("/jobs/extract")).alerts, alerts);
  // A reload of the editor shows them as saved (and the dependent kept).
  await open("#/jobs/extract/edit", "Edit extract");
  await page.reload();
  await page.getByRole("heading", { level: 1, name: "Edit extract" }).waitFor();
  for (const status of ["failed", "timed out"]) assert.equal(await choice("Alert when a run ends", status).isChecked(), true, status);
  for (const status of ["killed", "lost"]) assert.equal(await choice("Alert when a run ends", status).isChecked(), false, status);
  assert.equal(await page.getByLabel("Failure rate above (%)").inputValue(), "50");
  assert.equal(await page.getByLabel("Over the last (s)").inputValue(), "900");
  assert.equal(await page.getByLabel("Counting at least (runs)").inputValue(), "3");
  assert.equal(await page.getByLabel("No success within (s)").inputValue(), "600");
  assert.equal(await page.getByLabel("Run longer than (s)").inputValue(), "");
  assert.equal(await page.getByLabel("Channels", { exact: true }).inputValue(), "ops, pager");
  assert.equal(await choice("Starts on success", "report").isChecked(), true);
  // Saving without a change keeps every field as it was, in its order.
  const before = await apiGet("/jobs/extract");
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.getByRole("heading", { level: 1, name: /^extract/ }).waitFor();
  const after = await apiGet("/jobs/extract");
  assert.ok(after.revision > before.revision, "saved");
  assert.deepEqual(specOf(after), specOf(before));

  // The same for a job written through the API with every new field, in
  // orders the editor would not choose, and a body the browser would change.
  const every = {
    schedule: "@yearly", timezone: "Europe/Berlin", description: "Every field of the integrations",
    kind: { http: { method: "POST", url: `${BASE}/healthz?from=console`, headers: { "X-B": "2", "Content-Type": "application/json" }, body: '{"a":\r\n1}', timeout_s: 7, expect_status: [204, 200], output_kb: 8 } },
    completion: "async", result_timeout_s: 90,
    on_success: ["report", "healthz"], on_failure: ["extract"],
    alerts: { on: ["lost", "failed"], failure_rate: { threshold: 0.333, window_s: 120, min_runs: 2 }, no_success_within_s: 3600, expected_duration_s: 60, channels: ["zeta", "alpha"] },
    retention_days: 7,
  };
  const stored = await apiPutJob("roundtrip", every);
  await open("#/jobs/roundtrip/edit", "Edit roundtrip");
  await previewIn("Europe/Berlin");
  assert.equal(await page.getByLabel("HTTP request").isChecked(), true);
  assert.equal(await page.getByLabel("Completion", { exact: true }).inputValue(), "async");
  assert.equal(await page.getByLabel("Result timeout (s)").inputValue(), "90");
  assert.equal(await page.getByLabel("Failure rate above (%)").inputValue(), "33.3");
  assert.equal(await page.getByLabel("Run longer than (s)").inputValue(), "60");
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.getByRole("heading", { level: 1, name: /^roundtrip/ }).waitFor();
  const saved = await apiGet("/jobs/roundtrip");
  assert.ok(saved.revision > stored.revision, "saved");
  assert.deepEqual(specOf(saved), specOf(stored));
  assert.deepEqual(saved.on_success, ["report", "healthz"]);
  assert.deepEqual(saved.alerts.on, ["lost", "failed"]);
  assert.equal(saved.kind.http.body, '{"a":\r\n1}');
  // The jobs table shows what the job does beyond its kind.
  await open("#/jobs?q=roundtrip", "Jobs");
  // allTextContents does not wait: wait for the row's flags to render first.
  await row("roundtrip").locator(".flag").first().waitFor();
  const flags = await row("roundtrip").locator(".flag").allTextContents();
  assert.deepEqual(flags, ["async", "→ 3 dependents", "alerts"]);
});

test("a broadcast job runs a shard per worker, and its run lists the tick's shards", async () => {
  await newJob("fanout", "@yearly");
  await shellCommand('echo "shard $SANDCRON_SHARD_INDEX of $SANDCRON_SHARD_COUNT"');
  const completion = page.getByLabel("Completion", { exact: true });
  await completion.selectOption("async");
  await page.locator("#report-hint", { hasText: "X-Sandcron-Run-Token" }).waitFor();
  await choice("Starts on failure", "report").check();
  await page.getByLabel("Broadcast to every worker").check();
  // The server's rules, mirrored: a broadcast job has no dependents and completes synchronously.
  assert.equal(await completion.isDisabled(), true);
  assert.equal(await completion.inputValue(), "sync");
  assert.equal(await choice("Starts on failure", "report").isDisabled(), true);
  await page.locator("#dependents-broadcast-note").waitFor();
  await page.locator("#completion-broadcast-note").waitFor();
  await page.locator("#report-hint").waitFor({ state: "hidden" });
  await save("fanout");
  const job = await apiGet("/jobs/fanout");
  assert.equal(job.broadcast, true);
  assert.equal(job.completion, undefined);
  assert.equal(job.on_failure, undefined);
  await runNowAndOpen("fanout");
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: RUNS });
  const runId = new URL(page.url()).hash.replace("#/runs/", "");
  // Shards are counted from 1 in the console (SANDCRON_SHARD_INDEX is 0).
  assert.equal(await page.locator("#run-shard").textContent(), "shard 1 of 1");
  await page.locator("#output-lines li", { hasText: "shard 0 of 1" }).waitFor();
  const shards = page.locator("#shard-list li");
  await shards.first().waitFor();
  assert.equal(await shards.count(), 1);
  assert.match(await shards.first().textContent(), /^shard 1 of 1 \(this run\)/);
  await shot("run-shard", { docs: true });

  // With three workers the tick has three shards: the browser is handed the
  // answers a cluster would give (one dev process has one worker).
  const [real] = (await apiGet(`/runs?job=fanout`)).runs;
  // Fake ids: the real one with its random tail replaced (never equal to it).
  const fakeId = (tail) => `${real.run_id.slice(0, 10)}${(real.run_id.slice(10, 24) === "00000000000000" ? "11111111111111" : "00000000000000")}${tail}`;
  const sibling = (index, status) => ({ ...real, run_id: fakeId(`S${index}`), worker: `worker-${index}`, status, shard: { ...real.shard, index, count: 3 } });
  const three = [{ ...real, shard: { ...real.shard, count: 3 } }, sibling(1, "succeeded"), sibling(2, "failed")];
  await page.route(`**/api/v1/runs/${runId}`, (route) => route.fulfill({ json: three[0] }));
  await page.route("**/api/v1/runs?job=fanout&since=*", (route) => route.fulfill({ json: { runs: [three[2], three[0], three[1]], next_cursor: null } }));
  // The history gets them with another job's run of the same tick between them.
  const other = { ...real, job: "healthz", run_id: fakeId("XZ"), shard: undefined };
  await page.route("**/api/v1/runs?job=fanout&limit=*", (route) => route.fulfill({ json: { runs: [three[2], other, three[1], three[0]], next_cursor: null } }));
  await page.reload();
  await page.locator("#run-shard", { hasText: "shard 1 of 3" }).waitFor();
  await page.locator("#shard-list li").nth(2).waitFor();
  assert.deepEqual(await page.locator("#shard-list li").evaluateAll((items) => items.map((li) => li.querySelector("a, strong").textContent)),
    ["shard 1 of 3 (this run)", "shard 2 of 3", "shard 3 of 3"]);
  assert.equal(await page.locator("#shard-list a", { hasText: "shard 2 of 3" }).getAttribute("href"), `#/runs/${three[1].run_id}`);
  // The job's history draws the tick's shards together, in order, as one group.
  await open("#/jobs/fanout", /^fanout/);
  await page.locator(".runs-table tr.shard-row").nth(2).waitFor();
  const rows = await page.locator(".runs-table tbody tr").evaluateAll((trs) => trs.map((tr) => [tr.dataset.run, tr.className]));
  assert.deepEqual(rows, [
    [real.run_id, "shard-row shard-first"], [three[1].run_id, "shard-row"], [three[2].run_id, "shard-row shard-last"], [other.run_id, ""],
  ]);
  await shot("runs-shards");
  await page.unrouteAll();
});

test("an async job's run waits for the reported result", async () => {
  await newJob("export", "@yearly");
  // The command prints its token and result URL, so the test can play the service.
  await shellCommand('echo "token=$SANDCRON_RUN_TOKEN"; echo "url=$SANDCRON_RESULT_URL"');
  await page.getByLabel("Completion", { exact: true }).selectOption("async");
  await page.getByLabel("Result timeout (s)").fill("120");
  await save("export");
  await runNowAndOpen("export");
  // Once the command has ended, the run says until when it waits.
  const waiting = page.locator("#async-wait", { hasText: "The process ended; waiting for the reported result until" });
  await waiting.waitFor({ timeout: RUNS });
  assert.match(await waiting.textContent(), /\(in [12] min\)/);
  const text = async (prefix) => (await page.locator("#output-lines li .text", { hasText: prefix }).textContent()).slice(prefix.length);
  await page.locator("#output-lines li", { hasText: "url=" }).waitFor();
  const [token, url] = [await text("token="), await text("url=")];
  assert.match(url, /\/api\/v1\/runs\/[0-9A-Z]{26}\/result$/);
  await shot("run-async");
  const reported = await fetch(url, {
    method: "POST", headers: { "content-type": "application/json", "x-sandcron-run-token": token },
    body: JSON.stringify({ status: "succeeded", result: { rows: 42 }, output: "exported 42 rows\n" }),
  });
  assert.equal(reported.status, 202, await reported.text());
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: RUNS });
  await page.locator("#async-wait").waitFor({ state: "detached" });
  await page.locator("#output-lines li", { hasText: "exported 42 rows" }).waitFor();
  await page.getByText("Result", { exact: true }).waitFor();
});

test("pause and resume from the jobs table", async () => {
  await open("#/jobs", "Jobs");
  const greeter = row("greeter");
  await greeter.locator(".state [data-status=scheduled], .state [data-status=running]").first().waitFor();
  await greeter.getByRole("button", { name: "Pause greeter" }).click();
  await greeter.locator(".state [data-status=paused]").waitFor();
  await greeter.locator(".next-run", { hasText: "paused" }).waitFor();
  assert.equal((await apiGet("/jobs/greeter")).paused, true);
  // The button became Resume and kept the keyboard focus.
  const resume = greeter.getByRole("button", { name: "Resume greeter" });
  await resume.waitFor();
  await page.waitForFunction(() => document.activeElement?.getAttribute("aria-label") === "Resume greeter");
  // Keyboard: Enter on the focused button resumes.
  await page.keyboard.press("Enter");
  await greeter.locator(".state [data-status=scheduled], .state [data-status=running]").first().waitFor();
  assert.equal((await apiGet("/jobs/greeter")).paused, false);
  // Sorting by a column, and back.
  await page.getByRole("button", { name: "Next run" }).click();
  await page.locator("th[aria-sort=ascending]", { hasText: "Next run" }).waitFor();
  assert.equal(await page.locator("tbody tr").first().getAttribute("data-job"), "greeter");
  await page.getByRole("button", { name: "Name" }).click();
  await page.locator("th[aria-sort=ascending]", { hasText: "Name" }).waitFor();
  await page.getByRole("button", { name: "Name" }).click();
  await page.locator("th[aria-sort=descending]", { hasText: "Name" }).waitFor();
  assert.equal(await page.locator("tbody tr").first().getAttribute("data-job"), "ticker");
  await page.getByRole("button", { name: "Name" }).click();
  // Search and filters; "/" jumps to the search box.
  await page.locator("body").press("/");
  await page.waitForFunction(() => document.activeElement?.id === "job-search");
  await page.getByLabel("Search jobs").fill("tick");
  await row("ticker").waitFor();
  await row("greeter").waitFor({ state: "detached" });
  await page.getByLabel("Search jobs").fill("");
  await page.getByLabel("Filter by kind").selectOption("wasm");
  await row("ticker").waitFor({ state: "detached" });
  await row("greeter").waitFor();
  await page.getByLabel("Filter by kind").selectOption("");
  await row("sleeper").locator(".last-run [data-status=killed]").waitFor();
  await row("napper").locator(".last-run [data-status=killed]").waitFor();
  await shot("jobs", { docs: true });
});

test("the jobs page follows the server's pages to list every job", async () => {
  // The server answers /jobs in pages of up to 500, linked by a `Link`
  // header. Asking it for pages of one job (the real server answers each)
  // makes the console follow the links across every job.
  const all = (await apiGet("/jobs")).map((job) => job.name).sort();
  assert.ok(all.length >= 3, `jobs so far: ${all}`);
  let pages = 0;
  await page.route(/\/api\/v1\/jobs(\?.*)?$/, (route) => {
    const url = new URL(route.request().url());
    if (!url.searchParams.has("limit")) url.searchParams.set("limit", "1");
    pages += 1;
    return route.continue({ url: url.toString() });
  });
  try {
    await open("#/jobs", "Jobs");
    await row(all[all.length - 1]).waitFor();
    const shown = await page.locator("tbody tr[data-job]").evaluateAll((rows) => rows.map((r) => r.dataset.job));
    assert.deepEqual([...shown].sort(), all);
    assert.ok(pages >= all.length, `one request per page: ${pages} for ${all.length} jobs`);
  } finally {
    await page.unroute(/\/api\/v1\/jobs(\?.*)?$/);
  }
});

test("run history filters and pages with a cursor", async () => {
  await open("#/runs?status=killed", "Runs");
  await page.locator('.runs-table tr[data-status="killed"]').first().waitFor();
  assert.equal(await page.locator(".runs-table tbody tr:not([data-status=killed])").count(), 0);
  // The trigger filter comes from the URL, and only manual runs are listed.
  await open("#/runs?trigger=manual", "Runs");
  await page.waitForFunction(() => document.querySelector("#runs-trigger")?.value === "manual");
  await page.locator('.runs-table tr[data-trigger="manual"]').first().waitFor();
  assert.equal(await page.locator(".runs-table tbody tr:not([data-trigger=manual])").count(), 0);
  await open("#/runs?job=greeter&limit=2", "Runs");
  await page.locator(".runs-table tbody tr").nth(1).waitFor();
  const first = await page.locator(".runs-table tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.run));
  assert.equal(first.length, 2);
  await page.getByRole("button", { name: "Older →" }).click();
  await page.waitForFunction((ids) => {
    const shown = [...document.querySelectorAll(".runs-table tbody tr")].map((r) => r.dataset.run);
    return shown.length > 0 && !shown.some((id) => ids.includes(id));
  }, first);
  await page.getByText("page 2").waitFor();
  await page.getByRole("button", { name: "← Newer" }).click();
  await page.getByText("page 1").waitFor();
  await open("#/runs", "Runs");
  await page.locator(".runs-table tbody tr").nth(2).waitFor();
  await shot("runs", { docs: true });
});

test("a job can be edited and deleted with a confirmation", async () => {
  await open("#/jobs/ticker/edit", "Edit ticker");
  await page.getByLabel("Description").fill("Prints five lines");
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.getByText("Prints five lines").waitFor();
  assert.equal((await apiGet("/jobs/ticker")).description, "Prints five lines");
  await page.getByRole("button", { name: "Delete ticker" }).click();
  const dialog = page.locator("#confirm-dialog");
  await dialog.getByText("Delete job ticker?").waitFor();
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await dialog.waitFor({ state: "hidden" });
  assert.equal((await apiGet("/jobs/ticker")).name, "ticker");
  await page.getByRole("button", { name: "Delete ticker" }).click();
  await dialog.getByRole("button", { name: "Delete job" }).click();
  await page.getByRole("heading", { level: 1, name: "Jobs" }).waitFor();
  assert.equal((await fetch(`${BASE}/api/v1/jobs/ticker`)).status, 404);
});

test("the worker is listed with its capacity and uptime", async () => {
  await open("#/workers", "Workers");
  const worker = page.locator("tr[data-worker]");
  await worker.first().waitFor();
  assert.equal(await worker.count(), 1);
  const [live] = await apiGet("/workers");
  const text = await worker.first().textContent();
  assert.ok(text.includes(live.id), text);
  // The dev worker's demo job runs every other second, so the slots in use
  // may change between the API's answer and the page's: only the capacity
  // is compared (the routed answers below pin the count).
  assert.match(text, new RegExp(`\\d+ / ${live.capacity}`), text);
  assert.ok(text.includes(live.version), text);
  await worker.first().locator(".badge", { hasText: "live" }).waitFor();
  // The worker publishes its log backlog: nothing waits for SQLite here.
  await worker.first().locator("[data-backlog='none']").waitFor();
  await shot("workers", { docs: true });
  // A worker whose slots are all in use, with a run waiting for one, says
  // so (a cluster's answer: the one dev worker has slots to spare).
  await page.route("**/api/v1/workers", (route) =>
    route.fulfill({ json: [{ ...live, capacity: 1, running: 2, slots_in_use: 1, waiting: 1 }] }));
  await worker.first().locator("[data-waiting='1']", { hasText: "1 waiting" }).waitFor();
  assert.match(await page.locator("#workers-summary").textContent(), /1 of 1 slots in use · 1 run waiting for a slot/);
  await page.unroute("**/api/v1/workers");
  // A worker whose log store is behind shows what it spooled and how far
  // behind; one whose spool is full, that its runs are held back.
  const backlog = { spool_bytes: 12_900_000, spool_lag_s: 4, backpressure: false, queued: 10 };
  await page.route("**/api/v1/workers", (route) => route.fulfill({ json: [{ ...live, log_backlog: backlog }] }));
  await worker.first().locator("[data-backlog='spooled']", { hasText: "12 MiB spooled, 4 s behind" }).waitFor();
  await page.unroute("**/api/v1/workers");
  await page.route("**/api/v1/workers", (route) =>
    route.fulfill({ json: [{ ...live, log_backlog: { ...backlog, backpressure: true } }] }));
  await worker.first().locator("[data-backlog='held'] .tone-warn", { hasText: "runs held back" }).waitFor();
  assert.match(await page.locator("#workers-summary").textContent(), /runs held back on 1 worker \(log spool full\)/);
  await page.unroute("**/api/v1/workers");
});

test("a worker that disappears stays listed as gone", async () => {
  // A worker that loses its lease drops out of GET /workers. One dev process
  // cannot lose its only worker and keep serving the console, so here the
  // browser is handed the answer a master would give then: no live worker.
  await open("#/workers", "Workers");
  const worker = page.locator("tr[data-worker]").first();
  await worker.locator(".badge", { hasText: "live" }).waitFor();
  await page.route("**/api/v1/workers", (route) => route.fulfill({ json: [] }));
  await page.locator("#workers-gone").waitFor();
  await worker.locator(".badge", { hasText: "gone" }).waitFor();
  assert.match(await page.locator("#workers-summary").textContent(), /^0 live workers/);
  await shot("workers-gone");
  // When it is back, it is live again and the notice goes.
  await page.unroute("**/api/v1/workers");
  await worker.locator(".badge", { hasText: "live" }).waitFor();
  await page.locator("#workers-gone").waitFor({ state: "detached" });
});

test("the dashboard charts the last hour", async () => {
  await open("#/dashboard", "Dashboard");
  await page.locator("svg.chart").first().waitFor();
  assert.ok(Number(await page.locator("#stat-runs .stat-value").textContent()) >= 5);
  assert.equal(await page.locator("svg.chart").count(), 3);
  await page.locator(".problems [data-status=killed]").first().waitFor();
  // Killed runs are listed with the problems and counted beside the
  // failures, but a run someone stopped says nothing about how slow its job
  // is: napper (killed every time) is not among the slowest jobs.
  assert.match(await page.locator("#stat-failures").innerText(), /and \d+ killed/);
  const slowest = page.locator("svg.chart[aria-label^='Slowest jobs']");
  await slowest.waitFor();
  assert.doesNotMatch(await slowest.getAttribute("aria-label"), /napper/);
  await shot("dashboard", { docs: true });
});

test("modules are listed with the jobs that use them and what they can do on the network", async () => {
  await open("#/modules", "Modules");
  await page.locator("tr[data-digest]", { hasText: "greeter" }).waitFor();
  const network = (job) => page.locator("tr[data-digest]", { hasText: job }).locator("td[data-label=Network]");
  assert.equal(await network("greeter").innerText(), "none");
  // Each keeps the name of the file it was uploaded from, beside its digest.
  const name = (job) => page.locator("tr[data-digest]", { hasText: job }).locator("td[data-label=Name]");
  assert.equal(await name("greeter").innerText(), "rust-module.wasm");
  assert.equal(await name("sleeper").innerText(), "sleep.wasm");
  assert.equal(await network("netprobe").locator("[data-capabilities]").getAttribute("data-capabilities"), "http sockets");
  assert.deepEqual(await network("netprobe").locator(".capability").allTextContents(), ["http", "sockets"]);
  await shot("modules");
});

/** Values stored through the Secrets page; neither may ever be seen again. */
const SECRET_VALUE = "s3cret-typed-in-the-console-7f3a9c";
const SECRET_VALUE_2 = "s3cret-replaced-in-the-console-b81e04";

test("an admin stores a secret on the Secrets page, and its value never comes back", async () => {
  await open("#/secrets", "Secrets");
  await page.getByText("No secrets stored").waitFor();
  const name = page.getByLabel("Name", { exact: true });
  const value = page.getByLabel("Value", { exact: true });
  assert.equal(await value.getAttribute("type"), "password");
  assert.equal(await value.getAttribute("autocomplete"), "off");
  // Plain mistakes are pointed out before anything is sent.
  await name.fill("Billing API");
  await page.locator("#secret-name-error", { hasText: "use lowercase letters" }).waitFor();
  await name.fill("billing-api");
  await page.locator("#secret-target", { hasText: "A new secret, billing-api." }).waitFor();
  await page.getByRole("button", { name: "Store secret" }).click();
  await page.locator("#secret-value-error", { hasText: "a value is needed" }).waitFor();
  await value.fill(SECRET_VALUE);
  await page.getByRole("button", { name: "Store secret" }).click();
  await page.locator("#secret-saved", { hasText: "Stored billing-api" }).waitFor();
  const row = page.locator('tr[data-secret="billing-api"]');
  await row.waitFor();
  assert.equal(await value.inputValue(), "", "the field is cleared once the value is stored");
  await assertNotInPage(SECRET_VALUE);
  const [listed] = await apiGet("/secrets");
  assert.equal(listed.name, "billing-api");
  assert.equal(listed.written_by, "local");
  assert.deepEqual(listed.jobs, []);
  assert.match(await row.textContent(), new RegExp(`local${listed.key_id}no job`));

  // Replacing asks first, and the new value goes the same way.
  await page.getByRole("button", { name: "Replace the value of billing-api" }).click();
  assert.equal(await name.inputValue(), "billing-api");
  await page.waitForFunction(() => document.activeElement?.id === "secret-value");
  await page.locator("#secret-target", { hasText: "Replaces the value of billing-api (no job uses it)" }).waitFor();
  await value.fill(SECRET_VALUE_2);
  await page.getByRole("button", { name: "Replace value", exact: true }).click();
  const dialog = page.locator("#confirm-dialog");
  await dialog.getByText("Replace the value of billing-api?").waitFor();
  await dialog.getByRole("button", { name: "Replace value" }).click();
  await page.locator("#secret-saved", { hasText: "Replaced the value of billing-api" }).waitFor();
  assert.equal(await value.inputValue(), "");
  await assertNotInPage(SECRET_VALUE);
  await assertNotInPage(SECRET_VALUE_2);
  const answer = JSON.stringify(await apiGet("/secrets"));
  assert.ok(!answer.includes(SECRET_VALUE) && !answer.includes(SECRET_VALUE_2), answer);
  await shot("secrets", { docs: true });
});

test("a job receives a stored secret and config from the editor, and saving again keeps them", async () => {
  // HTTP jobs have no secrets table: the editor says how they use a secret.
  await open("#/jobs/new", "New job");
  await page.getByLabel("HTTP request").check();
  await page.locator("#http-secrets-hint", { hasText: "${secret:NAME}" }).waitFor();
  assert.match(await page.locator("#http-secrets-hint").textContent(), /Stored: billing-api\.$/);
  assert.equal(await page.locator("#job-secrets").isVisible(), false);

  await newJob("stateful", "@yearly");
  await page.locator("#module-file").setInputFiles(KV_PROBE_WASM);
  await page.locator("#upload-ok").waitFor();
  await page.getByLabel("Arguments").fill("incr\ncount\n1\nset\ngreeting\nhello");
  await page.getByRole("button", { name: "Add a secret" }).click();
  const secret = page.locator("#job-secrets .pair-row").first();
  await secret.getByLabel("Name the job reads the secret under").fill("API_TOKEN");
  await secret.getByLabel("Stored secret").selectOption("billing-api");
  await page.getByRole("button", { name: "Add a setting" }).click();
  const setting = page.locator("#job-config .pair-row").first();
  await setting.getByLabel("Config key").fill("region");
  await setting.getByLabel("Config value").fill("eu");
  await page.getByLabel("Secrets as environment variables too").check();
  await page.getByLabel("Run context in the environment").uncheck();
  // A secret named like a config key is refused by the server, at its row.
  await page.getByRole("button", { name: "Add a secret" }).click();
  const clash = page.locator("#job-secrets .pair-row").nth(1);
  await clash.getByLabel("Name the job reads the secret under").fill("region");
  await clash.getByLabel("Stored secret").selectOption("billing-api");
  await page.getByRole("button", { name: "Create job" }).click();
  const error = page.locator("#job-secrets-1-alias-error");
  await error.waitFor({ state: "visible" });
  assert.match(await error.textContent(), /kind\.wasm\.config/);
  assert.match(await page.locator("#form-error").textContent(), /^secrets\.region: /);
  assert.equal(await page.locator("#job-secrets-1-alias").getAttribute("aria-invalid"), "true");
  await page.waitForFunction(() => document.activeElement?.id === "job-secrets-1-alias");
  await shot("editor-secrets-error");
  assert.equal((await fetch(`${BASE}/api/v1/jobs/stateful`)).status, 404);
  await clash.getByRole("button", { name: "Remove region" }).click();
  await shot("editor-secrets");
  await save("stateful");
  const saved = await apiGet("/jobs/stateful");
  assert.deepEqual(saved.secrets, { API_TOKEN: "billing-api" });
  assert.deepEqual(saved.kind.wasm.config, { region: "eu" });
  assert.equal(saved.kind.wasm.secrets_as_env, true);
  assert.equal(saved.kind.wasm.context_env, false);
  await page.locator("#job-secrets-list", { hasText: "API_TOKEN ← billing-api" }).waitFor();
  await page.locator("#job-config-list", { hasText: "region=eu" }).waitFor();

  // Unchanged, the job is saved as it was.
  await open("#/jobs/stateful/edit", "Edit stateful");
  assert.equal(await page.locator("#job-secrets-0-alias").inputValue(), "API_TOKEN");
  assert.equal(await page.locator("#job-secrets-0-name").inputValue(), "billing-api");
  assert.equal(await page.getByLabel("Run context in the environment").isChecked(), false);
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.getByRole("heading", { level: 1, name: /^stateful/ }).waitFor();
  const again = await apiGet("/jobs/stateful");
  assert.ok(again.revision > saved.revision, "saved");
  assert.deepEqual(specOf(again), specOf(saved));

  // So is one written through the API with config an input cannot show as is.
  const stored = await apiPutJob("configured", {
    schedule: "@yearly", secrets: { Z_TOKEN: "billing-api", A_TOKEN: "billing-api" },
    kind: { wasm: { module: saved.kind.wasm.module, config: { "two lines": "one\ntwo", region: "eu" }, secrets_as_env: true } },
  });
  await open("#/jobs/configured/edit", "Edit configured");
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.getByRole("heading", { level: 1, name: /^configured/ }).waitFor();
  const kept = await apiGet("/jobs/configured");
  assert.ok(kept.revision > stored.revision, "saved");
  assert.deepEqual(specOf(kept), specOf(stored));
});

test("a secret a job uses cannot be deleted: the page shows the server's refusal", async () => {
  await open("#/secrets", "Secrets");
  const row = page.locator('tr[data-secret="billing-api"]');
  await row.locator(".secret-jobs", { hasText: "configured, stateful" }).waitFor();
  await page.getByRole("button", { name: "Delete secret billing-api" }).click();
  const dialog = page.locator("#confirm-dialog");
  await dialog.getByText("the server refuses to delete it").waitFor();
  await dialog.getByRole("button", { name: "Delete secret" }).click();
  const refusal = page.locator("#secret-delete-error");
  await refusal.waitFor();
  // Word for word what the API answers (asking again changes nothing: it is refused).
  const answer = await fetch(`${BASE}/api/v1/secrets/billing-api`, { method: "DELETE" });
  assert.equal(answer.status, 409);
  assert.equal(await refusal.textContent(), (await answer.json()).error.message);
  assert.match(await refusal.textContent(), /used by jobs: configured, stateful/);
  await row.waitFor();
  await shot("secrets-refused");

  // One no job uses goes, after the confirmation.
  const put = await fetch(`${BASE}/api/v1/secrets/old-token`, { method: "PUT", headers: { "content-type": "text/plain" }, body: "expired" });
  assert.equal(put.status, 201, await put.text());
  await open("#/secrets", "Secrets");
  await page.getByRole("button", { name: "Delete secret old-token" }).click();
  await dialog.getByText("No job uses it.").waitFor();
  await dialog.getByRole("button", { name: "Delete secret" }).click();
  await page.locator('tr[data-secret="old-token"]').waitFor({ state: "detached" });
  assert.deepEqual((await apiGet("/secrets")).map((s) => s.name), ["billing-api"]);
});

test("a job's page lists its state, and an operator deletes a key or all of them", async () => {
  await open("#/jobs/stateful", /^stateful/);
  await page.locator("#state-empty").waitFor();
  await page.locator("#state-fence", { hasText: "no run has opened it" }).waitFor();
  await runNowAndOpen("stateful");
  await page.locator("#run-status [data-status=succeeded]").waitFor({ timeout: RUNS });
  // The run names the secrets it received, never their values.
  assert.equal(await page.locator("#run-secrets").textContent(), "billing-api");
  await assertNotInPage(SECRET_VALUE_2);

  await open("#/jobs/stateful", /^stateful/);
  const keys = page.locator("#state-keys tbody tr");
  await keys.nth(1).waitFor();
  assert.deepEqual(await keys.evaluateAll((rows) => rows.map((r) => r.dataset.key)), ["count", "greeting"]);
  const state = await apiGet("/jobs/stateful/state");
  assert.equal(await page.locator("#state-totals").textContent(), `2 keys${state.total.bytes} B of 64 KiBfence ${state.fence}`);
  assert.equal(await keys.nth(1).locator("td[data-label=Size]").textContent(), "5 B");
  await page.locator("#state-quota", { hasText: "128 keys, 64 KiB a value" }).waitFor();
  await shot("job-state", { docs: true });

  const dialog = page.locator("#confirm-dialog");
  await page.getByRole("button", { name: "Delete state key greeting" }).click();
  await dialog.getByText("Delete state key greeting?").waitFor();
  await dialog.getByRole("button", { name: "Delete key" }).click();
  await page.locator('#state-keys tr[data-key="greeting"]').waitFor({ state: "detached" });
  assert.deepEqual((await apiGet("/jobs/stateful/state")).keys.map((k) => k.key), ["count"]);

  await page.getByRole("button", { name: "Delete all", exact: true }).click();
  await dialog.getByText("Delete all state of stateful?").waitFor();
  await dialog.getByRole("button", { name: "Delete all keys" }).click();
  await page.locator("#state-empty").waitFor();
  const cleared = await apiGet("/jobs/stateful/state");
  assert.deepEqual(cleared.total, { keys: 0, bytes: 0 });
  // Clearing keeps the fence.
  assert.equal(cleared.fence, state.fence);
  await page.locator("#state-fence", { hasText: `fence ${state.fence}` }).waitFor();
});

test("on a phone the jobs table becomes cards", async () => {
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(`${BASE}/#/jobs`);
  await phone.locator('tr[data-job="greeter"]').waitFor();
  // A long hyphenated name is the card's title, on one line, not broken at a hyphen.
  const long = "nightly-database-backup-europe";
  await apiPutJob(long, { schedule: "@yearly", timezone: "UTC", kind: { shell: { command: "true" } } });
  await phone.reload();
  const title = phone.locator(`tr[data-job="${long}"] .job-name`);
  await title.waitFor();
  const lines = (locator) => locator.evaluate((el) => {
    const range = document.createRange();
    range.selectNodeContents(el);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
  });
  assert.equal(await lines(title), 1, "the name is on one line in its card");
  const removed = await fetch(`${BASE}/api/v1/jobs/${long}`, { method: "DELETE" });
  assert.equal(removed.status, 204, await removed.text());
  await phone.goto(`${BASE}/#/jobs`);
  await phone.locator('tr[data-job="greeter"]').waitFor();
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no horizontal scrolling on a phone (page is ${width}px wide)`);
  await shot("jobs-phone", { docs: true, target: phone });
  // The editor too, with every section of an HTTP job that uses them all.
  await phone.goto(`${BASE}/#/jobs/roundtrip/edit`);
  await phone.getByRole("heading", { level: 1, name: "Edit roundtrip" }).waitFor();
  await phone.locator("#report-hint").waitFor();
  const editorWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(editorWidth <= 390, `no horizontal scrolling in the editor on a phone (page is ${editorWidth}px wide)`);
  await shot("editor-phone", { target: phone });
  // And a run's network calls.
  await phone.goto(`${BASE}/#/runs/${ledgerRunId}`);
  await phone.locator("#egress-ledger tbody tr").nth(1).waitFor();
  const runWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(runWidth <= 390, `no horizontal scrolling on a run's page on a phone (page is ${runWidth}px wide)`);
  // The output's tools (stream filter, download, wrap) are whole inside
  // their card, which clips what overflows it.
  const clipped = await phone.locator(".output-card").evaluate((card) => {
    const edge = card.getBoundingClientRect();
    return [...card.querySelectorAll(".output-head *")]
      .filter((el) => { const r = el.getBoundingClientRect(); return r.width && (r.right > edge.right + 0.5 || r.left < edge.left - 0.5); })
      .map((el) => el.id || el.className || el.tagName);
  });
  assert.deepEqual(clipped, [], "nothing in the output's header is cut off");
  const select = phone.locator("#output-streams");
  assert.ok(await select.evaluate((el) => el.scrollWidth <= el.clientWidth), "the stream filter shows its whole label");
  await shot("run-egress-phone", { target: phone });
  await phone.close();
});

test("the audit log lists a job's changes newest first, filters them and loads more", async () => {
  await apiPutJob("audited", { schedule: "@yearly", timezone: "UTC", kind: { shell: { command: "echo audited" } } });
  // Pause it and run it now from its page.
  await open("#/jobs/audited", /^audited/);
  await page.getByRole("button", { name: "Pause audited" }).click();
  await page.getByRole("heading", { level: 1, name: /^audited/ }).locator("[data-status=paused]").waitFor();
  await page.getByRole("button", { name: "Run audited now" }).click();
  await page.locator(".toast", { hasText: "Run of audited requested" }).waitFor();
  // The job's page links to its history of changes: the audit page, filtered by the job.
  await page.getByRole("link", { name: "History of changes" }).click();
  await page.getByRole("heading", { level: 1, name: "Audit log" }).waitFor();
  await page.locator('[data-nav="audit"][aria-current="page"]').waitFor();
  assert.equal(await page.getByLabel("Filter by job").inputValue(), "audited");
  const rows = page.locator("#audit-table tbody tr");
  const actions = () => rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.action));
  await rows.nth(2).waitFor();
  assert.deepEqual(await actions(), ["run_now", "job_pause", "job_create"]);

  // Each row is the API's entry: who (the tokenless server's caller), when, what.
  const { entries, next_cursor } = await apiGet("/audit?job=audited");
  assert.equal(next_cursor, null);
  assert.deepEqual(entries.map((e) => e.action), ["run_now", "job_pause", "job_create"]);
  for (const [index, entry] of entries.entries()) {
    const tr = rows.nth(index);
    assert.equal(await tr.getAttribute("data-audit"), entry.id);
    assert.equal(await tr.locator(".audit-actor-name").textContent(), "local");
    assert.equal(await tr.locator(".audit-actor [data-role]").textContent(), "admin");
    // Local time (the browser is in UTC here), with the ISO instant as its title.
    const time = tr.locator("time.audit-time");
    assert.equal(await time.getAttribute("title"), entry.at);
    assert.equal(await time.textContent(), entry.at.slice(0, 19).replace("T", " "));
    // The target is the job, linked to its page.
    assert.equal(await tr.locator(".audit-target a").getAttribute("href"), "#/jobs/audited");
  }
  const [runNow, pause, create] = entries;
  assert.ok(pause.revision_after > pause.revision_before, "pausing wrote a new revision");
  assert.equal(await rows.nth(0).locator(".audit-revisions").textContent(), `r${runNow.revision_after}`);
  assert.equal(await rows.nth(1).locator(".audit-revisions").textContent(), `r${pause.revision_before} → r${pause.revision_after}`);
  assert.equal(await rows.nth(2).locator(".audit-revisions").textContent(), `new → r${create.revision_after}`);
  assert.equal(runNow.runs.length, 1);
  await rows.nth(0).locator(`a[href="#/runs/${runNow.runs[0]}"]`).waitFor();
  await rows.nth(0).getByText("the job is paused; this run does not resume it").waitFor();
  await rows.nth(2).getByText("shell job").waitFor();
  await shot("audit");

  // Filter by action: the address keeps it.
  await page.getByLabel("Filter by action").selectOption("job_pause");
  await page.waitForFunction(() => {
    const shown = [...document.querySelectorAll("#audit-table tbody tr")];
    return shown.length === 1 && shown[0].dataset.action === "job_pause";
  });
  assert.match(page.url(), /#\/audit\?job=audited&action=job_pause$/);
  // Since a time to come: nothing matches.
  await page.getByLabel("Since").fill("2099-01-01T00:00");
  await page.getByText("No entry matches these filters").waitFor();
  assert.match(page.url(), /since=2099-01-01T00%3A00%3A00.000Z/);
  await page.getByRole("button", { name: "Clear filters" }).click();
  await page.waitForFunction(() => document.querySelectorAll("#audit-table tbody tr").length > 3);
  // A filter the server refuses shows its message, as text.
  await page.getByLabel("Filter by job").fill("<b>bold</b>");
  await page.getByLabel("Filter by job").press("Enter");
  const refused = page.locator("#audit-error");
  await refused.waitFor();
  assert.match(await refused.textContent(), /^job: job name "<b>bold<\/b>" contains '<'/);
  assert.equal(await refused.locator("b").count(), 0);

  // One entry a page: "Load more" appends the older ones, and goes once there are no more.
  await open("#/audit?job=audited&limit=1", "Audit log");
  await rows.first().waitFor();
  assert.deepEqual(await actions(), ["run_now"]);
  await page.getByRole("button", { name: "Load more" }).click();
  await rows.nth(1).waitFor();
  await page.getByRole("button", { name: "Load more" }).click();
  await rows.nth(2).waitFor();
  assert.deepEqual(await actions(), ["run_now", "job_pause", "job_create"]);
  await page.locator("#audit-count", { hasText: "3 entries, all there are" }).waitFor();
  await page.locator("#audit-more").waitFor({ state: "hidden" });
  assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.audit)), entries.map((e) => e.id));

  // On a phone: no horizontal scrolling, and the Audit section in sight.
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(`${BASE}/#/audit?job=audited`);
  await phone.locator("#audit-table tbody tr").nth(2).waitFor();
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no horizontal scrolling on the audit page on a phone (page is ${width}px wide)`);
  assert.ok(await phone.locator('[data-nav="audit"]').isVisible());
  const navLink = await phone.locator('[data-nav="audit"]').boundingBox();
  assert.ok(navLink.x + navLink.width <= 390, "the Audit link is within the screen");
  await shot("audit-phone", { target: phone });
  await phone.close();
});

test("a server with tokens prompts for one and offers what the role allows", async () => {
  const auth = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const tab = await auth.newPage();
  tab.setDefaultTimeout(SHORT);
  await tab.goto(`${AUTH_BASE}/#/jobs`);
  const dialog = tab.locator("#token-dialog");
  await dialog.getByRole("heading", { name: "Sign in" }).waitFor();
  await shot("token-prompt", { target: tab });
  // A wrong token is refused and the prompt says so.
  await dialog.getByLabel("Bearer token").fill("not-the-token");
  await dialog.getByRole("button", { name: "Sign in" }).click();
  await dialog.getByText("did not accept that token").waitFor();
  // A viewer sees the jobs but no way to change them.
  await dialog.getByLabel("Bearer token").fill(VIEWER_TOKEN);
  await dialog.getByRole("button", { name: "Sign in" }).click();
  await tab.getByRole("heading", { level: 1, name: "Jobs" }).waitFor();
  await tab.locator("#who [data-role=viewer]").waitFor();
  assert.equal(await tab.getByRole("link", { name: "New job" }).count(), 0);
  assert.equal(await tab.evaluate(() => sessionStorage.getItem("sandcron.token")), VIEWER_TOKEN);
  // Signing out forgets the token.
  const signInAs = async (token, role) => {
    await tab.getByRole("button", { name: "Sign out" }).click();
    await tab.getByRole("heading", { level: 1, name: "Signed out" }).waitFor();
    assert.equal(await tab.evaluate(() => sessionStorage.getItem("sandcron.token")), null);
    await tab.locator("main").getByRole("button", { name: "Sign in" }).click();
    await dialog.getByLabel("Bearer token").fill(token);
    await dialog.getByRole("button", { name: "Sign in" }).click();
    await tab.locator(`#who [data-role=${role}]`).waitFor();
  };
  // An operator writes WebAssembly jobs; shell jobs are offered, disabled, with the reason.
  await signInAs(OPERATOR_TOKEN, "operator");
  await tab.getByRole("link", { name: "New job" }).click();
  await tab.getByRole("heading", { level: 1, name: "New job" }).waitFor();
  assert.equal(await tab.getByLabel("Shell command").isDisabled(), true);
  await tab.getByText("Shell jobs need the admin role.").waitFor();
  // An admin may also write shell jobs.
  // Signing in again returns to the page that was open.
  await signInAs(ADMIN_TOKEN, "admin");
  await tab.getByRole("heading", { level: 1, name: "New job" }).waitFor();
  assert.equal(await tab.getByLabel("Shell command").isEnabled(), true);
  await auth.close();
});

test("a viewer sees the secrets and a job's page without what the role may not change or read", async () => {
  // Set up on the server with tokens: a secret, and a job with state that uses it.
  const call = async (method, path, token, body, type = "application/json") => {
    const response = await fetch(`${AUTH_BASE}/api/v1${path}`, {
      method, body, headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": type } : {}) },
    });
    const text = await response.text();
    assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  await call("PUT", "/secrets/deploy-key", ADMIN_TOKEN, "viewer-never-sees-this-8d21", "text/plain");
  const module = await call("POST", "/modules", OPERATOR_TOKEN, readFileSync(KV_PROBE_WASM), "application/wasm");
  await call("PUT", "/jobs/keeper", OPERATOR_TOKEN, JSON.stringify({
    schedule: "@yearly", secrets: { DEPLOY_KEY: "deploy-key" }, kind: { wasm: { module: module.digest, args: ["incr", "count", "1"] } },
  }));

  const auth = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await auth.addInitScript((token) => sessionStorage.setItem("sandcron.token", token), VIEWER_TOKEN);
  const tab = await auth.newPage();
  tab.setDefaultTimeout(SHORT);
  const errors = [];
  tab.on("pageerror", (err) => errors.push(err.message));
  await tab.goto(`${AUTH_BASE}/#/secrets`);
  await tab.getByRole("heading", { level: 1, name: "Secrets" }).waitFor();
  await tab.locator("#who [data-role=viewer]").waitFor();
  await tab.locator('tr[data-secret="deploy-key"] .secret-jobs', { hasText: "keeper" }).waitFor();
  await tab.locator("#secrets-read-only", { hasText: "only admins store, replace and delete secrets" }).waitFor();
  assert.equal(await tab.locator("#secret-form").count(), 0, "no form to store a secret");
  assert.equal(await tab.locator("#secrets-table button").count(), 0, "no Replace or Delete");
  await assertNotInPage("viewer-never-sees-this-8d21", tab);
  await shot("secrets-viewer", { target: tab });
  // The job's page: a note instead of its state, not an error.
  await tab.goto(`${AUTH_BASE}/#/jobs/keeper`);
  await tab.getByRole("heading", { level: 1, name: /^keeper/ }).waitFor();
  await tab.locator("#job-secrets-list", { hasText: "DEPLOY_KEY ← deploy-key" }).waitFor();
  await tab.locator("#state-not-allowed", { hasText: "only operators see it" }).waitFor();
  assert.equal(await tab.locator(".error-state").count(), 0);
  assert.equal(await tab.locator("#state-keys").count(), 0);
  assert.deepEqual(errors, []);
  await auth.close();
});

test("the audit log names each token and its role; a viewer is told it is for operators and admins", async () => {
  // The test before wrote on the server with tokens: the secret as root
  // (admin), the module and the job keeper as ops (operator).
  const operator = await browser.newContext({ viewport: { width: 1280, height: 860 }, timezoneId: "UTC" });
  await operator.addInitScript((token) => sessionStorage.setItem("sandcron.token", token), OPERATOR_TOKEN);
  const tab = await operator.newPage();
  tab.setDefaultTimeout(SHORT);
  const errors = [];
  tab.on("pageerror", (err) => errors.push(err.message));
  await tab.goto(`${AUTH_BASE}/#/jobs/keeper`);
  await tab.getByRole("link", { name: "History of changes" }).click();
  const create = tab.locator('#audit-table tr[data-action="job_create"]');
  await create.waitFor();
  assert.equal(await create.locator(".audit-actor-name").textContent(), "ops");
  assert.equal(await create.locator(".audit-actor [data-role]").textContent(), "operator");
  await create.locator(".audit-actor", { hasText: /from 127\.0\.0\.1:\d+/ }).waitFor();
  // Filter by actor: only root's writes.
  await tab.getByLabel("Filter by job").fill("");
  await tab.getByLabel("Filter by job").press("Enter");
  await tab.getByLabel("Filter by actor").fill("root");
  await tab.getByLabel("Filter by actor").press("Enter");
  await tab.waitForFunction(() => {
    const shown = [...document.querySelectorAll("#audit-table tbody tr")];
    return shown.length > 0 && shown.every((tr) => tr.querySelector(".audit-actor-name").textContent === "root");
  });
  const secret = tab.locator('#audit-table tr[data-action="secret_set"]');
  await secret.locator(".audit-target", { hasText: "deploy-key" }).waitFor();
  assert.equal(await secret.locator(".audit-actor [data-role]").textContent(), "admin");
  assert.deepEqual(errors, []);
  await operator.close();

  // A viewer: the page says why there is nothing, and asks the server nothing.
  const viewer = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await viewer.addInitScript((token) => sessionStorage.setItem("sandcron.token", token), VIEWER_TOKEN);
  const view = await viewer.newPage();
  view.setDefaultTimeout(SHORT);
  const asked = [];
  view.on("request", (request) => {
    if (request.url().includes("/api/v1/audit")) asked.push(request.url());
  });
  view.on("pageerror", (err) => errors.push(err.message));
  await view.goto(`${AUTH_BASE}/#/jobs/keeper`);
  await view.getByRole("heading", { level: 1, name: /^keeper/ }).waitFor();
  assert.equal(await view.getByRole("link", { name: "History of changes" }).count(), 0, "no link to a page the viewer may not read");
  await view.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: "Audit" }).click();
  await view.getByRole("heading", { level: 1, name: "Audit log" }).waitFor();
  await view.locator("#audit-not-allowed", { hasText: "The audit log is for operators and admins" }).waitFor();
  await view.locator("#audit-not-allowed", { hasText: "you are signed in as viewer" }).waitFor();
  assert.equal(await view.locator(".error-state").count(), 0);
  assert.equal(await view.locator("#audit-table").count(), 0);
  assert.deepEqual(asked, []);
  assert.deepEqual(errors, []);
  await shot("audit-viewer", { target: view });
  await viewer.close();
});

test("no script errors on any page", () => {
  assert.deepEqual(pageErrors, []);
});
