// skiplock dashboard, Schedules page: a form that creates a schedule or edits one (POST or PATCH
// /schedules), its next fire times previewed as the cron and timezone are typed (computed by the
// server as the scheduler fires: GET /ui/schedules/preview, GET /schedules/preview's 200 always), its args a form built from
// the task's JSON schema (app.js's fieldFor() and readArgs()), with a JSON box for more.
"use strict";

function scheduleForm() {
  const tasks = JSON.parse(document.getElementById("tasks").textContent);
  const form = document.getElementById("schedule-form");
  const field = (name) => document.getElementById(`schedule-${name}`);
  const argsBox = field("args");
  const preview = field("preview");
  let editing = null; // the id of the schedule being edited, or null for a new one

  const timezones = document.getElementById("timezones");
  const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [];
  timezones.replaceChildren(...["UTC", ...zones].map((zone) => new Option(zone)));

  const buildArgs = (values) => {
    const task = tasks.find((t) => t.name === field("task").value);
    const schema = task ? task.schema : {};
    const required = new Set(schema.required || []);
    const properties = schema.properties || {};
    const legend = document.createElement("legend");
    legend.textContent = "args";
    const fields = Object.entries(properties).map(([name, spec]) => fieldFor(name, spec, required.has(name)));
    const more = document.createElement("label");
    more.textContent = "more args (a JSON object) ";
    const extra = document.createElement("textarea");
    extra.id = "schedule-extra";
    extra.rows = 2;
    extra.spellcheck = false;
    more.appendChild(extra);
    more.hidden = schema.additionalProperties !== true && Object.keys(properties).length > 0;
    argsBox.replaceChildren(legend, ...fields, more);
    const rest = {};
    for (const [name, value] of Object.entries(values || {})) {
      const input = argsBox.querySelector(`[name="${CSS.escape(name)}"]`);
      if (!input) rest[name] = value;
      else if (input.dataset.type === "boolean") input.checked = Boolean(value);
      else if (input.dataset.type === "object" || input.dataset.type === "array") input.value = JSON.stringify(value);
      else input.value = value === null ? "" : value;
    }
    if (Object.keys(rest).length) {
      extra.value = JSON.stringify(rest);
      more.hidden = false;
    }
  };
  const args = () => {
    const values = readArgs(argsBox);
    delete values[""];
    const extra = document.getElementById("schedule-extra").value.trim();
    if (!extra) return values;
    const parsed = JSON.parse(extra);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("more args: a JSON object");
    return { ...parsed, ...values };
  };

  let asked = 0;
  let pending = null;
  const showPreview = async () => {
    pending = null;
    const cron = field("cron").value.trim();
    const number = ++asked;
    if (!cron) {
      preview.replaceChildren();
      return;
    }
    const query = new URLSearchParams({ cron, timezone: field("timezone").value.trim() || "UTC" });
    const response = await fetch(`/ui/schedules/preview?${query}`, { headers: { accept: "application/json" } });
    if (number !== asked || !response.ok) return; // a later keystroke's answer is on its way
    const body = await response.json();
    const text = body.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
    preview.classList.toggle("error", Boolean(text));
    if (text) {
      preview.replaceChildren(text);
      return;
    }
    const list = document.createElement("ol");
    list.id = "schedule-upcoming";
    for (const at of body.upcoming) {
      const item = document.createElement("li");
      item.append(new Date(at).toLocaleString(undefined, EXACT), " (", timeOf(at), ")");
      list.appendChild(item);
    }
    preview.replaceChildren(body.words ? `${body.words}; next:` : "Next fire times:", list);
  };
  const soon = () => {
    if (pending) clearTimeout(pending);
    pending = setTimeout(showPreview, 200);
  };
  field("cron").addEventListener("input", soon);
  field("timezone").addEventListener("input", soon);
  field("task").addEventListener("change", () => buildArgs({}));

  const reset = () => {
    editing = null;
    form.reset();
    field("name").readOnly = false;
    field("legend").textContent = "New schedule";
    field("save").textContent = "Create";
    field("new").hidden = true;
    buildArgs({});
    preview.replaceChildren();
  };
  const refreshTable = async () => {
    const response = await fetch("/ui/schedules");
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const table = page.querySelector("table.schedules");
    document.querySelector("table.schedules").replaceWith(table);
    localTimes(table);
  };

  onClick("button[data-action=edit]", guarded(async (button) => {
    const schedule = await api("GET", `/schedules/${button.dataset.schedule}`);
    editing = schedule.id;
    field("name").value = schedule.name;
    field("name").readOnly = true; // a schedule keeps its name
    field("cron").value = schedule.cron;
    field("timezone").value = schedule.timezone;
    field("task").value = schedule.task;
    field("queue").value = schedule.queue || "";
    field("priority").value = schedule.priority === null ? "" : schedule.priority;
    field("misfire").value = schedule.misfire;
    field("enabled").checked = schedule.enabled;
    buildArgs(schedule.args);
    field("legend").textContent = `Edit ${schedule.name}`;
    field("save").textContent = "Save";
    field("new").hidden = false;
    await showPreview();
    field("cron").focus();
  }));
  field("new").addEventListener("click", reset);

  form.addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    const body = {
      cron: field("cron").value.trim(),
      timezone: field("timezone").value.trim() || "UTC",
      task: field("task").value,
      args: args(),
      queue: field("queue").value.trim() || null,
      priority: field("priority").value === "" ? null : Number(field("priority").value),
      misfire: field("misfire").value,
      enabled: field("enabled").checked,
    };
    let saved;
    if (editing === null) saved = await api("POST", "/schedules", { name: field("name").value.trim(), ...body });
    else saved = await api("PATCH", `/schedules/${editing}`, body);
    flash(`${editing === null ? "Created" : "Saved"} ${saved.name}.`);
    reset();
    await refreshTable();
  }));
  buildArgs({});
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "schedules") scheduleForm();
});
