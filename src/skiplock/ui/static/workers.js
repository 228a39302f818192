// skiplock dashboard, Workers page: the table re-rendered by the server every two seconds and after
// each action; quiet, resume and stop go through the public API (app.js's api(), flash(), guarded()).
"use strict";

function workersPage() {
  const refresh = async () => {
    const response = await fetch("/ui/workers?fragment=true");
    if (response.ok) document.getElementById("workers").innerHTML = await response.text();
  };
  setInterval(refresh, 2000);
  onClick("button[data-action=quiet], button[data-action=resume], button[data-action=stop]", guarded(async (button) => {
    const { action, worker } = button.dataset;
    if (action === "stop" && !confirm(`Stop ${worker}? It shuts down as on SIGTERM.`)) return;
    await api("POST", `/workers/${encodeURIComponent(worker)}/${action}`);
    flash({ quiet: "Quiet asked: it claims nothing more.", resume: "Resume asked.", stop: "Stop asked." }[action]);
    await refresh();
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "workers") workersPage();
});
