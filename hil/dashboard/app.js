// The hil dashboard: a table of every run in the runs folder, the curves of the focused run or of
// the ticked runs overlaid (uPlot), and the focused run's status, health, events and controls.
"use strict";

const params = new URLSearchParams(location.search);
if (params.get("token")) sessionStorage.setItem("hil-token", params.get("token"));
const token = sessionStorage.getItem("hil-token") || "";
const headers = token ? { Authorization: "Bearer " + token } : {};

const LIVE = ["running", "paused"];
const PER_STEP = ["loss", "queries_per_second"];  // the trainer's per-step metrics; the others are per epoch
const PAGE = 10000;  // metric rows per request
const METRIC_COLUMNS = [["test_accuracy_cumulative", "test (cumulative)"],
                        ["test_accuracy_final_layer", "test (final)"],
                        ["val_accuracy_cumulative", "validation (cumulative)"], ["train_loss", "train loss"]];
const NOT_COMPARED = ["run_dir"];  // differs in every run and is the run's id already
// x ticks at whole numbers (steps, epochs): 1, 2, 5, 10, 20, 50...
const WHOLE = Array.from({ length: 8 }, (_, e) => [1, 2, 5].map((m) => m * 10 ** e)).flat();
const COLORS = ["#2b62d0", "#d0652b", "#3a9a5b", "#8e44ad", "#c0392b", "#16a085", "#b7950b", "#5d6d7e"];

// runs: the last /api/runs reply, each with its flattened config; metrics: per run id, the rows read
// so far as one {x, y} series per metric name, and the cursor to read on from
const state = { focus: null, picked: new Set(), runs: [], sort: { key: null, dir: 1 }, metrics: {}, events: null };
const charts = {};  // per chart element id: its uPlot and the series it was made for
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers, ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function text(value) {
  if (value == null) return "–";
  if (typeof value === "number") return String(Number(value.toPrecision(4)));
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function flatten(config, prefix = "") {
  // nested sections become dotted keys (rule_options.estimator), so runs are compared field by field
  return Object.fromEntries(Object.entries(config).flatMap(([key, value]) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? Object.entries(flatten(value, `${prefix}${key}.`)) : [[prefix + key, value]]));
}

function sweptFields(runs) {
  const keys = new Set(runs.flatMap((run) => Object.keys(run.flat)));
  return [...keys].filter((key) => !NOT_COMPARED.includes(key)
    && new Set(runs.map((run) => JSON.stringify(run.flat[key]))).size > 1);
}

function columns() {
  // id and status first: the rows draw those two themselves
  return [
    { key: "id", label: "id", value: (run) => run.id },
    { key: "status", label: "status", value: (run) => run.status },
    ...sweptFields(state.runs).map((key) => ({ key, label: key, value: (run) => run.flat[key] })),
    ...METRIC_COLUMNS.map(([key, label]) => ({ key, label, value: (run) => run.latest[key] })),
  ];
}

function compare(a, b, dir) {
  // missing values last either way; numbers as numbers; the rest as text, with the digits in it as numbers
  if (a == null || b == null) return (a == null) - (b == null);
  if (typeof a === "number" && typeof b === "number") return dir * (a - b);
  return dir * text(a).localeCompare(text(b), undefined, { numeric: true });
}

function renderTable() {
  const cols = columns();
  const { key, dir } = state.sort;
  const by = cols.find((col) => col.key === key);
  const runs = by ? [...state.runs].sort((a, b) => compare(by.value(a), by.value(b), dir)) : state.runs;
  const head = document.createElement("tr");
  head.append(document.createElement("th"));  // above the overlay checkboxes
  for (const col of cols) {
    const th = document.createElement("th");
    th.textContent = col.label;
    th.dataset.key = col.key;
    if (col === by) th.className = dir > 0 ? "up" : "down";
    th.onclick = () => { state.sort = { key: col.key, dir: col === by ? -dir : 1 }; renderTable(); };
    head.append(th);
  }
  $("runs").tHead.replaceChildren(head);
  $("runs").tBodies[0].replaceChildren(...runs.map((run) => tableRow(run, cols)));
}

function tableRow(run, cols) {
  const tr = document.createElement("tr");
  tr.dataset.run = run.id;
  if (run.id === state.focus) tr.className = "focus";
  const pick = document.createElement("input");
  pick.type = "checkbox";
  pick.checked = state.picked.has(run.id);
  pick.title = "overlay this run's curves";
  pick.onchange = () => {
    if (pick.checked) state.picked.add(run.id); else state.picked.delete(run.id);
    refreshCurves();
  };
  tr.insertCell().append(pick);
  const id = tr.insertCell();
  id.textContent = run.id; id.className = "run-id"; id.title = "follow this run below";
  id.onclick = () => focus(run.id);
  const badge = document.createElement("span");
  badge.textContent = run.status; badge.className = "badge " + run.status;
  tr.insertCell().append(badge);
  for (const col of cols.slice(2)) {
    const cell = tr.insertCell();
    const value = col.value(run);
    cell.textContent = text(value);
    if (typeof value === "number") cell.className = "value";
  }
  return tr;
}

function points(id, name) {
  return state.metrics[id]?.series[name] || { x: [], y: [] };
}

function loadMetrics(id) {
  // one request per run at a time, so that no row is added twice
  const read = (state.metrics[id] ??= { since: 0, done: false, loading: null, series: {} });
  if (!read.done && !read.loading) read.loading = readRows(id, read).finally(() => { read.loading = null; });
  return read.loading;
}

async function readRows(id, read) {
  // a run's final status is written after its last row: final before this read means no rows come later
  const status = state.runs.find((run) => run.id === id)?.status;
  const page = await api(`/api/runs/${id}/metrics?since=${read.since}&limit=${PAGE}`);
  for (const row of page.rows) {
    const series = (read.series[row.name] ??= { x: [], y: [] });
    series.x.push(PER_STEP.includes(row.name) ? row.step : row.epoch);
    series.y.push(row.value);
  }
  read.since = page.next;
  read.done = status !== undefined && !LIVE.includes(status) && page.rows.length < PAGE;
}

function plot(id, xLabel, lines) {
  // uPlot's default y scale fits the data with 10% padding (reaching to 0 only when the data come near it)
  const data = uPlot.join(lines.map((line) => [line.points.x, line.points.y]));
  const key = [xLabel, ...lines.map((line) => line.label)].join("\n");
  if (charts[id]?.key === key) {
    charts[id].plot.setData(data);
    return;
  }
  charts[id]?.plot.destroy();
  const series = [{ label: xLabel }, ...lines.map((line, i) =>
    ({ label: line.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true }))];
  const options = { width: 520, height: 220, scales: { x: { time: false } }, axes: [{ incrs: WHOLE }, {}], series };
  charts[id] = { key, plot: new uPlot(options, data, $(id)) };
}

function redraw() {
  const picked = [...state.picked];
  $("overlay-metric").hidden = !picked.length;
  if (picked.length) {
    $("curves-of").textContent = `Curves of the ticked runs, one line each: ${picked.join(", ")}`;
    const each = (name) => picked.map((id) => ({ label: id, points: points(id, name) }));
    plot("loss", "step", each("loss"));
    plot("accuracy", "epoch", each($("overlay-metric").value));
    plot("qps", "step", each("queries_per_second"));
    return;
  }
  $("curves-of").textContent = `Curves of ${state.focus} (tick runs in the table to compare them)`;
  const line = (label, name) => ({ label, points: points(state.focus, name) });
  plot("loss", "step", [line("loss", "loss")]);
  plot("accuracy", "epoch", [line("test, cumulative", "test_accuracy_cumulative"),
                             line("test, final layer", "test_accuracy_final_layer"),
                             line("validation, cumulative", "val_accuracy_cumulative")]);
  plot("qps", "step", [line("queries/s", "queries_per_second")]);
}

function showRun(run) {
  $("run").hidden = false;
  $("run-id").textContent = run.id;
  const badge = $("run-status");
  badge.textContent = run.status; badge.className = "badge " + run.status;
  $("run-device").textContent = `${run.identity} — ${run.device} — seed ${run.seed}`
    + (run.exit_reason ? ` — ${run.exit_reason}` : "");
  $("stop").disabled = !LIVE.includes(run.status);
  $("pause").disabled = run.status !== "running";
  $("resume").disabled = run.status !== "paused";
  const c = run.counters || {};
  const rows = [
    ["queries", c.queries], ["device seconds", c.device_seconds], ["writes per cell", c.writes_per_cell],
    ["reconnects", c.link_reconnects], ["CRC errors", c.link_crc_errors], ["timeouts", c.link_timeouts],
    ["round trip p50 (ms)", c.link_rtt_p50_ms], ["round trip p99 (ms)", c.link_rtt_p99_ms],
  ];
  $("health").innerHTML = rows.map(([k, v]) =>
    `<tr><td>${k}</td><td class="value">${text(v)}</td></tr>`).join("");
}

async function refreshRuns() {
  try {
    const [status, runs] = await Promise.all([api("/api/status"), api("/api/runs")]);
    $("service").textContent = `service ${status.service}, ${runs.length} runs in ${status.runs_dir}`;
    state.runs = runs.map((run) => ({ ...run, flat: flatten(run.config) }));
    if (!state.focus && runs.length) focus(runs[0].id);
    renderTable();
  } catch (err) {
    $("service").textContent = "service unreachable: " + err.message;
  }
}

async function refreshCurves() {
  const shown = state.picked.size ? [...state.picked] : [state.focus];
  await Promise.all(shown.map(loadMetrics));
  redraw();
}

async function refreshRun() {
  if (!state.focus) return;
  const id = state.focus;
  try {
    const run = await api(`/api/runs/${id}`);
    if (id === state.focus) showRun(run);
    await refreshCurves();
  } catch (err) {
    $("control-result").textContent = err.message;
  }
}

function follow(id) {
  if (state.events) state.events.close();
  $("events").innerHTML = "";
  const source = new EventSource(`/api/runs/${id}/events` + (token ? `?token=${encodeURIComponent(token)}` : ""));
  source.onmessage = () => {};
  const add = (e) => {
    const data = JSON.parse(e.data);
    if (data.estimators) showEstimates(data);
    const li = document.createElement("li");
    li.textContent = `${new Date(data.time * 1000).toLocaleTimeString()} ${data.kind} ` +
      JSON.stringify(Object.fromEntries(Object.entries(data).filter(([k]) => k !== "kind" && k !== "time")));
    $("events").appendChild(li);
  };
  for (const kind of ["started", "resumed", "paused", "checkpoint", "reconnect", "finished", "stopped", "failed"]) {
    source.addEventListener(kind, add);
  }
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) source.close(); };
  state.events = source;
}

function showEstimates(data) {
  // how the rule estimates each layer's gradient, and what a step of that layer costs on the device
  $("run-estimate").textContent = "gradient estimate per layer: " + data.estimators.map((kind, i) =>
    `${i}: ${kind} (${data.queries_per_layer_step[i]} queries/step, eps ${Number(data.eps[i].toPrecision(3))})`)
    .join(", ");
}

function focus(id) {
  $("run-estimate").textContent = "";
  state.focus = id;
  follow(id);
  refreshRun();
  renderTable();
}

async function control(action) {
  try {
    const result = await api(`/api/runs/${state.focus}/${action}`, { method: "POST" });
    $("control-result").textContent = `${result.action}: ${result.detail}`;
  } catch (err) {
    $("control-result").textContent = `${action} refused: ${err.message}`;
  }
  refreshRun();
}

for (const action of ["stop", "pause", "resume"]) $(action).onclick = () => control(action);
$("overlay-metric").onchange = redraw;
refreshRuns();
setInterval(refreshRuns, 3000);
setInterval(refreshRun, 1000);
