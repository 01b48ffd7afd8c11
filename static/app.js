// The web page: one websocket to /api/v1/ws, the token typed once and kept in this tab's session
// storage. Tweet text is only ever inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "sentiment-token";
let socket = null;
let sequence = 0;
const pending = new Map(); // request_id -> function taking the reply
let rows = []; // the table's rows: {id, tweet, label, score}
let sortKey = null;
let sortAscending = true;
let token = null;
let models = []; // the loaded models' names and display names, as /api/v1/models lists them

function show(element, text) {
  element.textContent = text;
}

function setStatus(text, connected) {
  show($("status"), text);
  $("status").classList.toggle("connected", connected);
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

// The models the server lists, in the picker; the one picked answers every request.
async function loadModels() {
  const { models: models_ } = await getJson("/api/v1/models");
  const picker = $("model");
  const picked = picker.value;
  picker.replaceChildren();
  for (const item of models_) {
    const option = document.createElement("option");
    option.value = item.name;
    option.disabled = item.state !== "loaded";
    option.textContent = `${item.display_name}${item.default ? " (default)" : ""}`;
    option.selected = picked ? item.name === picked : item.default;
    picker.append(option);
  }
  picker.disabled = false;
  models = listed(models_);
}

async function loadCard() {
  const name = $("model").value;
  const body = await getJson(name ? `/api/v1/models/${encodeURIComponent(name)}` : "/api/v1/model");
  // A model's figures are its own card's (evaluation.json): a model trained elsewhere may have
  // none, and the card then says only what the contract does.
  const figures = body.figures || {};
  const ours = figures.this_model;
  const old = figures.approach_2020;
  const measured = ours && typeof ours.accuracy === "number" && typeof figures.test_rows === "number"
    ? `${(ours.accuracy * 100).toFixed(1)}% accurate on ` +
      `${figures.test_rows.toLocaleString()} held-out tweets` +
      (typeof ours.balanced_accuracy === "number"
        ? ` (${(ours.balanced_accuracy * 100).toFixed(1)}% balanced)` : "") +
      (old ? `, against ${(old.accuracy * 100).toFixed(1)}% for the 2020 approach` : "") + ". "
    : "";
  show($("card"), `${body.display_name || body.name} ${body.version}: ${measured}` +
    `Up to ${body.limits.max_tweets.toLocaleString()} tweets a request, ` +
    `${body.limits.max_tweet_chars.toLocaleString()} characters each.`);
  $("tweet").maxLength = body.limits.max_tweet_chars;
}

// Which model answers by default (stable), the candidate tried beside it: how often the two
// agree on the tweets it shadowed, how each does on the labelled reference set, and what the
// promotion guard says; and what a rollback would bring back; read every 10 s.
async function loadAliases() {
  const aliases = await getJson("/api/v1/aliases");
  const named = (alias) => `${alias.model} ${alias.version}`;
  const percent = (share) => `${(share * 100).toFixed(1)}%`;
  let text = `Serving ${named(aliases.stable)} by default`;
  const candidate = aliases.candidate;
  const shadow = aliases.shadow;
  if (candidate) {
    text += `; candidate ${named(candidate)}: ` + (shadow.pairs
      ? `agrees on ${percent(shadow.agreement)} of ${shadow.pairs.toLocaleString()} tweets shadowed`
      : "no tweet shadowed yet");
    const labelled = aliases.labelled;
    if (labelled && labelled.candidate) {
      text += `; on ${labelled.tweets.toLocaleString()} tweets people labelled, balanced ` +
        `accuracy ${percent(labelled.candidate.balanced_accuracy)} against stable's ` +
        percent(labelled.stable.balanced_accuracy);
    }
    if (aliases.guard) {
      text += aliases.guard.promotable ? "; promotable" : `; not promotable: ${aliases.guard.reason}`;
    }
    if (aliases.canary_percent) text += `, answering ${aliases.canary_percent}% of requests`;
  }
  if (aliases.previous) text += `; a rollback brings back ${named(aliases.previous)}`;
  show($("aliases"), `${text}.`);
  $("aliases").hidden = false;
}

let aliasesTimer = null;

async function start(given) {
  token = given;
  await loadModels();
  await loadCard();
  await loadAliases();
  clearInterval(aliasesTimer);
  aliasesTimer = setInterval(() => loadAliases().catch(() => {}), 10000);
  connect(token);
}

function connect(token) {
  if (socket) socket.close();
  const ws = new WebSocket(`wss://${location.host}/api/v1/ws`);
  socket = ws;
  setStatus("connecting…", false);
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "auth_ok") {
      setStatus(`connected, default model ${message.model} ${message.model_version}`, true);
      show($("error"), "");
      predictTyped();
      return;
    }
    const reply = pending.get(message.request_id);
    pending.delete(message.request_id);
    if (message.type === "prediction_error") {
      show($("error"), `${message.error} ${message.text}: ${message.detail}`);
    } else if (reply) {
      show($("error"), "");
      reply(message.predictions, message);
    }
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    setStatus(`not connected (${event.code}${event.reason ? ": " + event.reason : ""})`, false);
    // 1001: the server is restarting; come back to a new worker.
    if (event.code === 1001) setTimeout(() => connect(token), 500);
  };
}

function listed(items) {
  return items.filter((item) => item.state === "loaded").map((item) => ({ name: item.name, title: item.display_name }));
}

function request(tweets, options, reply, name = $("model").value) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    show($("error"), "Not connected: enter the API token first.");
    return;
  }
  const id = String(++sequence);
  pending.set(id, reply);
  const model = name ? { model: name } : {};
  const message = { type: "prediction_request", request_id: id, tweets, ...options, ...model };
  socket.send(JSON.stringify(message));
}

// The typed tweet: label, score and the terms coloured by their pull.

let typedTimer = null;
let latestTyped = 0;

function predictTyped() {
  const text = $("tweet").value;
  if (!text.trim()) {
    show($("label"), "–");
    show($("score"), "");
    $("terms").replaceChildren();
    $("compare").hidden = true;
    return;
  }
  const mine = ++latestTyped;
  request({ typed: text }, { scores: true, explain: true }, (predictions, message) => {
    if (mine !== latestTyped) return; // an older answer arriving late
    setStatus(`connected, answered by ${message.model} ${message.model_version}`, true);
    const answer = predictions.typed;
    show($("label"), answer.label);
    $("label").className = `label ${answer.label}`;
    show($("score"), `score ${answer.score.toFixed(3)}`);
    const terms = [...answer.explanation.Positive, ...answer.explanation.Negative];
    const strongest = Math.max(0.0001, ...terms.map((t) => Math.abs(t.weight)));
    $("terms").replaceChildren(...terms.map((t) => {
      const span = document.createElement("span");
      span.textContent = t.term;
      span.title = `pull ${t.weight > 0 ? "+" : ""}${t.weight.toFixed(3)}`;
      span.className = t.weight > 0 ? "term Positive" : "term Negative";
      const alpha = (0.15 + 0.6 * Math.abs(t.weight) / strongest).toFixed(2);
      span.style.backgroundColor = t.weight > 0 ? `rgba(26,127,55,${alpha})` : `rgba(198,40,40,${alpha})`;
      return span;
    }));
  });
  compareTyped(text, mine);
}

// Every model's label and score for the typed tweet, side by side.

function compareTyped(text, mine) {
  const body = $("compare").tBodies[0];
  body.replaceChildren(...models.map((item) => {
    const row = document.createElement("tr");
    row.dataset.model = item.name;
    for (const value of [item.title, "…", ""]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    return row;
  }));
  $("compare").hidden = !models.length;
  for (const item of models) {
    request({ typed: text }, { scores: true }, (predictions) => {
      if (mine !== latestTyped) return;
      const row = [...body.rows].find((r) => r.dataset.model === item.name);
      const answer = predictions.typed;
      show(row.cells[1], answer.label);
      row.cells[1].className = `label ${answer.label}`;
      show(row.cells[2], answer.score.toFixed(3));
    }, item.name);
  }
}

// Many lines: a sortable table, downloadable as CSV.

function labelLines() {
  const lines = $("lines").value.split("\n").filter((line) => line.trim());
  if (!lines.length) return;
  const tweets = Object.fromEntries(lines.map((line, i) => [String(i + 1), line]));
  request(tweets, { scores: true }, (predictions) => {
    rows = Object.entries(predictions).map(([id, answer]) => (
      { id: Number(id), tweet: tweets[id], label: answer.label, score: answer.score }));
    sortKey = null;
    renderTable();
    $("download").disabled = false;
  });
}

function renderTable() {
  const sorted = [...rows];
  if (sortKey) {
    sorted.sort((a, b) => (a[sortKey] < b[sortKey] ? -1 : a[sortKey] > b[sortKey] ? 1 : 0));
    if (!sortAscending) sorted.reverse();
  }
  $("table").tBodies[0].replaceChildren(...sorted.map((row) => {
    const tr = document.createElement("tr");
    for (const key of ["id", "tweet", "label", "score"]) {
      const td = document.createElement("td");
      td.textContent = key === "score" ? row.score.toFixed(3) : String(row[key]);
      if (key === "label") td.className = row.label;
      tr.append(td);
    }
    return tr;
  }));
  for (const th of $("table").tHead.rows[0].cells) {
    th.classList.toggle("asc", th.dataset.key === sortKey && sortAscending);
    th.classList.toggle("desc", th.dataset.key === sortKey && !sortAscending);
  }
  $("table").hidden = false;
}

// Text a spreadsheet would run as a formula gets a leading ' (OWASP), as the service's CSV does.
function csvField(value) {
  let text = String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function downloadCsv() {
  const lines = ["id,tweet,label,score", ...rows.map((r) =>
    [r.id, r.tweet, r.label, r.score].map(csvField).join(","))];
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
  link.download = "labels.csv";
  link.click();
  URL.revokeObjectURL(link.href);
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const typed = $("token").value.trim();
    if (!typed) return;
    sessionStorage.setItem(TOKEN_KEY, typed);
    $("token").value = "";
    try {
      await start(typed);
    } catch (error) {
      show($("error"), `The model's card could not be read: ${error.message}`);
      setStatus("not connected", false);
    }
  });
  $("tweet").addEventListener("input", () => {
    clearTimeout(typedTimer);
    typedTimer = setTimeout(predictTyped, 120);
  });
  $("model").addEventListener("change", () => {
    loadCard().then(predictTyped, (error) => show($("error"), `The model's card could not be read: ${error.message}`));
  });
  $("label-lines").addEventListener("click", labelLines);
  $("download").addEventListener("click", downloadCsv);
  for (const th of $("table").tHead.rows[0].cells) {
    th.addEventListener("click", () => {
      sortAscending = sortKey === th.dataset.key ? !sortAscending : true;
      sortKey = th.dataset.key;
      renderTable();
    });
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) start(saved).catch(() => sessionStorage.removeItem(TOKEN_KEY));
});
