// WebAssembly modules (#/modules): the stored modules with what they can do
// on the network and the jobs that use them, upload by drag-and-drop or file
// picker, and delete.

import { api, can } from "./api.js";
import {
  confirmDialog, emptyState, errorState, failureOf, formatBytes, h, jobLinks, keepFocus, replace, stackedTime, toast,
} from "./ui.js";

/** Uploads a .wasm file as raw bytes, labelled with its file name; answers {digest, name, size, kind, capabilities, created}. */
export function uploadModule(file, signal) {
  const label = file.name ? `?name=${encodeURIComponent(file.name)}` : "";
  return api(`/modules${label}`, { method: "POST", body: file, headers: { "Content-Type": "application/wasm" }, signal });
}

/**
 * The network interfaces a module imports, as badges ("http", "sockets"),
 * or "none": a core module has no network interface at all.
 */
export function capabilityBadges(module) {
  const list = module.capabilities ?? [];
  if (!list.length) {
    const why = module.kind === "component" ? "imports neither wasi:http nor wasi:sockets" : "a core module (WASI preview 1) has no network interface";
    return h("span", { class: "muted", title: why, "data-capabilities": "" }, "none");
  }
  return h("span", { class: "flags", "data-capabilities": list.join(" ") },
    list.map((c) => h("span", { class: "flag capability", title: c === "http" ? "wasi:http outgoing requests" : "wasi:sockets TCP and name lookups" }, c)));
}

export async function render(view) {
  view.title("Modules");
  const region = h("div", { class: "region" }, h("p", { class: "muted" }, "Loading modules…"));
  const status = h("div", { "aria-live": "polite", id: "modules-upload-result" });
  let uploader = null;
  if (can("operator")) {
    const file = h("input", { type: "file", id: "modules-file", accept: ".wasm,application/wasm", class: "visually-hidden" });
    const zone = h("label", { for: "modules-file", class: "dropzone" },
      h("strong", {}, "Drop a .wasm file here"), " or ", h("span", { class: "link-like" }, "choose a file"),
      h("small", { class: "muted" }, "Validated on upload: magic number, size, wasmtime validation, WASI-only imports. A component may import wasi:http and wasi:sockets; a job still reaches only what its egress lists."));
    const send = async (chosen) => {
      if (!chosen) return;
      replace(status, h("p", { class: "muted" }, `Uploading ${chosen.name}…`));
      try {
        const stored = await uploadModule(chosen, view.signal);
        const network = stored.capabilities?.length ? `, uses ${stored.capabilities.join(" and ")}` : "";
        replace(status, h("p", { class: "notice tone-ok" }, `${stored.created ? "Uploaded" : "Already stored"}: ${chosen.name} → `, h("code", {}, stored.digest), ` (${stored.kind}${network}, ${formatBytes(stored.size)})`));
        await load();
      } catch (err) {
        if (err.name !== "AbortError") replace(status, h("p", { class: "notice tone-bad", role: "alert" }, h("strong", {}, `${chosen.name} was refused: `), err.message));
      } finally {
        file.value = "";
      }
    };
    file.addEventListener("change", () => send(file.files[0]));
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      send(event.dataTransfer.files[0]);
    });
    uploader = h("div", { class: "uploader" }, file, zone, status);
  }
  replace(view.main, h("div", { class: "page-head" }, h("h1", { tabindex: -1 }, "Modules")), uploader, region);

  let modules = null;
  const load = async () => {
    const error = await failureOf(async () => {
      modules = await api("/modules", { signal: view.signal });
    });
    if (error) replace(region, errorState(error, load));
    else keepFocus(draw);
  };
  const draw = () => {
    if (!modules.length) {
      replace(region, emptyState("No modules uploaded", "Upload a WASI module or component to run it as a job."));
      return;
    }
    replace(region, h("div", { class: "table-wrap" }, h("table", { class: "data" },
      h("thead", {}, h("tr", {}, ["Digest", "Name", "Kind", "Network", "Size", "Uploaded", "Used by", h("span", { class: "sr-only" }, "Actions")].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, modules.map((m) => h("tr", { "data-digest": m.digest },
        h("th", { scope: "row", "data-label": "Digest" }, h("code", { class: "digest", title: m.digest }, m.digest.replace(/^sha256:/, "").slice(0, 16), "…")),
        h("td", { "data-label": "Name", class: "module-name" }, m.name ?? h("span", { class: "muted" }, "—")),
        h("td", { "data-label": "Kind" }, m.kind),
        h("td", { "data-label": "Network" }, capabilityBadges(m)),
        h("td", { "data-label": "Size", class: "num" }, formatBytes(m.size)),
        h("td", { "data-label": "Uploaded" }, stackedTime(m.uploaded_at)),
        h("td", { "data-label": "Used by" }, m.jobs.length ? jobLinks(m.jobs) : h("span", { class: "muted" }, "no job")),
        h("td", { class: "row-actions" }, can("operator") ? h("button", {
          type: "button", class: "danger-quiet", "data-focus-key": `delete:${m.digest}`, "aria-label": `Delete module ${m.digest.slice(7, 19)}`,
          onclick: async () => {
            const ok = await confirmDialog({
              title: "Delete this module?",
              body: h("p", {}, h("code", {}, m.digest), m.jobs.length ? h("span", {}, " is used by ", m.jobs.join(", "), "; the server will refuse.") : " is used by no job."),
              confirm: "Delete module",
              danger: true,
            });
            if (!ok) return;
            try {
              await api(`/modules/${encodeURIComponent(m.digest)}`, { method: "DELETE" });
              toast("Module deleted", "ok");
            } catch (err) {
              toast(err.message, "bad");
            }
            await load();
          },
        }, "Delete") : null),
      ))))));
  };
  await load();
}
