// tripstream dashboard: polls the JSON API and draws every panel with plain DOM and SVG.
// No library, nothing fetched from elsewhere: the page works offline.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#f2b01e", "#58a6ff", "#3fb950", "#f778ba", "#a371f7", "#ff7b72", "#79c0ff", "#d29922",
                 "#56d364", "#e3b341", "#bc8cff", "#ffa198"];
const PANELS = ["demand", "series", "alerts", "sessions", "quality", "pipeline"];
const state = { refreshMs: 2000, zones: null, seen: new Set(), loaded: false, updates: 0 };

// -- small helpers ----------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${fmt(n, i ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${fmt(seconds, seconds < 10 ? 1 : 0)} s`;
  if (seconds < 7200) return `${fmt(seconds / 60, 1)} min`;
  return `${fmt(seconds / 3600, 1)} h`;
}

function hhmm(stamp) { return stamp ? stamp.slice(11, 16) : ""; }

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function panelError(name, message) {
  const box = document.querySelector(`#panel-${name} .error`);
  if (!box) return;
  box.hidden = !message;
  box.textContent = message || "";
}

// -- charts -----------------------------------------------------------------------------------
function niceMax(value) {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function emptyChart(target, width, height, note) {
  target.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty-note" }, note));
}

// One line per series over shared x labels; each path carries its values for tests and tooltips.
function lineChart(target, labels, series, options = {}) {
  const box = target.viewBox.baseVal;
  const [width, height] = [box.width || 640, box.height || 220];
  const pad = { left: 48, right: 12, top: 10, bottom: 24 };
  target.replaceChildren();
  target.dataset.points = String(labels.length);
  if (!labels.length || !series.length) { emptyChart(target, width, height, "no windows yet"); return; }
  const top = niceMax(Math.max(...series.flatMap((s) => s.values)));
  const x = (i) => pad.left + (labels.length === 1 ? 0 : (i * (width - pad.left - pad.right)) / (labels.length - 1));
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  for (let k = 0; k <= 4; k += 1) {
    const v = (top * k) / 4;
    target.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: k ? "gridline" : "axis" }));
    target.append(svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, options.money ? `$${fmt(v)}` : fmt(v, v % 1 ? 1 : 0)));
  }
  const every = Math.max(1, Math.ceil(labels.length / 8));
  labels.forEach((label, i) => {
    if (i % every === 0 || i === labels.length - 1) {
      target.append(svg("text", { x: x(i), y: height - 6, "text-anchor": "middle" }, hhmm(label)));
    }
  });
  series.forEach((s, n) => {
    const d = s.values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const path = svg("path", { d, class: "line", stroke: PALETTE[n % PALETTE.length],
                               "data-zone-id": s.id, "data-values": s.values.join(",") });
    path.append(svg("title", {}, `${s.name}: ${s.values.map((v) => fmt(v, options.money ? 2 : 0)).join(", ")}`));
    target.append(path);
    const last = s.values.length - 1;
    target.append(svg("circle", { cx: x(last), cy: y(s.values[last]), r: 3, fill: PALETTE[n % PALETTE.length] }));
  });
}

function barChart(target, labels, values, options = {}) {
  const [width, height] = [640, 140];
  const pad = { left: 40, right: 8, top: 8, bottom: 22 };
  target.replaceChildren();
  target.dataset.total = String(values.reduce((a, b) => a + b, 0));
  if (!labels.length) { emptyChart(target, width, height, options.empty || "none"); return; }
  const top = niceMax(Math.max(...values));
  const slot = (width - pad.left - pad.right) / labels.length;
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  target.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0), class: "axis" }));
  target.append(svg("text", { x: pad.left - 6, y: y(top) + 4, "text-anchor": "end" }, fmt(top)));
  const every = Math.max(1, Math.ceil(labels.length / 8));
  labels.forEach((label, i) => {
    const rect = svg("rect", { x: pad.left + i * slot + 1, y: y(values[i]), width: Math.max(1, slot - 2),
                               height: y(0) - y(values[i]), class: `bar ${options.kind || ""}`, "data-value": values[i] });
    rect.append(svg("title", {}, `${label}: ${fmt(values[i])}`));
    target.append(rect);
    if (i % every === 0) {
      target.append(svg("text", { x: pad.left + i * slot + slot / 2, y: height - 6, "text-anchor": "middle" },
                        options.label ? options.label(label) : label));
    }
  });
}

// -- panels -----------------------------------------------------------------------------------
function heat(ratio) {
  // From a dim amber to a pale gold as demand rises (perceptually monotone enough for a glance).
  const stops = [[60, 50, 20], [242, 176, 30], [255, 240, 200]];
  const t = Math.min(1, Math.max(0, ratio)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t));
  const f = t - i;
  const c = stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function buildGrid() {
  const grid = document.getElementById("demand-grid");
  const boroughs = new Map();
  for (const z of state.zones) {
    const name = ["N/A", "Unknown", ""].includes(z.borough) ? "Other" : z.borough;
    if (!boroughs.has(name)) boroughs.set(name, []);
    boroughs.get(name).push(z);
  }
  const order = ["Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR", "Other"];
  const names = [...boroughs.keys()].sort((a, b) => order.indexOf(a) - order.indexOf(b));
  grid.replaceChildren(...names.map((name) => el("div", { class: "borough" },
    el("div", { class: "borough-name", text: name }),
    el("div", { class: "borough-cells" }, ...boroughs.get(name).map((z) =>
      el("div", { class: "zone empty", id: `zone-${z.id}`, "data-zone-id": z.id, "data-trips": 0,
                  title: `${z.zone || "zone " + z.id} (${z.borough}): no trips`, text: z.id }))))));
}

function renderDemand(data) {
  document.getElementById("latest-window").textContent =
    data.window_end ? `${data.window_start.slice(0, 16)} – ${hhmm(data.window_end)}` : "none yet";
  document.getElementById("latest-window").dataset.windowEnd = data.window_end || "";
  document.getElementById("latest-trips").textContent = fmt(data.total_trips);
  const max = Math.max(1, ...data.zones.map((z) => z.trips));
  document.getElementById("demand-max").textContent = fmt(max);
  const byId = new Map(data.zones.map((z) => [z.id, z]));
  for (const cell of document.querySelectorAll("#demand-grid .zone")) {
    const z = byId.get(Number(cell.dataset.zoneId));
    const label = cell.title.split(":")[0];
    if (z) {
      cell.style.background = heat(z.trips / max);
      cell.classList.remove("empty");
      cell.dataset.trips = z.trips;
      cell.title = `${label}: ${fmt(z.trips)} trips, $${fmt(z.revenue, 2)}`;
    } else {
      cell.style.background = "";
      cell.classList.add("empty");
      cell.dataset.trips = 0;
      cell.title = `${label}: no trips`;
    }
  }
  const list = document.getElementById("top-zones");
  list.replaceChildren(...data.zones.slice(0, 12).map((z) =>
    el("li", { "data-zone-id": z.id, "data-trips": z.trips },
       el("span", { class: "zone-name", text: z.name }),
       el("span", { class: "n", text: `${fmt(z.trips)} trips · $${fmt(z.revenue)}` }))));
  if (!data.zones.length) list.replaceChildren(el("li", { class: "none", text: "no windows yet" }));
}

function renderSeries(data) {
  const legend = document.getElementById("series-legend");
  legend.replaceChildren(...data.zones.map((z, n) =>
    el("li", { "data-zone-id": z.id }, el("i", { style: `background:${PALETTE[n % PALETTE.length]}` }), z.name)));
  lineChart(document.getElementById("series-trips"), data.windows,
            data.zones.map((z) => ({ id: z.id, name: z.name, values: z.trips })));
  lineChart(document.getElementById("series-revenue"), data.windows,
            data.zones.map((z) => ({ id: z.id, name: z.name, values: z.revenue })), { money: true });
}

function feedItems(target, items, key, render, emptyText) {
  if (!items.length) { target.replaceChildren(el("li", { class: "none", text: emptyText })); return; }
  target.replaceChildren(...items.map((item) => {
    const id = key(item);
    const li = render(item);
    li.dataset.key = id;
    if (state.loaded && !state.seen.has(id)) li.classList.add("new");
    state.seen.add(id);
    return li;
  }));
}

function renderAlerts(data) {
  document.getElementById("surge-count").textContent = `${fmt(data.surge_count)} in all`;
  document.getElementById("anomaly-count").textContent = `${fmt(data.anomaly_count)} in all`;
  feedItems(document.getElementById("surges"), data.surges, (s) => `surge:${s.window_start}:${s.zone_id}`,
    (s) => el("li", { "data-zone-id": s.zone_id },
      el("b", { text: s.zone }), ` ${fmt(s.trips)} trips, ${fmt(s.ratio, 1)}× its baseline of ${fmt(s.baseline, 1)} `,
      el("span", { class: "when", text: `${s.window_start.slice(0, 16)} – ${hhmm(s.window_end)}` })),
    "no surges flagged");
  feedItems(document.getElementById("anomalies"), data.anomalies, (a) => `anomaly:${a.event_id}:${a.rule}`,
    (a) => el("li", { "data-rule": a.rule },
      el("b", { text: a.rule }), ` ${a.zone}, fare $${fmt(a.fare_amount, 2)}, ${fmt(a.trip_distance, 1)} mi `,
      el("span", { class: "when", text: a.pickup_at ? a.pickup_at.slice(0, 16) : "" })),
    "no anomalies");
}

function renderSessions(rows) {
  const body = document.querySelector("#sessions tbody");
  if (!rows.length) { body.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "no sessions yet" }))); return; }
  body.replaceChildren(...rows.map((s) => el("tr", {},
    el("td", { text: `${s.pickup_zone} → ${s.dropoff_zone}` }), el("td", { text: fmt(s.minutes, 1) }),
    el("td", { text: fmt(s.trips) }), el("td", { text: s.session_end.slice(5, 16) }))));
}

function sumBy(rows, key) {
  const totals = new Map();
  for (const r of rows) totals.set(r[key], (totals.get(r[key]) || 0) + r.count);
  return totals;
}

function renderQuality(data) {
  document.getElementById("late-total").textContent = `${fmt(data.late_total)} in all, per event-time hour`;
  document.getElementById("bad-total").textContent = data.bad_table
    ? `${fmt(data.bad_total)} in all, per minute received` : "0 (no bad_records table yet)";
  const late = sumBy(data.late, "bucket");
  barChart(document.getElementById("late-chart"), [...late.keys()], [...late.values()],
           { empty: "no late records", label: (b) => b.slice(11, 16) });
  const bad = sumBy(data.bad, "bucket");
  barChart(document.getElementById("bad-chart"), [...bad.keys()], [...bad.values()],
           { empty: "no bad records", kind: "bad", label: (b) => b.slice(11, 16) });
}

function renderPipeline(data) {
  const f = data.flink;
  document.getElementById("cluster").textContent = f.up
    ? `Flink ${f.version}, ${f.taskmanagers} TaskManager(s), ${f.slots_available}/${f.slots_total} slots free`
    : "Flink does not answer";
  // Every process of the local stack: each broker, JobManager (the leader marked), TaskManager.
  document.getElementById("nodes").replaceChildren(...(data.nodes || []).map((n) =>
    el("span", { class: `node node-${n.state}`, "data-node": n.role, title: n.address || n.component,
                 text: `${n.role}${n.leader ? " (leader)" : ""}: ${n.state}` })));
  const body = document.querySelector("#jobs tbody");
  if (!data.jobs.length) { body.replaceChildren(el("tr", {}, el("td", { colspan: 10, class: "muted", text: "no jobs submitted" }))); return; }
  body.replaceChildren(...data.jobs.map((j) => {
    const cp = j.last_checkpoint;
    const parts = el("div", { class: "parts" }, ...(j.partitions || []).map((p) =>
      el("span", { class: `part ${p.lag ? "lagging" : ""}`, "data-partition": p.partition, "data-lag": p.lag ?? "",
                   title: `${p.topic} partition ${p.partition}: end ${p.end}, position ${p.position ?? "unknown"}`,
                   text: `p${p.partition}: ${p.lag === null ? "?" : fmt(p.lag)}` })));
    return el("tr", { "data-job": j.name },
      el("td", { text: j.name }), el("td", { class: `state-${j.state}`, text: j.state }),
      el("td", { text: duration(j.uptime_s) }), el("td", { text: fmt(j.restarts) }),
      el("td", { text: cp ? `#${cp.id}, ${duration(cp.age_s)} ago, ${bytes(cp.size_bytes)}` : "none" }),
      el("td", { text: j.watermark || "–" }), el("td", { text: duration(j.watermark_lag_s) }),
      el("td", { text: fmt(j.records_in_per_s, 1) }), el("td", { text: fmt(j.records_out_per_s, 1) }),
      el("td", {}, parts));
  }));
}

const RENDER = { demand: renderDemand, series: renderSeries, alerts: renderAlerts, sessions: renderSessions,
                 quality: renderQuality, pipeline: renderPipeline };

// -- the loop ---------------------------------------------------------------------------------
async function tick() {
  const results = await Promise.allSettled(PANELS.map((name) => getJSON(`/api/${name}`)));
  let failures = 0;
  results.forEach((result, i) => {
    const name = PANELS[i];
    if (result.status === "fulfilled") {
      panelError(name, null);
      RENDER[name](result.value);
    } else {
      failures += 1;
      panelError(name, result.reason.message);
    }
  });
  state.loaded = true;
  state.updates += 1;
  document.body.dataset.updates = String(state.updates);
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  const status = document.getElementById("status");
  status.textContent = failures ? `${failures} panel(s) failing` : "live";
  status.className = `pill ${failures ? "bad" : "ok"}`;
  setTimeout(tick, state.refreshMs);
}

async function start() {
  try {
    const [config, zones] = await Promise.all([getJSON("/api/config"), getJSON("/api/zones")]);
    state.refreshMs = config.refresh_ms;
    state.zones = zones;
  } catch (error) {
    state.zones = [];
    document.getElementById("status").textContent = `cannot reach the dashboard server: ${error.message}`;
  }
  buildGrid();
  tick();
}

document.addEventListener("DOMContentLoaded", start);
