// One exposure: its summary and the quality plots, from /api/exposures/{expid}[/quality].
"use strict";

const EXPID = location.pathname.split("/").pop();

// Vectors as line segments (one trace, gaps between), scaled so the median one is
// `fraction` of the chip's width; returns the scale too (for the note under the plot).
function arrows(x, y, dx, dy, width, fraction) {
  const lengths = dx.map((v, i) => Math.hypot(v, dy[i])).filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  const median = lengths.length ? lengths[Math.floor(lengths.length / 2)] : 0;
  const scale = median > 0 ? (fraction * width) / median : 1;
  const sx = [];
  const sy = [];
  x.forEach((x0, i) => {
    if (dx[i] == null || dy[i] == null) return;
    sx.push(x0, x0 + scale * dx[i], null);
    sy.push(y[i], y[i] + scale * dy[i], null);
  });
  return { sx, sy, scale };
}

function pick(values, mask) {
  return values.filter((_, i) => mask[i]);
}

function photometryTraces(p, xKey) {
  const groups = [
    ["used in the fit", p.used.map((u, i) => u && !p.reserved[i]), { color: "#1f77b4", size: 6 }],
    ["reserved (not fitted)", p.reserved, { color: "#ff7f0e", size: 9, symbol: "diamond" }],
    ["not used", p.used.map((u, i) => !u && !p.reserved[i]), { color: "#bbbbbb", size: 5 }],
  ];
  return groups.map(([name, mask, marker]) => ({
    type: "scatter", mode: "markers", name, marker,
    x: pick(p[xKey], mask), y: pick(p.residual, mask),
  }));
}

function drawSummary(found) {
  const summary = found.summary || {};
  const status = document.getElementById("status");
  const state = summary.status || (found.metrics && found.metrics.status) || "unknown";
  status.textContent = night.label({ ...summary, status: state });
  status.className = `pill ${{ ok: "ok", warning: "warning", partial: "partial" }[state] || "bad"}`;
  document.querySelector("#summary tbody").replaceChildren(
    ...readable.rows(summary, found.metrics).map((r) => calib.row(r)),
  );
  document.querySelector("#verdicts tbody").replaceChildren(...readable.verdicts(summary));
  const timings = (found.metrics && found.metrics.timings) || {};
  document.querySelector("#timings tbody").replaceChildren(
    ...Object.entries(timings).map(([k, v]) => calib.row([k, calib.num(v, 3)])),
  );
}

function drawQuality(q) {
  // The chip at its true aspect: the plot area shrinks to fit, the ranges stay the chip's.
  const chip = { range: [0, q.width], title: { text: "x (px)" }, constrain: "domain" };
  const chipY = { range: [0, q.height], title: { text: "y (px)" }, scaleanchor: "x", constrain: "domain" };

  readable.drawWhiskers(q, chip, chipY);
  const a = q.astrometry;
  if (!a.available) {
    document.getElementById("astrometry-note").textContent = `no astrometric residuals: ${a.reason}`;
    drawDistortion(q, chip, chipY);
    return photometryNote(q.photometry);
  }
  const [x, y, east, north] = [a.x, a.y, a.east_mas, a.north_mas].map((v) => pick(v, a.used));
  const vec = arrows(x, y, east, north, q.width, 0.04);
  Plotly.newPlot("astrometry-chart", [
    { type: "scatter", mode: "lines", name: "residual (scaled)", x: vec.sx, y: vec.sy, line: { width: 1.5, color: "#d62728" }, hoverinfo: "skip" },
    { type: "scatter", mode: "markers", name: "matched star (used)", x, y, marker: { size: 4, color: "#1f77b4" },
      customdata: east.map((e, i) => [e, north[i]]), hovertemplate: "east %{customdata[0]:.1f} mas<br>north %{customdata[1]:.1f} mas<extra></extra>" },
  ], calib.layout({ xaxis: chip, yaxis: chipY }), calib.config);
  document.getElementById("astrometry-note").textContent =
    `${x.length} matches used; arrows: east/north residual × ${calib.num(vec.scale, 2)} px per mas.`;

  const p = q.photometry;
  if (p.available) {
    const y = { title: { text: "PSF mag − reference mag (colour term applied)" }, zeroline: true };
    Plotly.newPlot("zp-mag-chart", photometryTraces(p, "mag"), calib.layout({ xaxis: { title: { text: "calibrated PSF magnitude" } }, yaxis: y }), calib.config);
    Plotly.newPlot("zp-colour-chart", photometryTraces(p, "colour"), calib.layout({ xaxis: { title: { text: `reference colour (${p.colour_name})` } }, yaxis: y }), calib.config);
    document.getElementById("photometry-note").textContent =
      `${p.used.filter(Boolean).length} stars fitted, ${p.reserved.filter(Boolean).length} reserved (never fitted: an honest check of the zero-point).`;
  } else {
    photometryNote(p);
  }
  drawDistortion(q, chip, chipY);
}

function photometryNote(p) {
  document.getElementById("photometry-note").textContent = `no photometric residuals: ${p.reason}`;
}

function drawDistortion(q, chip, chipY) {
  const d = q.distortion;
  const dvec = arrows(d.x, d.y, d.dx, d.dy, q.width, 0.05);
  const magnitude = d.dx.map((v, i) => Math.hypot(v, d.dy[i]));
  Plotly.newPlot("distortion-chart", [
    { type: "scatter", mode: "lines", name: "offset (scaled)", x: dvec.sx, y: dvec.sy, line: { width: 2, color: "#2ca02c" }, hoverinfo: "skip" },
    { type: "scatter", mode: "markers", name: "|offset| (px)", x: d.x, y: d.y, marker: { size: 8, color: magnitude, colorscale: "Viridis", showscale: true, colorbar: { title: { text: "px" } } }, hovertemplate: "%{marker.color:.3f} px<extra></extra>" },
  ], calib.layout({ xaxis: chip, yaxis: chipY }), calib.config);
  const which = q.first_guess ? "the first-guess WCS (astrometry did not fit)" : "the fitted WCS";
  document.getElementById("distortion-note").textContent = d.sip_order == null
    ? `no SIP distortion in ${which}`
    : `${which}: SIP order ${d.sip_order}; largest offset ${calib.num(Math.max(...magnitude), 3)} px; arrows × ${calib.num(dvec.scale, 0)}.`;
}

async function start() {
  document.getElementById("expid").textContent = EXPID;
  const found = await calib.json(`/api/exposures/${EXPID}`);
  drawSummary(found);
  if (found.summary && night.calibrated(found.summary)) {
    drawQuality(await calib.json(`/api/exposures/${EXPID}/quality`));
  } else {
    for (const id of ["astrometry-note", "photometry-note", "distortion-note", "whiskers-note"]) {
      document.getElementById(id).textContent = "no plots: this exposure has no calibration";
    }
  }
  document.body.dataset.ready = "1";
}

start().catch((error) => {
  console.error(error);
  document.getElementById("status").textContent = `error: ${error.message}`;
});
