// The status page's script: reads the admin routes with the token the operator gives, and
// renders them. Every value from the daemon or a CRM goes in as text, never as markup.
"use strict";

const REFRESH_MS = 5000;
let token = sessionStorage.getItem("unisync-admin-token") || "";
let timer = null;

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function showProblem(message) {
  const problem = document.getElementById("problem");
  problem.textContent = message;
  problem.hidden = !message;
}

async function admin(method, path) {
  const answer = await fetch(path, {
    method,
    headers: { Authorization: "Bearer " + token },
    cache: "no-store",
  });
  const body = await answer.json().catch(() => null);
  if (!answer.ok) {
    const error = body && body.error ? body.error : { code: String(answer.status), message: answer.statusText };
    throw new Error(error.code + ": " + error.message);
  }
  return body;
}

function connectionState(name, status) {
  if ((status.disabled || []).includes(name)) return ["disabled (enabled = false)", "disabled"];
  const pause = (status.pauses || {})[name];
  if (pause) {
    const until = pause.until_local;
    const words = pause.code ? " — " + pause.code + ": " + pause.message : "";
    return ["paused: " + pause.reason + words + " (until " + until + ")", "paused"];
  }
  return ["pushing", "running"];
}

function renderConnections(status) {
  const body = document.querySelector("#connections tbody");
  body.replaceChildren();
  for (const [name, counts] of Object.entries(status.connections || {})) {
    const row = document.createElement("tr");
    row.dataset.connection = name;
    cell(row, name);
    cell(row, counts.ready, "number");
    cell(row, counts.retry_waiting, "number");
    cell(row, counts.in_flight, "number");
    cell(row, counts.dead_letters, "number");
    const usage = (status.api_usage || {})[name];
    cell(row, usage ? usage.used + " / " + usage.limit : "", "number");
    const [text, className] = connectionState(name, status);
    cell(row, text, className);
    body.appendChild(row);
  }
}

function actionButton(label, method, path) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await admin(method, path);
      await refresh();
    } catch (error) {
      showProblem(error.message);
      button.disabled = false;
    }
  });
  return button;
}

function renderDeadLetters(list) {
  const letters = list.dead_letters || [];
  const body = document.querySelector("#dead-letters tbody");
  body.replaceChildren();
  for (const letter of letters) {
    const row = document.createElement("tr");
    row.dataset.letter = letter.id;
    cell(row, letter.contact_id);
    cell(row, letter.connection);
    cell(row, letter.kind === "conflict" ? "conflict" : letter.error.class);
    const error = letter.error;
    cell(row, error.code + ": " + error.message + (error.field ? " (" + error.field + ")" : ""));
    cell(row, Object.keys(letter.patch || {}).join(", "));
    cell(row, letter.attempts, "number");
    cell(row, new Date(letter.failed_at).toLocaleString());
    const path = "/api/v1/admin/dead-letters/" + encodeURIComponent(letter.id);
    const actions = cell(row, "");
    actions.appendChild(actionButton(letter.kind === "conflict" ? "Write ours" : "Retry", "POST", path + "/retry"));
    actions.appendChild(actionButton(letter.kind === "conflict" ? "Keep the CRM's" : "Drop", "DELETE", path));
    body.appendChild(row);
  }
  document.getElementById("no-dead-letters").hidden = letters.length > 0;
  document.getElementById("retry-all").hidden = letters.length === 0;
}

async function refresh() {
  try {
    const [status, letters] = await Promise.all([
      admin("GET", "/api/v1/admin/status"),
      admin("GET", "/api/v1/admin/dead-letters"),
    ]);
    renderConnections(status);
    renderDeadLetters(letters);
    document.getElementById("content").hidden = false;
    document.getElementById("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    showProblem("");
  } catch (error) {
    showProblem(error.message);
  }
}

function start() {
  clearInterval(timer);
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = document.getElementById("token").value;
    sessionStorage.setItem("unisync-admin-token", token);
    start();
  });
  document.getElementById("retry-all").addEventListener("click", async () => {
    try {
      await admin("POST", "/api/v1/admin/dead-letters/retry-all");
      await refresh();
    } catch (error) {
      showProblem(error.message);
    }
  });
  if (token) start();
});
