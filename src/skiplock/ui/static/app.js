// skiplock dashboard: live parts and actions, all through the public JSON API and websockets.
"use strict";

const MAX_EVENTS = 500; // event rows kept on a job page; older ones are dropped

function flash(message, isError) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = isError ? "flash error" : "flash";
  box.hidden = false;
}

function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

async function api(method, path, body) {
  const options = { method, headers: { accept: "application/json" } };
  // With keys on, the dashboard's cookie carries the key: writes echo the CSRF cookie (double submit).
  if (method !== "GET") options.headers["x-csrftoken"] = cookie("csrftoken");
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    let detail = data && data.detail ? data.detail : response.statusText;
    // A 422 names the fields at fault: say which, and why.
    const fields = data && Array.isArray(data.extra) ? data.extra.filter((e) => e && e.message) : [];
    if (fields.length) detail += ": " + fields.map((e) => (e.key ? `${e.key}: ${e.message}` : e.message)).join("; ");
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

function socket(path, onMessage, onClose, onOpen) {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + path);
  const live = document.getElementById("live");
  ws.onopen = () => {
    live.classList.add("on");
    if (onOpen) onOpen();
  };
  ws.onmessage = (message) => onMessage(JSON.parse(message.data));
  ws.onclose = (event) => {
    live.classList.remove("on");
    if (onClose) onClose(event);
  };
  return ws;
}

// Times: every <time datetime> in the browser's words ("3 minutes ago", "in 2 hours") and, on
// hover, the exact moment in the browser's time zone; kept current every 10 s.
const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600],
  ["minute", 60], ["second", 1]];
const EXACT = { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  second: "2-digit", timeZoneName: "short" };

function relative(date) {
  const seconds = (date.getTime() - Date.now()) / 1000;
  const [unit, size] = UNITS.find(([, s]) => Math.abs(seconds) >= s) || UNITS[UNITS.length - 1];
  return RELATIVE.format(Math.trunc(seconds / size), unit);
}

function showTime(element) {
  const date = new Date(element.dateTime);
  if (Number.isNaN(date.getTime())) return;
  element.textContent = relative(date);
  element.title = date.toLocaleString(undefined, EXACT);
}

function localTimes(root) {
  for (const element of (root || document).querySelectorAll("time[datetime]")) showTime(element);
}

// A <time> for an ISO moment from the API, or "–" for none.
function timeOf(iso) {
  if (!iso) return document.createTextNode("–");
  const element = document.createElement("time");
  element.dateTime = iso;
  showTime(element);
  return element;
}

function onClick(selector, handler) {
  document.addEventListener("click", (event) => {
    const target = event.target.closest(selector);
    if (target) handler(target, event);
  });
}

function guarded(action) {
  return async (...args) => {
    try {
      await action(...args);
    } catch (error) {
      flash(error.message, true);
    }
  };
}

// Overview: the queue table re-rendered by the server at most once a second while events flow,
// and every five seconds anyway.
function overview() {
  let pending = null;
  const refresh = async () => {
    pending = null;
    const response = await fetch("/ui?fragment=true");
    if (response.ok) {
      const table = document.getElementById("queues");
      table.innerHTML = await response.text();
      localTimes(table);
    }
  };
  const soon = () => {
    if (!pending) pending = setTimeout(refresh, 1000);
  };
  // 4409: events may have been missed (the server says so instead of dropping them silently),
  // so refresh the table and resume quickly; any other close: try again in 2 s.
  const connect = () => socket("/ws/events", soon, (event) => {
    if (event.code === 4409) soon();
    setTimeout(connect, event.code === 4409 ? 500 : 2000);
  });
  connect();
  setInterval(soon, 5000);
  onClick("button[data-action=pause], button[data-action=resume]", guarded(async (button) => {
    await api("POST", `/queues/${encodeURIComponent(button.dataset.queue)}/${button.dataset.action}`);
    await refresh();
  }));
}

// Jobs: the newest page re-rendered by the server as events arrive (at once, then at most every
// half second; a search, which reads more, every two), and every few seconds anyway: a job
// enqueued in a queue nobody serves yet sends no event. Rows new since the last render are marked.
function jobsPage() {
  // The address names only the filters set: short enough to share.
  const form = document.getElementById("jobs-filters");
  form.addEventListener("submit", () => {
    for (const field of form.elements) if (field.name && !field.value) field.disabled = true;
  });
  window.addEventListener("pageshow", () => {
    for (const field of form.elements) field.disabled = false;
  });
  const box = document.getElementById("jobs-table");
  if (!box.dataset.live) return;
  const params = new URLSearchParams(location.search);
  params.delete("id");
  const searching = Boolean(params.get("args") || params.get("error"));
  const gap = searching ? 2000 : 500;
  const seen = new Set([...box.querySelectorAll("tr[data-job]")].map((row) => row.dataset.job));
  let last = 0;
  let pending = null;
  const refresh = async () => {
    pending = null;
    last = Date.now();
    params.set("fragment", "true");
    const response = await fetch(`/ui/jobs?${params}`);
    if (!response.ok) return;
    box.innerHTML = await response.text();
    localTimes(box);
    for (const row of box.querySelectorAll("tr[data-job]")) {
      if (!seen.has(row.dataset.job)) {
        row.classList.add("new");
        seen.add(row.dataset.job);
      }
    }
  };
  const soon = () => {
    if (!pending) pending = setTimeout(refresh, Math.max(0, last + gap - Date.now()));
  };
  // The server filters the events by queue and task; the other filters are the re-render's.
  const filters = new URLSearchParams();
  for (const name of ["queue", "task"]) if (params.get(name)) filters.set(name, params.get(name));
  const connect = () => socket(`/ws/events${filters.size ? "?" + filters : ""}`, soon, (event) => {
    if (event.code === 4409) soon();
    setTimeout(connect, event.code === 4409 ? 500 : 2000);
  }, soon);
  connect();
  setInterval(soon, searching ? 10000 : 3000);
}

// Job: the snapshot, then every event, from the job's websocket.
function renderEvent(event) {
  const rows = document.getElementById("events");
  const row = document.createElement("tr");
  row.dataset.kind = event.kind;
  const data = event.data || {};
  let detail = "";
  if (event.kind === "progress") {
    detail = `${data.fraction != null ? Math.round(data.fraction * 100) + "%" : ""} ${data.message || ""}`;
  } else if (event.kind === "log") {
    detail = `[${data.level}] ${data.message}`;
  } else if (event.kind === "state") {
    detail = data.state + (data.error ? `: ${data.error}` : "");
  } else {
    detail = JSON.stringify(data);
  }
  for (const text of [event.seq, new Date(event.at).toLocaleTimeString(), event.kind, detail.trim()]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.appendChild(cell);
  }
  row.children[1].title = new Date(event.at).toLocaleString(undefined, EXACT);
  rows.appendChild(row);
  while (rows.children.length > MAX_EVENTS) rows.removeChild(rows.firstChild);
}

function showProgress(progress) {
  if (!progress) return;
  if (progress.fraction != null) {
    document.getElementById("bar").style.width = `${(progress.fraction * 100).toFixed(1)}%`;
  }
  document.getElementById("progress-text").textContent = progress.message || "";
}

function showJob(job) {
  const state = document.getElementById("job-state");
  state.textContent = job.state;
  state.className = `state ${job.state}`;
  document.getElementById("attempts").textContent = `${job.attempts} of ${job.max_attempts}`;
  document.getElementById("started").replaceChildren(timeOf(job.started_at));
  document.getElementById("finished").replaceChildren(timeOf(job.finished_at));
  document.getElementById("progress").dataset.state = job.state;
  document.getElementById("result").textContent =
    job.result == null ? "–" : JSON.stringify(job.result, null, 2);
  showProgress(job.progress);
  document.getElementById("cancel").disabled = !["queued", "running"].includes(job.state);
  document.getElementById("retry").disabled = !["failed", "cancelled"].includes(job.state);
}

// A job's attempts: when each started and ended, from its state events (the page replays them
// all), with its outcome, the worker that claimed it, and, from the job, its error and traceback.
function attemptCell(content) {
  const cell = document.createElement("td");
  if (content instanceof Node) cell.appendChild(content);
  else cell.textContent = content;
  return cell;
}

function renderAttempts(attempts, job) {
  const errors = new Map(job.errors.map((error) => [error.attempt, error]));
  const numbers = [...new Set([...attempts.keys(), ...errors.keys()])].sort((a, b) => a - b);
  if (!numbers.length) return;
  document.getElementById("attempt-rows").replaceChildren(...numbers.map((n) => {
    const run = attempts.get(n) || {};
    const error = errors.get(n);
    const ended = run.ended || (error && error.at);
    const row = document.createElement("tr");
    row.dataset.attempt = n;
    let took = "";
    if (run.started && ended) {
      const ms = new Date(ended) - new Date(run.started);
      took = ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
    }
    const outcome = run.outcome || (error ? "failed" : job.state === "running" && n === job.attempts ? "running" : "");
    let detail = "";
    if (error) {
      detail = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = `${error.type}: ${error.message}`;
      const trace = document.createElement("pre");
      trace.textContent = error.traceback || "";
      detail.append(summary, trace);
    }
    row.append(attemptCell(String(n)), attemptCell(timeOf(run.started)), attemptCell(timeOf(ended)),
      attemptCell(took), attemptCell(outcome), attemptCell(detail), attemptCell(run.worker || "–"));
    row.children[0].className = "num";
    row.children[3].className = "num";
    row.children[5].className = "message";
    row.children[6].dataset.worker = run.worker || "";
    return row;
  }));
}

function noteAttempt(attempts, event) {
  const data = event.data || {};
  if (event.kind !== "state" || !data.attempt) return;
  const run = attempts.get(data.attempt) || {};
  if (data.state === "running") {
    run.started = event.at;
    run.worker = data.worker; // the claiming process (GET /workers), recorded since migration 0024
    delete run.ended;
    delete run.outcome;
  } else if (data.previous === "running") {
    run.ended = event.at;
    run.outcome = data.state === "queued" ? (data.error ? "failed, retried" : "handed back") : data.state;
  }
  attempts.set(data.attempt, run);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea"); // a page without the clipboard API's permission
    area.value = text;
    document.body.appendChild(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) throw new Error("The browser refused to copy.");
  }
}

function jobPage() {
  const id = document.getElementById("cancel").dataset.job;
  const attempts = new Map();
  let current = null;
  let lastSeq = 0;
  const follow = () =>
    socket(`/ws/jobs/${id}?after=${lastSeq}`, (message) => {
      if (message.kind === "snapshot") {
        current = message.job;
        showJob(message.job);
        return;
      }
      lastSeq = Math.max(lastSeq, message.seq);
      renderEvent(message);
      noteAttempt(attempts, message);
      if (current && message.kind === "state") renderAttempts(attempts, current);
      if (message.kind === "progress") showProgress(message.data);
      if (message.kind === "state") {
        api("GET", `/jobs/${id}`).then((job) => {
          current = job;
          showJob(job);
          renderAttempts(attempts, job);
        }, (error) => flash(error.message, true));
      }
    }, (event) => {
      if (event.code === 4409) setTimeout(follow, 500); // may have missed events: resume after lastSeq
    });
  follow();
  onClick("#cancel", guarded(async () => {
    showJob(await api("POST", `/jobs/${id}/cancel`));
    flash("Cancel requested.");
  }));
  onClick("#retry", guarded(async () => {
    showJob(await api("POST", `/jobs/${id}/retry`));
    flash("Queued again.");
    follow();
  }));
  onClick("#copy-json", guarded(async () => {
    current = await api("GET", `/jobs/${id}`);
    await copyText(JSON.stringify(current, null, 2));
    flash(`Copied job ${id} as JSON.`);
  }));
}

// Workflow: each step's node (or, for a large workflow, its entry in the by-layer list) recoloured
// as its state events arrive on /ws/events; the workflow itself re-read shortly after, for its own
// state and the buttons.
const FINISHED = ["succeeded", "failed", "cancelled"];

function workflowPage() {
  const id = document.getElementById("workflow").dataset.workflow;
  const steps = new Map(); // job id -> its node (or list entry), whose data-state is the step's state
  for (const element of document.querySelectorAll("[data-job]")) steps.set(element.dataset.job, element);
  // Kept as states change, so that an event costs the same in a 10,000-step workflow as in a small one.
  const counts = { succeeded: 0, failed: 0, cancelled: 0 };
  for (const element of steps.values()) {
    if (element.dataset.state in counts) counts[element.dataset.state] += 1;
  }
  const setStep = (jobId, state) => {
    const element = steps.get(jobId);
    if (!element || element.dataset.state === state) return;
    if (element.dataset.state in counts) counts[element.dataset.state] -= 1;
    if (state in counts) counts[state] += 1;
    element.dataset.state = state;
    const title = element.querySelector("title");
    if (title) title.textContent = title.textContent.replace(/: \w+$/, `: ${state}`);
  };
  let painting = false;
  const showCounts = () => {
    if (painting) return;
    painting = true;
    requestAnimationFrame(() => {
      painting = false;
      const done = counts.succeeded + counts.failed + counts.cancelled;
      document.getElementById("bar").style.width = `${((done / Math.max(steps.size, 1)) * 100).toFixed(1)}%`;
      document.getElementById("wf-progress").textContent =
        `${done} of ${steps.size} steps finished ` +
        `(${counts.succeeded} succeeded, ${counts.failed} failed, ${counts.cancelled} cancelled)`;
    });
  };
  const showWorkflow = (workflow) => {
    const state = document.getElementById("wf-state");
    state.textContent = workflow.state;
    state.className = `state ${workflow.state}`;
    document.getElementById("wf-finished").replaceChildren(timeOf(workflow.finished_at));
    document.getElementById("progress").dataset.state = workflow.state;
    for (const step of workflow.steps || []) setStep(String(step.job_id), step.state);
    showCounts();
    document.getElementById("wf-cancel").disabled = workflow.state !== "running";
    document.getElementById("wf-retry").disabled =
      !(["failed", "cancelled"].includes(workflow.state) && workflow.finished_at);
  };
  // A large workflow's steps are many: its re-reads are fewer.
  const delay = steps.size > 300 ? 3000 : 300;
  let pending = null;
  const reload = () => {
    pending = null;
    api("GET", `/workflows/${id}`).then(showWorkflow, (error) => flash(error.message, true));
  };
  const soon = () => {
    if (!pending) pending = setTimeout(reload, delay);
  };
  // The server filters by workflow where it can; the step ids filter here either way.
  const connect = () => socket(`/ws/events?workflow_id=${id}`, (event) => {
    const jobId = String(event.job_id);
    if (event.kind !== "state" || !steps.has(jobId)) return;
    setStep(jobId, event.data.state);
    showCounts();
    if (FINISHED.includes(event.data.state)) soon();
  }, (event) => {
    if (event.code === 4409) soon(); // may have missed events: re-read, then listen again
    setTimeout(connect, event.code === 4409 ? 500 : 2000);
  }, soon); // what changed between the page's rendering and the socket's opening
  connect();
  onClick("#wf-cancel", guarded(async () => {
    showWorkflow(await api("POST", `/workflows/${id}/cancel`));
    flash("Cancel requested.");
  }));
  onClick("#wf-retry", guarded(async () => {
    showWorkflow(await api("POST", `/workflows/${id}/retry`));
    flash("Running again.");
  }));
}

// Queue: pause or resume it, and change its limits (PATCH /queues/{name}: an empty field clears it).
function queuePage() {
  const box = document.getElementById("queue");
  const name = box.dataset.queue;
  const form = document.getElementById("limits-form");
  const fields = {
    concurrency: "limit-concurrency",
    global_concurrency: "limit-global",
    rate_limit: "limit-rate",
    key_concurrency: "limit-key",
    key_rate_limit: "limit-key-rate",
  };
  const showQueue = (queue) => {
    box.dataset.paused = String(queue.paused);
    document.getElementById("q-paused").hidden = !queue.paused;
    document.getElementById("q-toggle").textContent = queue.paused ? "Resume" : "Pause";
    for (const [field, id] of Object.entries(fields)) {
      const value = queue.limits[field];
      document.getElementById(id).value = value == null ? "" : value;
    }
    document.getElementById("effective").textContent = queue.concurrency == null
      ? "This process does not serve the queue."
      : `This process runs up to ${queue.concurrency} of its jobs at once.`;
  };
  const path = `/queues/${encodeURIComponent(name)}`;
  api("GET", "/queues").then((queues) => {
    const queue = queues.find((q) => q.name === name);
    if (queue) showQueue(queue);
  }, (error) => flash(error.message, true));
  onClick("#q-toggle", guarded(async () => {
    const action = box.dataset.paused === "true" ? "resume" : "pause";
    showQueue(await api("POST", `${path}/${action}`));
    flash(action === "pause" ? "Paused: no process claims from it; running jobs finish." : "Resumed.");
  }));
  form.addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    const body = {};
    for (const [field, id] of Object.entries(fields)) {
      const input = document.getElementById(id);
      const text = input.value.trim();
      body[field] = text === "" ? null : input.type === "number" ? Number(text) : text;
    }
    showQueue(await api("PATCH", path, body));
    flash("Limits saved: every replica follows them within a second.");
  }));
}

function schedulesPage() {
  document.addEventListener("change", guarded(async (event) => {
    const box = event.target.closest("input[data-action=toggle]");
    if (!box) return;
    await api("PATCH", `/schedules/${box.dataset.schedule}`, { enabled: box.checked });
    flash(box.checked ? "Enabled." : "Disabled.");
  }));
  onClick("button[data-action=trigger]", guarded(async (button) => {
    const job = await api("POST", `/schedules/${button.dataset.schedule}/trigger`);
    flash(`Enqueued job ${job.id}.`);
  }));
}

function failuresPage() {
  onClick("button[data-action=retry-group]", guarded(async (button) => {
    const ids = button.dataset.jobs.split(",").filter(Boolean);
    for (const id of ids) await api("POST", `/jobs/${id}/retry`);
    flash(`Queued ${ids.length} jobs again.`);
    button.disabled = true;
  }));
}

// Enqueue: a form built from the chosen task's argument JSON schema.
function fieldFor(name, spec, required) {
  const label = document.createElement("label");
  label.textContent = `${name}${required ? " *" : ""} `;
  const type = spec.type || (spec.anyOf ? spec.anyOf.map((s) => s.type).find((t) => t !== "null") : "");
  let input;
  if (type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = spec.default === true;
  } else if (type === "object" || type === "array") {
    input = document.createElement("textarea");
    input.rows = 3;
    input.value = spec.default !== undefined ? JSON.stringify(spec.default) : "";
  } else {
    input = document.createElement("input");
    input.type = type === "number" || type === "integer" ? "number" : "text";
    if (input.type === "number") input.step = type === "integer" ? "1" : "any";
    if (spec.default !== undefined && spec.default !== null) input.value = spec.default;
  }
  input.name = name;
  input.dataset.type = type;
  input.required = required && type !== "boolean";
  if (spec.description) input.title = spec.description;
  label.appendChild(input);
  return label;
}

function readArgs(fieldset) {
  const args = {};
  for (const input of fieldset.querySelectorAll("input, textarea")) {
    const type = input.dataset.type;
    if (type === "boolean") args[input.name] = input.checked;
    else if (input.value === "") continue;
    else if (type === "number" || type === "integer") args[input.name] = Number(input.value);
    else if (type === "object" || type === "array") args[input.name] = JSON.parse(input.value);
    else args[input.name] = input.value;
  }
  return args;
}

function enqueuePage() {
  const tasks = JSON.parse(document.getElementById("tasks").textContent);
  const select = document.getElementById("task");
  const fieldset = document.getElementById("args");
  const build = () => {
    const task = tasks.find((t) => t.name === select.value);
    document.getElementById("task-description").textContent = task.description;
    const schema = task.schema;
    const required = new Set(schema.required || []);
    fieldset.replaceChildren(
      ...Object.entries(schema.properties || {}).map(([name, spec]) => fieldFor(name, spec, required.has(name))),
    );
  };
  select.addEventListener("change", build);
  build();
  // "Run again with these args" (a job's page) comes here with ?task=&queue=&priority=&args=: the form
  // filled in, for a look before it is sent. Args the form has no field for go to "more args".
  const given = new URLSearchParams(location.search);
  const extra = document.getElementById("extra-args");
  if (given.get("task") && tasks.some((t) => t.name === given.get("task"))) {
    select.value = given.get("task");
    build();
    document.getElementById("queue").value = given.get("queue") || "";
    document.getElementById("priority").value = given.get("priority") || "";
    const args = JSON.parse(given.get("args") || "{}");
    const rest = {};
    for (const [name, value] of Object.entries(args)) {
      const input = fieldset.querySelector(`[name="${CSS.escape(name)}"]`);
      if (!input) rest[name] = value;
      else if (input.dataset.type === "boolean") input.checked = Boolean(value);
      else if (input.dataset.type === "object" || input.dataset.type === "array") input.value = JSON.stringify(value);
      else input.value = value == null ? "" : value;
    }
    if (Object.keys(rest).length) {
      extra.value = JSON.stringify(rest);
      document.getElementById("extra-box").hidden = false;
    }
  }
  document.getElementById("enqueue-form").addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    const more = extra.value.trim() ? JSON.parse(extra.value) : {};
    const body = { task: select.value, args: { ...more, ...readArgs(fieldset) } };
    const queue = document.getElementById("queue").value.trim();
    if (queue) body.queue = queue;
    const priority = document.getElementById("priority").value;
    if (priority !== "") body.priority = Number(priority);
    const delay = document.getElementById("delay").value;
    if (delay !== "") body.delay_s = Number(delay);
    const job = await api("POST", "/jobs", body);
    const created = document.getElementById("created");
    created.replaceChildren("Created ");
    const link = document.createElement("a");
    link.href = `/ui/jobs/${job.id}`;
    link.id = "created-link";
    link.textContent = `job ${job.id}`;
    created.appendChild(link);
    created.hidden = false;
  }));
}

const PAGES = {
  overview,
  queue: queuePage,
  jobs: jobsPage,
  job: jobPage,
  workflow: workflowPage,
  schedules: schedulesPage,
  failures: failuresPage,
  enqueue: enqueuePage,
};

document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  setInterval(localTimes, 10000);
  const init = PAGES[document.body.dataset.page];
  if (init) init();
});
