// A tokenless `sandcron dev` (every caller is admin, shell jobs allowed)
// against the web pages its user visits, in a real browser (Debian chromium
// through playwright-core). Started by tests/e2e/browser_origin.rs, which
// passes SANDCRON_URL (the server, with a shell job `target` on it) and
// ARTIFACT_DIR.
//
// 1. A page from another origin (a server of this test on another port)
//    tries everything a page can send without reading the answer: simple
//    fetches (no-cors), a JSON PUT (preflighted), a form POST, a multipart
//    upload. Nothing changes on the server.
// 2. DNS rebinding: chromium resolves `rebind.example` to 127.0.0.1, so a
//    page at http://rebind.example:PORT is same-origin with the server. The
//    server answers nothing to that Host, not even the console.
//
// Every wait waits for a condition with a deadline; nothing sleeps.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run this through tests/e2e/browser_origin.rs`);
  return value;
};
const BASE = env("SANDCRON_URL");
const ARTIFACTS = env("ARTIFACT_DIR");
const PORT = new URL(BASE).port;

/** The attacker's page: it fires every request and then says so. */
const attack = (target) => `<!doctype html>
<html><body>
<form id="form" method="POST" action="${target}/api/v1/jobs/target/pause" target="sink"><input name="x" value="1"></form>
<iframe name="sink"></iframe>
<script>
(async () => {
  const t = ${JSON.stringify(target)};
  const results = [];
  const tryIt = async (what, request) => {
    try { const r = await request(); results.push(what + ": " + (r.type === "opaque" ? "opaque" : r.status)); }
    catch (e) { results.push(what + ": blocked (" + e.message + ")"); }
  };
  await tryIt("run now", () => fetch(t + "/api/v1/jobs/target/run", { method: "POST", mode: "no-cors" }));
  await tryIt("kill", () => fetch(t + "/api/v1/jobs/target/kill", { method: "POST", mode: "no-cors", body: "x" }));
  await tryIt("delete", () => fetch(t + "/api/v1/jobs/target", { method: "DELETE" }));
  await tryIt("shell job", () => fetch(t + "/api/v1/jobs/evil", {
    method: "PUT", headers: { "content-type": "application/json" },
    body: JSON.stringify({ schedule: "* * * * * *", kind: { shell: { command: "touch /tmp/pwned" } } }),
  }));
  const upload = new FormData();
  upload.append("module", new Blob([new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])]), "m.wasm");
  await tryIt("upload", () => fetch(t + "/api/v1/modules", { method: "POST", mode: "no-cors", body: upload }));
  await tryIt("secret", () => fetch(t + "/api/v1/secrets/stolen", { method: "PUT", mode: "no-cors", body: "x" }));
  document.getElementById("form").submit();
  document.title = "done: " + results.join("; ");
})();
</script>
</body></html>`;

let browser;
let attacker;
let attackerUrl;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  attacker = createServer((request, response) => {
    const target = request.url.startsWith("/rebound") ? `http://rebind.example:${PORT}` : BASE;
    response.writeHead(200, { "content-type": "text/html" });
    response.end(attack(target));
  });
  await new Promise((resolve) => attacker.listen(0, "127.0.0.1", resolve));
  attackerUrl = `http://127.0.0.1:${attacker.address().port}`;
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      // What a rebinding attacker's DNS would answer.
      "--host-resolver-rules=MAP rebind.example 127.0.0.1",
      // Chromium's own guard against pages reaching local addresses would
      // stop these requests before the server sees them; other browsers
      // have none, and the server must not rely on it.
      "--disable-features=BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights,"
        + "PrivateNetworkAccessRespectPreflightResults,LocalNetworkAccessChecks",
    ],
  });
});

after(async () => {
  await browser?.close();
  attacker?.close();
});

/** The server's state as the test (no browser, no Origin) reads it. */
async function serverState() {
  const job = await (await fetch(`${BASE}/api/v1/jobs/target`)).json();
  const runs = await (await fetch(`${BASE}/api/v1/runs?job=target`)).json();
  const evil = await fetch(`${BASE}/api/v1/jobs/evil`);
  const modules = await (await fetch(`${BASE}/api/v1/modules`)).json();
  const secrets = await (await fetch(`${BASE}/api/v1/secrets`)).json();
  return {
    paused: job.paused,
    pending: job.pending.length,
    running: job.running.length,
    runs: runs.runs.length,
    evil: evil.status,
    modules: modules.length,
    secrets: secrets.length,
  };
}

const UNCHANGED = { paused: false, pending: 0, running: 0, runs: 0, evil: 404, modules: 0, secrets: 0 };

test("a page from another origin changes nothing on a tokenless server", async () => {
  assert.deepEqual(await serverState(), UNCHANGED, "the server starts as the test expects");
  const page = await browser.newPage();
  const sent = [];
  page.on("request", (request) => {
    if (request.url().startsWith(BASE)) sent.push(`${request.method()} ${new URL(request.url()).pathname}`);
  });
  const answered = [];
  page.on("response", (response) => {
    if (response.url().startsWith(BASE)) answered.push(response.status());
  });
  await page.goto(`${attackerUrl}/`);
  await page.waitForFunction(() => document.title.startsWith("done"), null, { timeout: 10_000 });
  // The form's navigation lands in the iframe: wait for its answer.
  await page.waitForFunction(
    () => { try { return frames["sink"].document.readyState === "complete"; } catch { return true; } },
    null, { timeout: 10_000 },
  );
  await page.screenshot({ path: join(ARTIFACTS, "cross-origin.png") });
  // The requests did leave the browser (this is not the browser's doing)…
  assert.ok(sent.includes("POST /api/v1/jobs/target/run"), sent.join(", "));
  assert.ok(sent.includes("POST /api/v1/jobs/target/pause"), sent.join(", "));
  // …and every one the server answered, it refused.
  for (const status of answered) assert.equal(status, 403, `answered ${answered.join(", ")}`);
  assert.deepEqual(await serverState(), UNCHANGED, await page.title());
  await page.close();
});

test("a rebound host name gets nothing, not even the console", async () => {
  const page = await browser.newPage();
  const console = await page.goto(`http://rebind.example:${PORT}/`);
  assert.equal(console.status(), 403);
  assert.match(await page.content(), /is not this server.s/);
  // A page the attacker serves under that name is same-origin with the
  // server; its requests carry Host: rebind.example and are refused.
  const answered = [];
  page.on("response", (response) => {
    if (response.url().startsWith(`http://rebind.example:${PORT}/api/`)) answered.push(response.status());
  });
  await page.route(`http://rebind.example:${PORT}/attack`, (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: attack(`http://rebind.example:${PORT}`) }),
  );
  await page.goto(`http://rebind.example:${PORT}/attack`);
  await page.waitForFunction(() => document.title.startsWith("done"), null, { timeout: 10_000 });
  assert.ok(answered.length >= 3, `answered ${answered.join(", ")}; ${await page.title()}`);
  for (const status of answered) assert.equal(status, 403, `answered ${answered.join(", ")}`);
  assert.deepEqual(await serverState(), UNCHANGED);
  await page.close();
});
