// The night per band, beside the zero-point: seeing (PSF FWHM), sky, depth (m5) and
// effective time (t_eff) of each calibrated exposure against MJD-OBS; and the status
// colours and marks the page uses for exposures ok with warnings and partial.
"use strict";

const night = {
  STATUSES: ["ok", "warning", "partial", "failed"],
  // Marker of a point by status: a warning is a diamond, a partial calibration a cross.
  SYMBOLS: { ok: "circle", warning: "diamond", partial: "x" },
  // [div, y-axis title, the row's value, hover format]
  CHARTS: [
    ["seeing-chart", "PSF FWHM (arcsec)", (r) => r.psf_fwhm_arcsec, ".2f"],
    ["sky-chart", "sky (e⁻/s per pixel)", (r) => (r.sky_bg != null && r.exptime ? r.sky_bg / r.exptime : null), ".1f"],
    ["m5-chart", "m5, 5σ point-source depth (mag)", (r) => r.maglim, ".2f"],
    ["teff-chart", "t_eff, effective exposure time (s)", (r) => r.efftime, ".1f"],
  ],
  calibrated: (row) => row.status === "ok" || row.status === "warning" || row.status === "partial",
  statusClass: (status) => `st-${status || "unknown"}`,
  // The status as a person reads it.
  label(row) {
    if (row.status === "warning") return `ok with warnings (${(row.flags || []).join(", ")})`;
    if (row.status === "partial") return `partial (${row.stage})`;
    if (row.status === "failed") return `failed (${row.stage})`;
    return row.status;
  },
  traces(rows, value, format) {
    // One trace per band, the points of each marked by status.
    const bands = byBand(rows.filter((r) => value(r) != null));
    return bands.map(([band, list], i) => ({
      type: "scatter",
      mode: "markers",
      name: `band ${band}`,
      x: list.map((r) => calib.mjdDate(r.mjd_obs)),
      y: list.map(value),
      customdata: list.map((r) => [r.expid, night.label(r)]),
      marker: {
        size: 7,
        color: BAND_COLOURS[i % BAND_COLOURS.length],
        symbol: list.map((r) => night.SYMBOLS[r.status] || "circle"),
      },
      hovertemplate: `EXPID %{customdata[0]}<br>%{x}<br>%{y:${format}}<br>%{customdata[1]}<extra></extra>`,
    }));
  },
  draw(rows) {
    const time = { title: { text: "MJD-OBS (UTC)" }, type: "date" };
    for (const [div, title, value, format] of night.CHARTS) {
      Plotly.react(
        div,
        night.traces(rows, value, format),
        calib.layout({ xaxis: time, yaxis: { title: { text: title } } }),
        calib.config,
      );
    }
  },
  charts: () => night.CHARTS.map(([div]) => div),
};
