// The console's entry point: the hash router, the header (sections, who is
// signed in), and the life cycle of a view (its polling and long-polls end
// when the operator navigates away). No build step, no dependencies.

import { api, ApiError, loadSession, onSignIn, session, signOut } from "./api.js";
import { dropStaleToasts, h, replace, tickRelativeTimes, errorState } from "./ui.js";
import * as dashboard from "./dashboard.js";
import * as jobs from "./jobs.js";
import * as editor from "./editor.js";
import * as audit from "./audit.js";
import * as runs from "./runs.js";
import * as runView from "./run.js";
import * as workers from "./workers.js";
import * as modules from "./modules.js";
import * as secrets from "./secrets.js";

const routes = [
  { pattern: /^\/dashboard$/, nav: "dashboard", view: dashboard.render },
  { pattern: /^\/jobs$/, nav: "jobs", view: jobs.renderList },
  { pattern: /^\/jobs\/new$/, nav: "jobs", view: editor.render },
  { pattern: /^\/jobs\/([^/]+)\/edit$/, nav: "jobs", view: editor.render },
  { pattern: /^\/jobs\/([^/]+)$/, nav: "jobs", view: jobs.renderDetail },
  { pattern: /^\/runs$/, nav: "runs", view: runs.render },
  { pattern: /^\/runs\/([^/]+)$/, nav: "runs", view: runView.render },
  { pattern: /^\/workers$/, nav: "workers", view: workers.render },
  { pattern: /^\/modules$/, nav: "modules", view: modules.render },
  { pattern: /^\/secrets$/, nav: "secrets", view: secrets.render },
  { pattern: /^\/audit$/, nav: "audit", view: audit.renderAudit },
];

const main = document.getElementById("main");
let current = null;
/** Whether the session is loaded and pages are being shown. */
let booted = false;

/** Everything a view gets: where to draw, its parameters, and timers that stop with it. */
class View {
  constructor(path, params, search) {
    this.path = path;
    this.params = params.map(decodeURIComponent);
    this.query = Object.fromEntries(new URLSearchParams(search));
    this.controller = new AbortController();
    this.signal = this.controller.signal;
    this.timers = [];
    this.main = main;
  }

  /** Runs `fn` every `ms` while the view is shown and the tab visible (never two at once). */
  every(ms, fn) {
    let busy = false;
    const timer = setInterval(async () => {
      if (busy || document.hidden || this.signal.aborted) return;
      busy = true;
      try {
        await fn();
      } catch (err) {
        if (err.name !== "AbortError") console.warn("refresh failed", err);
      } finally {
        busy = false;
      }
    }, ms);
    this.timers.push(timer);
  }

  /** Rewrites the hash query without adding history or re-rendering. */
  setQuery(params) {
    this.query = Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
    const search = new URLSearchParams(this.query).toString();
    history.replaceState(null, "", `#${this.path}${search ? `?${search}` : ""}`);
  }

  title(text) {
    document.title = `${text} · sandcron`;
  }

  get alive() {
    return !this.signal.aborted;
  }

  stop() {
    this.controller.abort();
    for (const timer of this.timers) clearInterval(timer);
  }
}

async function route() {
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [path, search = ""] = hash.split("?");
  if (path === "/" || path === "") {
    history.replaceState(null, "", "#/jobs");
    return route();
  }
  current?.stop();
  dropStaleToasts();
  let match = null;
  let entry = null;
  for (const candidate of routes) {
    match = candidate.pattern.exec(path);
    if (match) {
      entry = candidate;
      break;
    }
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (entry && link.dataset.nav === entry.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const view = new View(path, match ? match.slice(1) : [], search);
  current = view;
  if (!entry) {
    view.title("Not found");
    replace(main, h("h1", { tabindex: -1 }, "Not found"), h("p", {}, "No page here. ", h("a", { href: "#/jobs" }, "Back to the jobs.")));
    return;
  }
  main.setAttribute("aria-busy", "true");
  try {
    await entry.view(view);
  } catch (err) {
    if (err.name === "AbortError" || !view.alive) return;
    replace(main, h("h1", { tabindex: -1 }, "Error"), errorState(err, () => route()));
  } finally {
    if (view.alive) {
      main.removeAttribute("aria-busy");
      // Keyboard and screen-reader users land on the new page's heading.
      if (!main.contains(document.activeElement) || document.activeElement === document.body) {
        main.querySelector("h1")?.focus({ preventScroll: true });
      }
    }
  }
}

function renderWho() {
  const box = document.getElementById("who");
  if (!session.role) {
    replace(box);
    return;
  }
  replace(
    box,
    h("span", { class: "who-name", title: "Signed in with this token" }, session.name),
    h("span", { class: `badge role role-${session.role}`, "data-role": session.role }, session.role),
    session.tokensRequired
      ? h("button", { class: "link", type: "button", onclick: signedOut }, "Sign out")
      : null,
  );
}

/** Forgets the token and says so, instead of prompting at once. */
function signedOut() {
  signOut();
  booted = false;
  current?.stop();
  renderWho();
  delete document.body.dataset.role;
  document.title = "Signed out · sandcron";
  replace(
    main,
    h("h1", { tabindex: -1 }, "Signed out"),
    h("p", {}, "The token was removed from this tab."),
    h("p", {}, h("button", { class: "primary", type: "button", onclick: () => boot() }, "Sign in")),
  );
  main.querySelector("h1").focus();
}

async function boot() {
  try {
    await loadSession();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      replace(
        main,
        h("h1", { tabindex: -1 }, "Sign in"),
        h("p", {}, "This server needs a bearer token (ask whoever runs it, or see [[auth.tokens]] in its configuration)."),
        h("p", {}, h("button", { class: "primary", onclick: () => boot() }, "Enter a token")),
      );
      main.querySelector("button").focus();
      return;
    }
    replace(main, h("h1", { tabindex: -1 }, "sandcron"), errorState(err, () => boot()));
    return;
  }
  booted = true;
  renderWho();
  document.body.dataset.role = session.role;
  await route();
}

// A token entered mid-session (after a 401) may carry another role: the page
// is drawn again for it. At start-up, boot() does that itself.
onSignIn(async () => {
  if (!booted) return;
  const before = session.role;
  try {
    await loadSession();
  } catch {
    return; // The next request will prompt again.
  }
  renderWho();
  document.body.dataset.role = session.role;
  if (session.role !== before) route();
});

window.addEventListener("hashchange", () => route());
setInterval(() => tickRelativeTimes(), 1000);

// The skip link moves the focus to the page (its href would be a route).
document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector("h1") ?? main).focus();
});

// "/" focuses the page's search box, as in most consoles.
document.addEventListener("keydown", (event) => {
  if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
  const search = main.querySelector("input[type=search]");
  if (search) {
    event.preventDefault();
    search.focus();
  }
});

// The API is the only backend; `api` is exported for the browser's devtools.
window.sandcron = { api };
boot();
