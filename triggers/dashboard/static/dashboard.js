// CoreMachine dashboard: live refresh of the page's #live part, and the buttons that call the JSON API.
"use strict";

const API = "/api";

function flash(text, kind) {
  const box = document.getElementById("flash");
  box.textContent = text;
  box.className = kind || "info";
  box.hidden = false;
}

async function call(method, path, body) {
  const response = await fetch(API + path, {
    method: method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = data && data.message ? data.message : response.status + " " + response.statusText;
    throw new Error(message);
  }
  return data;
}

function ask(title, body, yesLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  const holder = document.getElementById("confirm-body");
  holder.replaceChildren();
  if (typeof body === "string") holder.textContent = body; else holder.append(body);
  const yes = document.getElementById("confirm-yes");
  yes.hidden = !yesLabel;
  yes.textContent = yesLabel || "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function listOf(deadLetters) {
  const list = document.createElement("ul");
  list.className = "preview";
  for (const d of deadLetters.slice(0, 20)) {
    const item = document.createElement("li");
    item.textContent = d.id + " · " + d.queue + " · " + d.reason + ": " + (d.description || "").slice(0, 120);
    list.append(item);
  }
  if (deadLetters.length > 20) {
    const more = document.createElement("li");
    more.textContent = "… and " + (deadLetters.length - 20) + " more";
    list.append(more);
  }
  return list;
}

const actions = {
  async cancel(button) {
    if (!(await ask("Cancel this job?", "Unstarted tasks are cancelled; running ones finish, then the job ends cancelled.", "Cancel job"))) return;
    const job = await call("POST", "/jobs/" + button.dataset.job + "/cancel", { reason: "cancelled from the dashboard" });
    flash("Cancelling: the job is " + job.status + ".", "ok");
  },
  async retry(button) {
    if (!(await ask("Retry the failed tasks?", "The failed and cancelled tasks where the job stopped run again with a fresh attempt budget.", "Retry"))) return;
    const result = await call("POST", "/jobs/" + button.dataset.job + "/retry");
    flash("Retrying stage " + result.retried_stage + ": " + result.tasks_requeued + " task(s) queued again.", "ok");
  },
  async rerun(button) {
    if (!(await ask("Run the whole job again?", "A new round of the same job: every stage runs again, history is kept.", "Rerun"))) return;
    const job = await call("POST", "/jobs/" + button.dataset.job + "/rerun");
    flash("Rerunning: the job is " + job.status + ".", "ok");
  },
  async replay(button) {
    await deadLetterAction("replay", button.dataset.ids.split(","));
  },
  async purge(button) {
    await deadLetterAction("purge", button.dataset.ids.split(","));
  },
};

async function deadLetterAction(verb, ids) {
  const preview = await call("POST", "/ops/deadletters/" + verb, { ids: ids, dry_run: true });
  if (preview.count === 0) {
    await ask("Nothing to " + verb, "None of these dead letters is there any more.");
    return;
  }
  const body = document.createElement("div");
  const lead = document.createElement("p");
  lead.textContent = (verb === "replay" ? "Dry run: these would be sent back to their queue under a new message id."
                                        : "Dry run: these would be deleted for good.");
  body.append(lead, listOf(preview.dead_letters));
  const label = (verb === "replay" ? "Replay " : "Purge ") + preview.count;
  if (!(await ask((verb === "replay" ? "Replay " : "Purge ") + preview.count + " dead letter(s)?", body, label))) return;
  const done = await call("POST", "/ops/deadletters/" + verb, { ids: ids, dry_run: false });
  flash((verb === "replay" ? "Replayed " : "Purged ") + done.count + " dead letter(s).", "ok");
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  event.preventDefault();
  button.disabled = true;
  try {
    await actions[button.dataset.action](button);
    await refresh();
  } catch (error) {
    flash(error.message, "error");
  } finally {
    button.disabled = false;
  }
});

async function refresh() {
  const live = document.getElementById("live");
  if (!live) return;
  const url = new URL(window.location.href);
  url.searchParams.set("fragment", "1");
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (response.redirected || !response.ok) return;
  live.innerHTML = await response.text();
  const summary = live.querySelector("[data-terminal]");
  if (!summary) return;
  const paused = live.dataset.refresh === "0";
  if (summary.dataset.terminal === "true") {
    live.dataset.refresh = "0";  // a finished job stops polling...
  } else if (paused) {
    live.dataset.refresh = live.dataset.every;  // ...until a retry or rerun brings it back
    schedule();
  }
}

function schedule() {
  const live = document.getElementById("live");
  const every = live ? Number(live.dataset.refresh || 0) : 0;
  if (every > 0) {
    setTimeout(async () => {
      try { await refresh(); } catch (error) { /* the next round tries again */ }
      schedule();
    }, every);
  }
}

document.addEventListener("DOMContentLoaded", schedule);
