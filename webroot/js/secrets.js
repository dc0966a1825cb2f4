// Stored secrets (#/secrets): their names, who wrote each when, the key that
// sealed it and the jobs that use it; for admins, storing a value (typed in
// a password field or read from a file), replacing it and deleting a secret.
// Values are write-only: the page never reads one back, never puts one in a
// field after it was sent, and clears what was typed once it is stored.

import { api, can, session } from "./api.js";
import {
  confirmDialog, emptyState, errorState, failureOf, h, jobLinks, keepFocus, replace, stackedTime,
} from "./ui.js";

/** A secret's name: the job-name rule. */
export const SECRET_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** The largest value the server accepts (64 KiB). */
const MAX_VALUE_BYTES = 64 * 1024;

/** Every stored secret, without values: [{name, updated_at, written_by, key_id, jobs}]. */
export function listSecrets(signal) {
  return api("/secrets", { signal });
}

function secretPath(name) {
  return `/secrets/${encodeURIComponent(name)}`;
}

/** A file's bytes with one trailing newline (LF or CR LF) dropped, as `sandcron secret set` does. */
async function fileValue(file) {
  let bytes = new Uint8Array(await file.arrayBuffer());
  if (bytes.at(-1) === 0x0a) bytes = bytes.subarray(0, bytes.length - 1);
  if (bytes.at(-1) === 0x0d) bytes = bytes.subarray(0, bytes.length - 1);
  return bytes;
}

export async function render(view) {
  view.title("Secrets");
  const admin = can("admin");
  const notice = h("div", { id: "secrets-notice", "aria-live": "polite" });
  const region = h("div", { class: "region" }, h("p", { class: "muted" }, "Loading secrets…"));
  let secrets = null;

  // ---- the form (admins) ----
  let form = null;
  let nameInput = null;
  let valueInput = null;
  let fileInput = null;
  let showTarget = () => {};
  if (admin) {
    nameInput = h("input", {
      id: "secret-name", name: "secret-name", required: true, autocomplete: "off", spellcheck: "false", class: "mono",
      pattern: SECRET_NAME_PATTERN.source, placeholder: "billing-api", "aria-describedby": "secret-name-hint secret-name-error",
    });
    valueInput = h("input", {
      id: "secret-value", name: "secret-value", type: "password", autocomplete: "off", spellcheck: "false",
      "aria-describedby": "secret-value-hint secret-value-error",
    });
    fileInput = h("input", { id: "secret-file", name: "secret-file", type: "file", "aria-describedby": "secret-value-hint" });
    const target = h("p", { class: "hint", id: "secret-target", "aria-live": "polite" });
    const submit = h("button", { type: "submit", class: "primary", id: "secret-save" }, "Store secret");
    const formError = h("p", { class: "notice tone-bad", id: "secret-form-error", role: "alert", tabindex: -1, hidden: true });
    const fieldError = (id) => h("p", { class: "field-error", id: `${id}-error`, hidden: true });
    const setError = (control, message) => {
      const node = form.querySelector(`#${control.id}-error`);
      node.hidden = !message;
      node.textContent = message ?? "";
      control.setAttribute("aria-invalid", message ? "true" : "false");
    };
    // Whether the name is one already stored: the form then replaces its value.
    showTarget = () => {
      const name = nameInput.value.trim();
      const existing = secrets?.find((s) => s.name === name);
      submit.textContent = existing ? "Replace value" : "Store secret";
      if (!name) target.textContent = "";
      else if (!SECRET_NAME_PATTERN.test(name)) target.textContent = "";
      else if (existing) {
        replace(target, `Replaces the value of ${name}`,
          existing.jobs.length ? [" (used by ", jobLinks(existing.jobs), "; their next runs get the new value)"] : " (no job uses it)",
          ". The old value cannot be recovered.");
      } else target.textContent = `A new secret, ${name}.`;
    };
    nameInput.addEventListener("input", () => {
      const name = nameInput.value.trim();
      setError(nameInput, name && !SECRET_NAME_PATTERN.test(name) ? "use lowercase letters, digits, - and _, starting with a letter or digit (at most 63)" : null);
      showTarget();
    });
    fileInput.addEventListener("change", () => {
      // One source of the value at a time: a chosen file wins over typing.
      valueInput.disabled = fileInput.files.length > 0;
      if (valueInput.disabled) valueInput.value = "";
    });

    form = h("form", { class: "card secret-form", id: "secret-form", novalidate: true, autocomplete: "off", "aria-labelledby": "secret-form-title" },
      h("h2", { id: "secret-form-title" }, "Store a secret"),
      formError,
      h("div", { class: "grid" },
        h("div", { class: "field", "data-field": "secret-name" },
          h("label", { for: "secret-name" }, "Name"),
          nameInput,
          h("p", { class: "hint", id: "secret-name-hint" }, "Lowercase letters, digits, - and _; jobs name it so."),
          fieldError("secret-name")),
        h("div", { class: "field span2", "data-field": "secret-value" },
          h("label", { for: "secret-value" }, "Value"),
          valueInput,
          h("label", { class: "file-pick small" }, "or from a file: ", fileInput),
          h("p", { class: "hint", id: "secret-value-hint" },
            "UTF-8 text up to 64 KiB, sealed before it is stored; nobody can read it back. A file's one trailing newline is dropped, as ",
            h("code", {}, "sandcron secret set"), " does."),
          fieldError("secret-value")),
        h("div", { class: "full" }, target)),
      h("div", { class: "form-actions" }, submit));

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      formError.hidden = true;
      setError(nameInput, null);
      setError(valueInput, null);
      const name = nameInput.value.trim();
      if (!SECRET_NAME_PATTERN.test(name)) {
        setError(nameInput, name ? "use lowercase letters, digits, - and _, starting with a letter or digit (at most 63)" : "a name is needed");
        nameInput.focus();
        return;
      }
      const file = fileInput.files[0] ?? null;
      const bytes = file ? await fileValue(file) : new TextEncoder().encode(valueInput.value);
      const valueControl = file ? fileInput : valueInput;
      const problem = bytes.length === 0 ? (file ? "the file is empty" : "a value is needed")
        : bytes.length > MAX_VALUE_BYTES ? `a value is at most 64 KiB; this one is ${bytes.length} bytes` : null;
      if (problem) {
        setError(valueInput, problem);
        valueControl.focus();
        return;
      }
      const existing = secrets?.find((s) => s.name === name);
      if (existing) {
        const ok = await confirmDialog({
          title: `Replace the value of ${name}?`,
          body: h("p", {},
            existing.jobs.length ? ["The next runs of ", existing.jobs.join(", "), " get the new value; runs already running keep the old one. "] : "No job uses it. ",
            "The old value cannot be recovered."),
          confirm: "Replace value",
          danger: true,
        });
        if (!ok) return;
      }
      submit.disabled = true;
      try {
        const stored = await api(secretPath(name), {
          method: "PUT", body: new Blob([bytes], { type: "text/plain" }), headers: { "Content-Type": "text/plain; charset=utf-8" },
        });
        // The value leaves the page: nothing typed or chosen stays.
        valueInput.value = "";
        fileInput.value = "";
        valueInput.disabled = false;
        nameInput.value = "";
        replace(notice, h("p", { class: "notice tone-ok", id: "secret-saved", role: "status" },
          `${existing ? "Replaced the value of" : "Stored"} ${stored.name}`,
          h("small", { class: "muted" }, ` · sealed with key ${stored.key_id}`)));
        await load();
        showTarget();
        nameInput.focus();
      } catch (err) {
        if (err.name === "AbortError") return;
        const control = err.field === "name" ? nameInput : err.field === "value" || err.status === 413 ? valueInput : null;
        if (control) {
          setError(control, err.message);
          control.focus();
        } else {
          formError.hidden = false;
          formError.textContent = err.message;
          formError.focus();
        }
      } finally {
        submit.disabled = false;
      }
    });
  }

  replace(view.main,
    h("div", { class: "page-head" }, h("h1", { tabindex: -1 }, "Secrets")),
    h("p", { class: "lead" }, "Credentials jobs receive by name. A value goes in once and never comes out: not here, not in the API, a run or the logs."),
    admin
      ? form
      : h("p", { class: "notice tone-muted", id: "secrets-read-only" },
        `You are signed in as ${session.role}: only admins store, replace and delete secrets.`,
        can("operator") ? " Operators use them in the jobs they write." : null),
    notice,
    region);

  const remove = async (secret) => {
    const ok = await confirmDialog({
      title: `Delete secret ${secret.name}?`,
      body: h("p", {}, secret.jobs.length
        ? ["It is used by ", secret.jobs.join(", "), ": the server refuses to delete it until no job uses it."]
        : "No job uses it. Its value is gone for good."),
      confirm: "Delete secret",
      danger: true,
    });
    if (!ok) return;
    try {
      await api(secretPath(secret.name), { method: "DELETE" });
      replace(notice, h("p", { class: "notice tone-ok", role: "status" }, `Deleted ${secret.name}`));
    } catch (err) {
      if (err.name === "AbortError") return;
      // The server's words: a 409 names the jobs that still use it.
      replace(notice, h("p", { class: "notice tone-bad", id: "secret-delete-error", role: "alert" }, err.message));
    }
    await load();
  };

  const load = async () => {
    const error = await failureOf(async () => {
      secrets = await listSecrets(view.signal);
    });
    if (error) replace(region, errorState(error, load));
    else keepFocus(draw);
  };
  const draw = () => {
    if (!view.alive) return;
    showTarget();
    if (!secrets.length) {
      replace(region, emptyState("No secrets stored",
        admin ? "Store one above, or with `sandcron secret set NAME < file`; jobs then name it in their secrets." : "An admin stores them, with this page or `sandcron secret set`."));
      return;
    }
    const head = ["Name", "Updated", "Written by", "Key", "Used by"];
    replace(region, h("div", { class: "table-wrap" }, h("table", { class: "data secrets-table", id: "secrets-table" },
      h("caption", { class: "sr-only" }, "Stored secrets"),
      h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)), admin ? h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")) : null)),
      h("tbody", {}, secrets.map((s) => h("tr", { "data-secret": s.name },
        h("th", { scope: "row", "data-label": "Name" }, h("code", {}, s.name)),
        h("td", { "data-label": "Updated" }, stackedTime(s.updated_at)),
        h("td", { "data-label": "Written by" }, s.written_by),
        h("td", { "data-label": "Key" }, h("code", { title: "the id of the key that sealed it" }, s.key_id)),
        h("td", { "data-label": "Used by", class: "secret-jobs" }, s.jobs.length ? jobLinks(s.jobs) : h("span", { class: "muted" }, "no job")),
        admin ? h("td", { class: "row-actions" }, h("div", { class: "actions" },
          h("button", {
            type: "button", "data-focus-key": `replace:${s.name}`, "aria-label": `Replace the value of ${s.name}`,
            onclick: () => {
              nameInput.value = s.name;
              nameInput.dispatchEvent(new Event("input"));
              valueInput.focus();
            },
          }, "Replace value"),
          h("button", {
            type: "button", class: "danger-quiet", "data-focus-key": `delete:${s.name}`, "aria-label": `Delete secret ${s.name}`,
            onclick: () => remove(s),
          }, "Delete"))) : null))))));
  };
  await load();
}
