// skiplock dashboard, Jobs page: bulk retry, cancel or delete of the selected jobs, or of every
// job the filter matches, through POST /jobs/bulk (app.js's api(), flash(), guarded()). Each asks
// for confirmation with the count; the bulk job's progress is shown until it ends. The selection
// outlives the live list's re-renders.
"use strict";

function bulkFilter() {
  const params = new URLSearchParams(location.search);
  const filter = {};
  for (const name of ["state", "queue", "task", "error"]) if (params.get(name)) filter[name] = params.get(name);
  if (params.get("args")) filter.args = JSON.parse(params.get("args"));
  return filter;
}

function bulkPage() {
  const box = document.getElementById("jobs-table");
  const action = document.getElementById("bulk-action");
  const selectedButton = document.getElementById("bulk-selected");
  const status = document.getElementById("bulk-status");
  const picked = new Set();
  const show = () => {
    for (const input of box.querySelectorAll("input.bulk-pick")) input.checked = picked.has(input.value);
    selectedButton.textContent = `the selected (${picked.size})`;
    selectedButton.disabled = picked.size === 0;
  };
  new MutationObserver(show).observe(box, { childList: true });
  box.addEventListener("change", (event) => {
    const input = event.target;
    if (input.id === "bulk-page") {
      for (const pick of box.querySelectorAll("input.bulk-pick")) {
        if (input.checked) picked.add(pick.value);
        else picked.delete(pick.value);
      }
    } else if (input.classList.contains("bulk-pick")) {
      if (input.checked) picked.add(input.value);
      else picked.delete(input.value);
    }
    show();
  });
  const follow = async (started) => {
    status.replaceChildren("Bulk ");
    const link = document.createElement("a");
    link.href = `/ui/jobs/${started.job_id}`;
    link.id = "bulk-job";
    link.textContent = `job ${started.job_id}`;
    status.append(link, `: ${started.action} of ${started.matched.toLocaleString()} jobs`);
    const progress = document.createElement("span");
    status.append(" ", progress);
    for (;;) {
      const job = await api("GET", `/jobs/${started.job_id}`);
      const fraction = job.progress && job.progress.fraction !== undefined ? job.progress.fraction : 0;
      progress.textContent = `${Math.round(fraction * 100)}% (${job.state})`;
      if (["succeeded", "failed", "cancelled"].includes(job.state)) {
        if (job.result) progress.textContent += `: ${job.result.done} done, ${job.result.skipped} skipped`;
        status.dataset.state = job.state;
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };
  const start = async (body, count, what) => {
    if (!confirm(`${body.action[0].toUpperCase()}${body.action.slice(1)} ${count.toLocaleString()} ${what}?`)) return;
    const started = await api("POST", "/jobs/bulk", body);
    picked.clear();
    show();
    await follow(started);
  };
  selectedButton.addEventListener("click", guarded(async () => {
    const ids = [...picked].map(Number);
    await start({ action: action.value, ids }, ids.length, ids.length === 1 ? "selected job" : "selected jobs");
  }));
  document.getElementById("bulk-matching").addEventListener("click", guarded(async () => {
    const filter = bulkFilter();
    const { matched } = await api("POST", "/jobs/bulk/count", filter);
    if (matched === 0) {
      flash("No job matches the filter.");
      return;
    }
    await start({ action: action.value, filter }, matched, "jobs matching the filter");
  }));
  show();
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "jobs") bulkPage();
});
