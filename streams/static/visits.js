// The visits: the night's visit zero-points and list (/visits), and one visit's focal
// plane (/visits/<V>): each detector drawn where the camera puts it, coloured by a
// quantity, a link to its exposure. Both pages poll their API (a visit changes when a
// late detector reports). SVG only: no plotly on the focal-plane page.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const POLL_MS = 5000;
const NO_VALUE = "rgb(217, 217, 217)";
const STATUS_COLOURS = { ok: "rgb(27, 127, 76)", partial: "rgb(224, 123, 0)", failed: "rgb(179, 38, 30)" };
const DIVERGING = [[33, 102, 172], [247, 247, 247], [178, 24, 43]]; // blue, white, red
const SEQUENTIAL = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]]; // viridis

// Quantity -> how to read it off a detector (its outcome and the summary) and colour it.
const QUANTITIES = {
  offset: { label: "zero-point offset", unit: "mmag", digits: 1, diverging: true,
    value: (d, s) => { const v = (s.offsets || {})[String(d.detector)]; return v == null ? null : v * 1000; } },
  seeing: { label: "seeing (PSF FWHM)", unit: "″", digits: 2, value: (d) => d.seeing },
  astrms: { label: "ASTRMS", unit: "mas", digits: 1, value: (d) => d.astrms },
  status: { label: "status", categorical: true, value: (d) => d.status },
};

// A colour between stops, t in [0, 1].
function ramp(stops, t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0.5)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

// value -> colour for one quantity over the visit's detectors, and its legend's range.
function scale(quantity, values) {
  if (quantity.categorical) return { colour: (v) => STATUS_COLOURS[v] || NO_VALUE };
  const present = values.filter((v) => v != null && Number.isFinite(v));
  if (quantity.diverging) {
    const m = Math.max(1, ...present.map(Math.abs)); // at least ±1 mmag
    return { lo: -m, hi: m, stops: DIVERGING, colour: (v) => (v == null ? NO_VALUE : ramp(DIVERGING, (v + m) / (2 * m))) };
  }
  const lo = present.length ? Math.min(...present) : 0;
  const hi = present.length ? Math.max(...present) : 1;
  const t = (v) => (hi > lo ? (v - lo) / (hi - lo) : 0.5);
  return { lo, hi, stops: SEQUENTIAL, colour: (v) => (v == null ? NO_VALUE : ramp(SEQUENTIAL, t(v))) };
}

// A detector's corners in the focal plane (px from the boresight), counter-clockwise.
function corners(det) {
  const c = Math.cos((det.rotation * Math.PI) / 180);
  const s = Math.sin((det.rotation * Math.PI) / 180);
  const hx = det.nx / 2;
  const hy = det.ny / 2;
  return [[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]].map(([u, v]) => [det.x + c * u - s * v, det.y + s * u + c * v]);
}

function svg(name, attributes, children = []) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  node.append(...children);
  return node;
}

// One detector: its shape (filled by value, an outline when missing), its id and value,
// a tooltip; a link to its exposure's page when it reported.
function detectorShape(det, outcome, quantity, colours, summary) {
  const status = outcome ? outcome.status : "missing";
  const value = outcome ? quantity.value(outcome, summary) : null;
  const points = corners(det).map(([x, y]) => `${x},${-y}`).join(" "); // SVG's y points down
  const fill = outcome ? colours.colour(value) : "none";
  const shown = value == null ? "" : quantity.categorical ? value : `${value >= 0 && quantity.diverging ? "+" : ""}${Number(value).toFixed(quantity.digits)}`;
  const size = Math.min(det.nx, det.ny);
  const why = outcome && outcome.reason ? ` · ${outcome.reason}` : "";
  const tip = `detector ${det.id}${outcome ? ` · EXPID ${outcome.expid}` : ""} · ${status}${shown === "" ? "" : ` · ${quantity.label} ${shown} ${quantity.unit || ""}`}${why}`;
  const shape = svg("polygon", { points, fill, class: `st-${status}`, "data-detector": det.id, "data-status": status }, [svg("title", {}, [tip])]);
  const label = svg("text", { x: det.x, y: -det.y - size * 0.08, "font-size": size * 0.16, class: outcome ? "" : "missing" }, [String(det.id)]);
  const figure = svg("text", { x: det.x, y: -det.y + size * 0.14, "font-size": size * 0.12, class: outcome ? "" : "missing" }, [outcome ? shown || "–" : "missing"]);
  if (!outcome) return svg("g", { class: "detector" }, [shape, label, figure]);
  return svg("a", { href: `/exposure/${outcome.expid}`, class: "detector" }, [shape, label, figure]);
}

function drawFocalPlane(found, key) {
  const quantity = QUANTITIES[key];
  const byId = new Map(found.detectors.map((d) => [d.detector, d]));
  const values = found.detectors.map((d) => quantity.value(d, found.summary));
  const colours = scale(quantity, values);
  const all = found.camera.detectors.flatMap(corners);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => -p[1]);
  const pad = 0.04 * Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys));
  const plane = document.getElementById("focal-plane");
  plane.setAttribute("viewBox", [Math.min(...xs) - pad, Math.min(...ys) - pad, Math.max(...xs) - Math.min(...xs) + 2 * pad, Math.max(...ys) - Math.min(...ys) + 2 * pad].join(" "));
  const shapes = found.camera.detectors.map((det) => detectorShape(det, byId.get(det.id), quantity, colours, found.summary));
  const arm = pad * 0.6;
  const boresight = svg("path", { d: `M ${-arm} 0 H ${arm} M 0 ${-arm} V ${arm}`, class: "boresight" });
  plane.replaceChildren(...shapes, boresight);
  drawLegend(quantity, colours);
  const known = new Set(found.camera.detectors.map((det) => det.id));
  const outside = found.detectors.filter((d) => !known.has(d.detector)).map((d) => d.detector);
  const note = document.getElementById("camera-note");
  note.textContent = outside.length ? `not in camera ${found.camera.name} (not drawn): detectors ${outside.join(", ")}` : "";
}

function drawLegend(quantity, colours) {
  const legend = document.getElementById("legend");
  if (quantity.categorical) {
    legend.replaceChildren(...Object.entries(STATUS_COLOURS).map(([name, colour]) => {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour;
      item.append(swatch, name);
      return item;
    }), "· dashed: missing");
    return;
  }
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.style.background = `linear-gradient(to right, ${colours.stops.map((c) => `rgb(${c.join(", ")})`).join(", ")})`;
  const unit = quantity.unit ? ` ${quantity.unit}` : "";
  legend.replaceChildren(`${quantity.label}: ${calib.num(colours.lo, quantity.digits)}${unit}`, bar, `${calib.num(colours.hi, quantity.digits)}${unit}`);
}

function summaryRows(s) {
  const list = (ids) => (ids && ids.length ? ids.join(", ") : "none");
  const failures = Object.entries(s.failures || {}).map(([d, why]) => `${d}: ${why}`).join("; ");
  const pointing = s.pointing_offset ? `${calib.num(s.pointing_offset[0], 3)}″ east, ${calib.num(s.pointing_offset[1], 3)}″ north (${s.pointing_detectors} detectors, rms ${calib.num(s.pointing_rms, 1)} mas)` : "not fitted";
  return [
    ["band", s.band || "–"],
    ["state", s.complete ? "complete" : s.timed_out ? "timed out: detectors missing" : "waiting for detectors"],
    ["ok", list(s.ok)], ["partial", list(s.partial)], ["failed", list(s.failed)], ["missing", list(s.missing)],
    ["why (failed, partial)", failures || "–"],
    ["zero-point", s.zeropoint == null ? "–" : `${calib.num(s.zeropoint, 4)} ± ${calib.num(s.zeropoint_err, 4)} mag`],
    ["scatter, σ_int", `${calib.num(s.zeropoint_scatter == null ? null : s.zeropoint_scatter * 1000, 1)} mmag, ${calib.num(s.zeropoint_sigma_int == null ? null : s.zeropoint_sigma_int * 1000, 1)} mmag`],
    ["clipped from the mean", list(s.zeropoint_clipped)],
    ["pointing offset", pointing],
    ["rotation", s.rotation == null ? "–" : `${calib.num(s.rotation, 2)}″`],
    ["seeing, sky, m5 (medians)", `${calib.num(s.seeing, 2)}″, ${calib.num(s.sky, 0)} e⁻/px, ${calib.num(s.m5, 2)} mag`],
    ["ASTRMS (median)", `${calib.num(s.astrms, 1)} mas`],
    ["observed", s.mjd_obs == null ? "–" : `${calib.time(calib.mjdDate(s.mjd_obs).getTime())} UTC (MJD ${calib.num(s.mjd_obs, 5)})`],
    ["first persisted, updated", `${calib.time(s.first_ms)} UTC, ${calib.time(s.persisted_ms)} UTC`],
  ];
}

function detectorRows(found) {
  const s = found.summary;
  const byId = new Map(found.detectors.map((d) => [d.detector, d]));
  return found.camera.detectors.map((det) => {
    const d = byId.get(det.id);
    if (!d) {
      const tr = calib.row([det.id, "", "missing", "", "", "", "", "", "", ""]);
      tr.className = "st-missing";
      return tr;
    }
    const offset = QUANTITIES.offset.value(d, s);
    const zp = d.magzero == null ? "–" : `${calib.num(d.magzero, 4)} ± ${calib.num(d.magzero_err, 4)}`;
    const tr = calib.row([det.id, calib.link(`/exposure/${d.expid}`, String(d.expid)), d.status, zp, calib.num(offset, 1), calib.num(d.seeing, 2), calib.num(d.sky, 0), calib.num(d.m5, 2), calib.num(d.astrms, 1), d.reason || ""]);
    tr.className = `st-${d.status}`;
    return tr;
  });
}

async function visitPage() {
  const visit = decodeURIComponent(location.pathname.split("/").pop());
  document.getElementById("visit").textContent = visit;
  const select = document.getElementById("quantity");
  let found = null;
  let seen = "";
  const draw = () => drawFocalPlane(found, select.value);
  select.addEventListener("change", draw);
  const poll = async () => {
    const response = await fetch(`/api/visits/${encodeURIComponent(visit)}`);
    const live = document.getElementById("live");
    if (!response.ok) {
      live.textContent = response.status === 404 ? "no such visit (yet)" : `error ${response.status}`;
      return;
    }
    const text = await response.text();
    live.textContent = `updated ${calib.time(Date.now())} UTC`;
    if (text === seen) return;
    seen = text;
    found = JSON.parse(text);
    const s = found.summary;
    const status = document.getElementById("status");
    status.textContent = s.complete ? "complete" : `${(s.missing || []).length} missing`;
    status.className = `pill ${s.complete && !(s.failed || []).length ? "ok" : "partial"}`;
    draw();
    document.querySelector("#summary tbody").replaceChildren(...summaryRows(s).map((r) => calib.row(r)));
    document.querySelector("#detectors tbody").replaceChildren(...detectorRows(found));
  };
  await poll();
  document.body.dataset.ready = "1";
  setInterval(() => poll().catch((error) => console.warn(error)), POLL_MS);
}

// ---------------------------------------------------------------- the night's visits

const BAND_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

function visitTime(row) {
  return row.mjd_obs != null ? calib.mjdDate(row.mjd_obs) : new Date(row.first_ms);
}

function drawNight(rows) {
  const shown = rows.filter((r) => r.zeropoint != null);
  const bands = [...new Set(shown.map((r) => r.band || "?"))].sort();
  const traces = bands.map((band, i) => {
    const list = shown.filter((r) => (r.band || "?") === band);
    return {
      type: "scatter", mode: "markers", name: `band ${band}`,
      x: list.map(visitTime), y: list.map((r) => r.zeropoint),
      error_y: { type: "data", array: list.map((r) => r.zeropoint_err || 0), visible: true, thickness: 1 },
      customdata: list.map((r) => r.visit),
      text: list.map((r) => `visit ${r.visit} · ${r.complete ? "complete" : `missing ${r.missing.join(", ")}`}`),
      hovertemplate: "%{text}<br>zero-point %{y:.4f} mag<extra></extra>",
      marker: { size: 8, color: BAND_COLOURS[i % BAND_COLOURS.length], symbol: list.map((r) => (r.complete ? "circle" : "diamond")) },
    };
  });
  const chart = document.getElementById("visit-zp-chart");
  Plotly.react(chart, traces, calib.layout({ yaxis: { title: { text: "visit zero-point (mag)" } }, xaxis: { title: { text: "time (UTC)" } } }), calib.config);
  if (!chart.dataset.clicks) {
    chart.on("plotly_click", (event) => { location.href = `/visits/${event.points[0].customdata}`; });
    chart.dataset.clicks = "1";
  }
}

function visitRow(r) {
  const n = (ids) => (ids || []).length;
  const zp = r.zeropoint == null ? "–" : `${calib.num(r.zeropoint, 4)} ± ${calib.num(r.zeropoint_err, 4)}`;
  const scatter = r.zeropoint_scatter == null ? null : r.zeropoint_scatter * 1000;
  const pointing = r.pointing_offset ? `${calib.num(r.pointing_offset[0], 2)}, ${calib.num(r.pointing_offset[1], 2)}` : "–";
  const failures = Object.entries(r.failures || {}).map(([d, why]) => `${d}: ${why}`).join("; ");
  const tr = calib.row([calib.time(r.first_ms), calib.link(`/visits/${r.visit}`, String(r.visit)), r.band || "", `${n(r.ok)} / ${n(r.partial)} / ${n(r.failed)} / ${n(r.missing)}`, zp, calib.num(scatter, 1), pointing, calib.num(r.seeing, 2), calib.num(r.m5, 2), failures]);
  tr.className = r.complete ? "" : "st-partial";
  return tr;
}

async function visitsPage() {
  const rows = new Map(); // visit -> row, newest first as loaded
  let after = null;
  const older = document.getElementById("older");
  const draw = (counts) => {
    const list = [...rows.values()].sort((a, b) => (b.first_ms || 0) - (a.first_ms || 0));
    document.getElementById("n-complete").textContent = counts.complete;
    document.getElementById("n-incomplete").textContent = counts.incomplete;
    document.getElementById("n-shown").textContent = list.length;
    drawNight(list);
    document.querySelector("#visits tbody").replaceChildren(...list.map(visitRow));
  };
  const load = async (from) => {
    const page = await calib.json(`/api/visits?limit=500${from == null ? "" : `&after=${from}`}`);
    for (const row of page.visits) rows.set(row.visit, row);
    if (from != null || after == null) after = page.next_after;
    older.hidden = after == null;
    draw(page.counts);
    document.getElementById("live").textContent = `updated ${calib.time(Date.now())} UTC`;
  };
  older.addEventListener("click", () => load(after));
  await load(null);
  document.body.dataset.ready = "1";
  setInterval(() => load(null).catch((error) => console.warn(error)), POLL_MS);
}

(document.body.dataset.page === "visit" ? visitPage : visitsPage)().catch((error) => {
  console.error(error);
  document.getElementById("live").textContent = `error: ${error.message}`;
});
