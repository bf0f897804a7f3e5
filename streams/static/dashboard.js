// The monitoring page: first a page of exposures from the JSON API, then live updates
// from /api/events (server-sent events) from that page's cursor on: every row recorded
// since, in order, a page at a time. Filters go to the API and to the live rows.
"use strict";

const PAGE = 500; // exposures per page: older ones on demand ("load older")
const BAND_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

const state = {
  rows: new Map(), // expid -> row (ok and failed), within the filter
  failures: new Map(), // expid -> failed row
  nextBefore: null,
  cursor: null, // the arrival cursor of the first page: the live stream goes on from it
  summary: null,
  filter: {},
};

function readFilter() {
  const query = new URLSearchParams(location.search);
  const filter = {};
  for (const key of ["band", "visit", "detector"]) {
    const value = query.get(key);
    if (value) filter[key] = value;
  }
  return filter;
}

function passes(row) {
  const f = state.filter;
  return (
    (f.band == null || row.band === f.band) &&
    (f.visit == null || String(row.visit) === String(f.visit)) &&
    (f.detector == null || String(row.detector) === String(f.detector))
  );
}

function apiQuery(extra) {
  return new URLSearchParams(Object.assign({}, state.filter, extra)).toString();
}

function add(rows) {
  for (const row of rows) {
    if (!passes(row)) continue;
    state.rows.set(row.expid, row);
    if (row.status === "failed" || row.status === "partial") state.failures.set(row.expid, row);
    else state.failures.delete(row.expid); // a later success replaces a failure
    addBand(row.band);
  }
}

function addBand(band) {
  const select = document.getElementById("band");
  if (band == null || [...select.options].some((o) => o.value === band)) return;
  select.append(new Option(band, band));
}

function fetchPage() {
  const extra = { limit: PAGE };
  if (state.nextBefore != null) extra.before = state.nextBefore;
  return calib.json(`/api/exposures?${apiQuery(extra)}`);
}

function fetchFailures() {
  return calib.json(`/api/exposures?${apiQuery({ status: "failed", limit: 200 })}`);
}

function applyPage(page) {
  add(page.rows);
  state.nextBefore = page.next_before;
  if (state.cursor == null) state.cursor = page.cursor;
  const older = document.getElementById("older");
  older.hidden = state.nextBefore == null;
  // A rare filter: the server read its budget of index entries before the page was full.
  older.textContent = page.partial ? `search older (looked back to ${calib.time(state.nextBefore)})` : "load older";
}

// ---------------------------------------------------------------- charts

function okRows() {
  // Calibrated with a zero-point: ok, ok with warnings (a partial one has none).
  return [...state.rows.values()].filter((r) => night.calibrated(r) && r.magzero != null);
}

function byBand(rows) {
  const bands = new Map();
  for (const row of rows.sort((a, b) => a.mjd_obs - b.mjd_obs)) {
    if (!bands.has(row.band)) bands.set(row.band, []);
    bands.get(row.band).push(row);
  }
  return [...bands.entries()].sort();
}

function perBand(bands, y, extra) {
  return bands.map(([band, rows], i) =>
    Object.assign(
      {
        type: "scatter",
        mode: "markers",
        name: `band ${band}`,
        x: rows.map((r) => calib.mjdDate(r.mjd_obs)),
        y: rows.map(y),
        customdata: rows.map((r) => r.expid),
        marker: { size: 6, color: BAND_COLOURS[i % BAND_COLOURS.length] },
        hovertemplate: "EXPID %{customdata}<br>%{x}<br>%{y}<extra></extra>",
      },
      extra ? extra(rows) : {},
    ),
  );
}

function drawCharts() {
  const ok = okRows();
  const bands = byBand(ok);
  const time = { title: { text: "MJD-OBS (UTC)" }, type: "date" };
  Plotly.react(
    "zp-chart",
    perBand(bands, (r) => r.magzero, (rows) => ({
      error_y: { type: "data", array: rows.map((r) => r.magzero_err), visible: true, thickness: 1 },
    })),
    calib.layout({ xaxis: time, yaxis: { title: { text: "MAGZERO (mag)" } } }),
    calib.config,
  );
  Plotly.react(
    "rms-chart",
    perBand(bands, (r) => r.magzero_rms),
    calib.layout({ xaxis: time, yaxis: { title: { text: "MAGZERO_RMS (mag)" }, rangemode: "tozero" } }),
    calib.config,
  );
  const sorted = ok.slice().sort((a, b) => a.mjd_obs - b.mjd_obs);
  const x = sorted.map((r) => calib.mjdDate(r.mjd_obs));
  const ids = sorted.map((r) => r.expid);
  Plotly.react(
    "ast-chart",
    [
      { type: "scatter", mode: "markers", name: "ASTRMS (mas)", x, y: sorted.map((r) => r.astrms_mas), customdata: ids, hovertemplate: "EXPID %{customdata}<br>%{y:.1f} mas<extra></extra>" },
      { type: "scatter", mode: "markers", name: "matches", x, y: sorted.map((r) => r.astnmatch), yaxis: "y2", customdata: ids, marker: { symbol: "x", size: 5 }, hovertemplate: "EXPID %{customdata}<br>%{y} matches<extra></extra>" },
    ],
    calib.layout({
      margin: { l: 60, r: 60, t: 10, b: 40 },
      xaxis: time,
      yaxis: { title: { text: "ASTRMS (mas)" }, rangemode: "tozero" },
      yaxis2: { title: { text: "matches" }, overlaying: "y", side: "right", rangemode: "tozero" },
    }),
    calib.config,
  );
  const latency = state.summary ? state.summary.latency : {};
  const persisted = ok.slice().sort((a, b) => a.persisted_ms - b.persisted_ms);
  const lines = [];
  for (const [name, value] of [["p50", latency.p50_s], ["p95", latency.p95_s]]) {
    if (value != null) lines.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: value, y1: value, line: { dash: name === "p50" ? "dot" : "dash", width: 1 } });
  }
  Plotly.react(
    "latency-chart",
    [{ type: "scatter", mode: "markers", name: "latency per exposure", x: persisted.map((r) => new Date(r.persisted_ms)), y: persisted.map((r) => r.latency_s), customdata: persisted.map((r) => r.expid), hovertemplate: "EXPID %{customdata}<br>%{y:.2f} s<extra></extra>" }],
    calib.layout({ shapes: lines, xaxis: { title: { text: "persisted (UTC)" }, type: "date" }, yaxis: { title: { text: "seconds (lines: p50, p95)" }, rangemode: "tozero" } }),
    calib.config,
  );
  // The night's quality charts: drawn just after the first render (see start()), then with
  // every redraw.
  if (state.nightDrawn) night.draw([...state.rows.values()].filter(night.calibrated));
  document.getElementById("shown").textContent = String(state.rows.size);
}

function drawThroughput() {
  const t = state.summary && state.summary.throughput;
  if (!t) return;
  Plotly.react(
    "throughput-chart",
    [{ type: "bar", name: "per minute", x: t.minute_ms.map((ms) => new Date(ms)), y: t.count }],
    calib.layout({ showlegend: false, xaxis: { type: "date", title: { text: "minute (UTC)" } }, yaxis: { title: { text: "exposures" } } }),
    calib.config,
  );
}

// ---------------------------------------------------------------- tables and cards

function drawTables() {
  const failures = document.querySelector("#failures tbody");
  failures.replaceChildren(
    ...[...state.failures.values()]
      .sort((a, b) => b.persisted_ms - a.persisted_ms)
      .map((r) => {
        const tr = calib.row([calib.time(r.persisted_ms), calib.link(`/exposure/${r.expid}`, String(r.expid)), r.visit, r.detector, r.status, r.stage, r.error, r.reason]);
        tr.className = night.statusClass(r.status);
        return tr;
      }),
  );
  for (const td of failures.querySelectorAll("td:last-child")) td.className = "reason";
  const recent = [...state.rows.values()].sort((a, b) => b.persisted_ms - a.persisted_ms).slice(0, 50);
  document.querySelector("#recent tbody").replaceChildren(
    ...recent.map((r) => {
      const tr = calib.row([
        calib.time(r.persisted_ms),
        calib.link(`/exposure/${r.expid}`, String(r.expid)),
        r.visit,
        r.detector,
        r.band,
        night.label(r),
        r.magzero != null ? `${calib.num(r.magzero, 4)} ± ${calib.num(r.magzero_err, 4)}` : "–",
        calib.num(r.magzero_rms, 3),
        calib.num(r.astrms_mas, 1),
        r.astnmatch,
        calib.num(r.psf_fwhm_arcsec, 2),
        calib.num(r.maglim, 2),
        calib.num(r.efftime, 1),
        calib.num(r.latency_s, 2),
      ]);
      tr.className = night.statusClass(r.status);
      return tr;
    }),
  );
}

function drawSummary() {
  const s = state.summary;
  if (!s) return;
  document.getElementById("n-ok").textContent = s.exposures.ok;
  document.getElementById("n-failed").textContent = s.exposures.failed;
  document.getElementById("n-warning").textContent = s.exposures.warning || 0;
  document.getElementById("n-partial").textContent = s.exposures.partial || 0;
  const total = (kind) => Object.values(s.counters[kind] || {}).reduce((a, b) => a + Math.max(0, b), 0);
  document.getElementById("n-retrying").textContent = total("waiting");
  document.getElementById("n-parked").textContent = total("parked_now");
  document.getElementById("rate").textContent = calib.num(s.throughput.per_minute_5, 1);
  document.getElementById("latency").textContent = `${calib.num(s.latency.p50_s, 2)} / ${calib.num(s.latency.p95_s, 2)}`;
  document.getElementById("lag-total").textContent = s.lag.error && !s.lag.partitions.length ? "?" : s.lag.total;
  const redis = document.getElementById("redis");
  redis.textContent = `Redis ${s.redis.state}`;
  redis.className = `pill ${s.redis.state === "up" ? "ok" : "bad"}`;
  const broker = document.getElementById("broker");
  broker.textContent = s.lag.error ? "broker: no answer" : "broker ok";
  broker.className = `pill ${s.lag.error ? "bad" : "ok"}`;
  document.querySelector("#lag tbody").replaceChildren(
    ...s.lag.partitions.map((p) => calib.row([p.topic, p.partition, p.end, p.committed == null ? "–" : p.committed, p.lag])),
  );
  document.getElementById("lag-note").textContent = s.lag.error
    ? `lag unavailable: ${s.lag.error}`
    : `as of ${calib.time(s.lag.updated_ms)}`;
  drawThroughput();
}

// ---------------------------------------------------------------- live updates

// Redraw at most once a second however fast exposures arrive (a redraw of a page of
// 500 exposures costs a few hundred ms): the page stays responsive through a burst.
const REDRAW_MS = 1000;
let redraw = null;
let lastDraw = 0;
function scheduleRedraw() {
  if (redraw != null) return;
  const wait = Math.max(0, lastDraw + REDRAW_MS - performance.now());
  redraw = setTimeout(() => requestAnimationFrame(() => {
    redraw = null;
    lastDraw = performance.now();
    drawCharts();
    drawTables();
  }), wait);
}

function listen() {
  // From the first page's cursor: nothing recorded since is missed (the browser resumes
  // from the last message's id when it reconnects).
  const source = new EventSource(state.cursor == null ? "/api/events" : `/api/events?after=${state.cursor}`);
  const live = document.getElementById("live");
  source.onopen = () => { live.textContent = "live"; live.className = "pill ok"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "pill bad"; };
  source.addEventListener("exposures", (e) => { add(JSON.parse(e.data)); scheduleRedraw(); });
  source.addEventListener("summary", (e) => { state.summary = JSON.parse(e.data); drawSummary(); });
}

// The first data is asked for at once, while the page and plotly.js still load (this script
// comes first in the page's head); the page is set up when both are there.
state.filter = readFilter();
const firstData = Promise.all([calib.json("/api/summary"), fetchPage(), fetchFailures()]);
firstData.catch(() => {}); // handled in start(), once the page is there
const pageLoaded = new Promise((resolve) => {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", resolve);
  else resolve();
});

async function start() {
  await pageLoaded;
  const scriptsMs = performance.now();
  const form = document.getElementById("filters");
  for (const [key, value] of Object.entries(state.filter)) {
    if (key === "band") addBand(value);
    form.elements[key].value = value;
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const key of ["band", "visit", "detector"]) if (form.elements[key].value) query.set(key, form.elements[key].value);
    location.search = query.toString(); // a filtered view is a link
  });
  document.getElementById("older").addEventListener("click", async () => { applyPage(await fetchPage()); scheduleRedraw(); });
  const [summary, page, failures] = await firstData;
  applyPage(page);
  add(failures.rows);
  const dataMs = performance.now();
  state.summary = summary;
  drawSummary();
  drawCharts();
  drawTables();
  const clickable = (div) => document.getElementById(div).on("plotly_click", (data) => {
    const found = data.points[0] && data.points[0].customdata;
    const expid = Array.isArray(found) ? found[0] : found;
    if (expid != null) location.href = `/exposure/${expid}`;
  });
  for (const div of ["zp-chart", "rms-chart", "ast-chart", "latency-chart"]) clickable(div);
  window.calibstreamFirstRenderMs = performance.now();
  window.calibstreamTimings = { scriptsMs, dataMs, drawnMs: window.calibstreamFirstRenderMs };
  // The four night charts (seeing, sky, m5, t_eff) come in the next task: the zero-point,
  // the tables and the cards are on screen first.
  await new Promise((resolve) => setTimeout(resolve, 0));
  state.nightDrawn = true;
  night.draw([...state.rows.values()].filter(night.calibrated));
  for (const div of night.charts()) clickable(div);
  window.calibstreamTimings.nightMs = performance.now();
  document.body.dataset.ready = "1";
  listen();
}

start().catch(async (error) => {
  console.error(error);
  await pageLoaded;
  document.getElementById("live").textContent = `error: ${error.message}`;
});
