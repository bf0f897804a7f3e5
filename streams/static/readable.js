// One exposure's summary in readable units (dates, not epoch milliseconds; rounded figures
// with their units), its verdicts, and the PSF stars' ellipticity whiskers over the chip.
"use strict";

const readable = {
  date: (ms) => (ms == null ? "–" : `${calib.time(ms)} UTC`),
  mjd: (mjd) => (mjd == null ? "–" : `${calib.time(calib.mjdDate(mjd).getTime())} UTC (MJD ${Number(mjd).toFixed(5)})`),
  with: (value, digits, unit) => (value == null ? "–" : `${Number(value).toFixed(digits)}${unit}`),
  // [label, text] rows of the summary, the figures a person checks first.
  rows(summary, metrics) {
    const h = summary.header || {};
    const s = summary.summary_stats || {};
    const m = metrics || {};
    const w = readable.with;
    const fwhm = s.psfSigma != null && s.pixelScale != null ? s.psfSigma * 2.3548 * s.pixelScale : null;
    const rows = [
      ["status", night.label({ ...summary, flags: summary.flags })],
      ["EXPID · visit · detector · band", `${summary.expid} · ${summary.visit} · ${summary.detector} · ${summary.band}`],
      ["observed (MJD-OBS)", readable.mjd(summary.mjd_obs)],
      ["exposure time", w(summary.exptime, 1, " s")],
      ["sources", summary.n_sources],
      ["MAGZERO (1 e⁻/s)", h.MAGZERO == null ? "– (not fitted)" : `${w(h.MAGZERO, 4, "")} ± ${w(h.MAGZERO_ERR, 4, "")} mag, rms ${w(h.MAGZERO_RMS, 3, "")} over ${h.MAGZERO_NOBJ} stars`],
      ["zero-point of the exposure (1 e⁻)", w(s.zeroPoint, 3, " mag")],
      ["astrometry", h.ASTRMS == null ? "– (not fitted: first-guess WCS)" : `rms ${w(h.ASTRMS, 1, " mas")} over ${h.ASTNMATCH} matches; mean offset ${w(s.astromOffsetMean == null ? null : s.astromOffsetMean * 1000, 1, " mas")}`],
      ["seeing (PSF FWHM)", `${w(fwhm, 2, "″")} (psfSigma ${w(s.psfSigma, 3, " px")}, area ${w(s.psfArea, 1, " px")})`],
      ["PSF stars − model", s.nPsfStar == null ? "–" : `${s.nPsfStar} stars; e1 ${w(s.psfStarDeltaE1Median, 4, "")} ± ${w(s.psfStarDeltaE1Scatter, 4, "")}, e2 ${w(s.psfStarDeltaE2Median, 4, "")} ± ${w(s.psfStarDeltaE2Scatter, 4, "")}, size ${w(s.psfStarDeltaSizeMedian, 3, "")} ± ${w(s.psfStarDeltaSizeScatter, 3, " px")}`],
      ["sky", `${w(s.skyBg, 1, " e⁻/px")} (${w(s.skyBg != null && summary.exptime ? s.skyBg / summary.exptime : null, 2, " e⁻/s/px")}), noise ${w(s.skyNoise, 2, " e⁻")}, mean variance ${w(s.meanVar, 1, " e⁻²")}`],
      ["depth m5 (5σ point source)", w(s.magLim, 2, " mag")],
      ["effective time t_eff", `${w(s.effTime, 1, " s")} (PSF ×${w(s.effTimePsfSigmaScale, 3, "")}, sky ×${w(s.effTimeSkyBgScale, 3, "")}, transparency ×${w(s.effTimeZeroPointScale, 3, "")})`],
      ["centre (RA, Dec) · pixel scale", `${w(s.ra, 5, "°")}, ${w(s.dec, 5, "°")} · ${w(s.pixelScale, 4, "″/px")}`],
      ["zenith distance", w(s.zenithDistance, 2, "°")],
    ];
    if (summary.status === "partial" || summary.status === "failed") rows.splice(1, 0, ["why", `${summary.stage}: ${summary.reason}`]);
    rows.push(["submitted · persisted", `${readable.date(m.submitted_ms)} · ${readable.date(m.persisted_ms)}`]);
    rows.push(["latency", w(m.latency_s, 2, " s")]);
    rows.push(["software", summary.software_version]);
    return rows;
  },
  verdicts(summary) {
    const flaggedFirst = (summary.verdicts || []).slice().sort((a, b) => b.flag - a.flag);
    return flaggedFirst.map((v) => {
      const tr = calib.row([v.group, v.code, v.flag ? "flagged" : "ok", v.reason]);
      if (v.flag) tr.children[2].className = "flagged";
      return tr;
    });
  },
  // Whiskers: a segment per star, along the ellipse's major axis (angle ½ atan2(e2, e1)),
  // its length |e| scaled so the median one is `fraction` of the chip's width.
  whiskers(x, y, e1, e2, width, fraction, given) {
    const size = e1.map((v, i) => Math.hypot(v, e2[i]));
    const sorted = size.filter(Number.isFinite).sort((a, b) => a - b);
    const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
    const scale = given || (median > 0 ? (fraction * width) / median : 1);
    const sx = [];
    const sy = [];
    x.forEach((x0, i) => {
      const angle = 0.5 * Math.atan2(e2[i], e1[i]);
      const half = 0.5 * scale * size[i];
      sx.push(x0 - half * Math.cos(angle), x0 + half * Math.cos(angle), null);
      sy.push(y[i] - half * Math.sin(angle), y[i] + half * Math.sin(angle), null);
    });
    return { sx, sy, scale };
  },
  drawWhiskers(q, chip, chipY) {
    const w = q.whiskers;
    const note = document.getElementById("whiskers-note");
    if (!w || !w.available) {
      note.textContent = `no PSF-star whiskers: ${w ? w.reason : "none"}`;
      return;
    }
    const stars = readable.whiskers(w.x, w.y, w.e1, w.e2, q.width, 0.05);
    const residual = readable.whiskers(w.x, w.y, w.de1, w.de2, q.width, 0.05, stars.scale);
    Plotly.newPlot("whiskers-chart", [
      { type: "scatter", mode: "lines", name: "star e (scaled)", x: stars.sx, y: stars.sy, line: { width: 2, color: "#1f77b4" }, hoverinfo: "skip" },
      { type: "scatter", mode: "lines", name: "star − PSF model e (scaled alike)", x: residual.sx, y: residual.sy, line: { width: 2, color: "#d62728" }, hoverinfo: "skip", visible: "legendonly" },
      { type: "scatter", mode: "markers", name: "PSF star", x: w.x, y: w.y, marker: { size: 4, color: "#444" },
        customdata: w.e1.map((e, i) => [e, w.e2[i], w.de1[i], w.de2[i]]),
        hovertemplate: "e1 %{customdata[0]:.4f}, e2 %{customdata[1]:.4f}<br>− model: %{customdata[2]:.4f}, %{customdata[3]:.4f}<extra></extra>" },
    ], calib.layout({ xaxis: chip, yaxis: chipY }), calib.config);
    note.textContent = `${w.x.length} PSF stars; whiskers along each star's major axis, |e| × ${calib.num(stars.scale, 0)} px; ` +
      `the PSF model's own e1, e2 = ${calib.num(w.psf_e1, 4)}, ${calib.num(w.psf_e2, 4)} (click the legend for star − model).`;
  },
};
