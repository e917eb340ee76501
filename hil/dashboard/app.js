// The hil dashboard: polls the run list and a run's metrics, follows its events, sends controls.
"use strict";

const params = new URLSearchParams(location.search);
if (params.get("token")) sessionStorage.setItem("hil-token", params.get("token"));
const token = sessionStorage.getItem("hil-token") || "";
const headers = token ? { Authorization: "Bearer " + token } : {};

const state = { runId: null, since: 0, series: {}, events: null };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers, ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function resetSeries() {
  state.since = 0;
  state.series = { loss: [], queries_per_second: [], test_accuracy_final_layer: [], test_accuracy_cumulative: [],
                   val_accuracy_cumulative: [] };
}

function draw(canvasId, lines, yRange) {
  const canvas = $(canvasId), ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 36;
  ctx.clearRect(0, 0, w, h);
  const points = lines.flatMap((l) => l.points);
  ctx.strokeStyle = "#c8ccd4"; ctx.strokeRect(pad, 8, w - pad - 8, h - pad);
  if (!points.length) return;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y0 = yRange ? yRange[0] : Math.min(...ys), y1 = yRange ? yRange[1] : Math.max(...ys, y0 + 1e-9);
  const px = (x) => pad + (x - x0) / (x1 - x0) * (w - pad - 8);
  const py = (y) => 8 + (1 - (y - y0) / (y1 - y0)) * (h - pad);
  ctx.fillStyle = "#556"; ctx.font = "11px sans-serif";
  ctx.fillText(y1.toPrecision(3), 2, 16); ctx.fillText(y0.toPrecision(3), 2, h - pad + 8);
  ctx.fillText(String(x0), pad, h - 10); ctx.fillText(String(x1), w - 40, h - 10);
  for (const line of lines) {
    ctx.strokeStyle = line.color; ctx.lineWidth = 1.5; ctx.beginPath();
    line.points.forEach(([x, y], i) => (i ? ctx.lineTo(px(x), py(y)) : ctx.moveTo(px(x), py(y))));
    ctx.stroke();
    if (line.points.length < 50) {
      ctx.fillStyle = line.color;
      for (const [x, y] of line.points) ctx.fillRect(px(x) - 2, py(y) - 2, 4, 4);
    }
  }
}

function redraw() {
  const s = state.series;
  draw("loss", [{ color: "#2b62d0", points: s.loss }]);
  draw("accuracy", [{ color: "#d0652b", points: s.test_accuracy_final_layer },
                    { color: "#2b62d0", points: s.test_accuracy_cumulative },
                    { color: "#3a9a5b", points: s.val_accuracy_cumulative }], [0, 1]);
  draw("qps", [{ color: "#3a9a5b", points: s.queries_per_second }]);
}

function showRun(run) {
  $("run").hidden = false;
  $("run-id").textContent = run.id;
  const badge = $("run-status");
  badge.textContent = run.status; badge.className = "badge " + run.status;
  $("run-device").textContent = `${run.identity} — ${run.device} — seed ${run.seed}`
    + (run.exit_reason ? ` — ${run.exit_reason}` : "");
  const live = run.status === "running" || run.status === "paused";
  $("stop").disabled = !live;
  $("pause").disabled = run.status !== "running";
  $("resume").disabled = run.status !== "paused";
  const c = run.counters || {};
  const rows = [
    ["queries", c.queries], ["device seconds", c.device_seconds], ["writes per cell", c.writes_per_cell],
    ["reconnects", c.link_reconnects], ["CRC errors", c.link_crc_errors], ["timeouts", c.link_timeouts],
    ["round trip p50 (ms)", c.link_rtt_p50_ms], ["round trip p99 (ms)", c.link_rtt_p99_ms],
  ];
  $("health").innerHTML = rows.map(([k, v]) =>
    `<tr><td>${k}</td><td class="value">${v === undefined ? "–" : Number(v.toPrecision(4))}</td></tr>`).join("");
}

async function refreshRuns() {
  try {
    const [status, runs] = await Promise.all([api("/api/status"), api("/api/runs")]);
    $("service").textContent = `service ${status.service}, ${runs.length} runs in ${status.runs_dir}`;
    if (!state.runId && runs.length) select(runs[0].id);
    $("runs").innerHTML = "";
    for (const run of runs) {
      const li = document.createElement("li");
      li.textContent = `${run.id} (${run.status})`;
      li.dataset.run = run.id;
      if (run.id === state.runId) li.className = "selected";
      li.onclick = () => select(run.id);
      $("runs").appendChild(li);
    }
  } catch (err) {
    $("service").textContent = "service unreachable: " + err.message;
  }
}

async function refreshRun() {
  if (!state.runId) return;
  const id = state.runId;
  try {
    const [run, page] = await Promise.all([api(`/api/runs/${id}`), api(`/api/runs/${id}/metrics?since=${state.since}`)]);
    if (id !== state.runId) return;
    for (const row of page.rows) {
      if (!state.series[row.name]) continue;
      state.series[row.name].push([/^(test|val)_/.test(row.name) ? row.epoch : row.step, row.value]);
    }
    state.since = page.next;
    showRun(run);
    redraw();
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

function select(id) {
  $("run-estimate").textContent = "";
  state.runId = id;
  resetSeries();
  follow(id);
  refreshRun();
  for (const li of document.querySelectorAll("#runs li")) li.className = li.dataset.run === id ? "selected" : "";
}

async function control(action) {
  try {
    const result = await api(`/api/runs/${state.runId}/${action}`, { method: "POST" });
    $("control-result").textContent = `${result.action}: ${result.detail}`;
  } catch (err) {
    $("control-result").textContent = `${action} refused: ${err.message}`;
  }
  refreshRun();
}

for (const action of ["stop", "pause", "resume"]) $(action).onclick = () => control(action);
resetSeries();
refreshRuns();
setInterval(refreshRuns, 3000);
setInterval(refreshRun, 1000);
