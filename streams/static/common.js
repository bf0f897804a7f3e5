// Shared by both pages: fetching, formatting, table rows, plotly defaults.
"use strict";

const MJD_UNIX_DAYS = 40587; // MJD of 1970-01-01

const calib = {
  async json(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
    return response.json();
  },
  mjdDate: (mjd) => new Date((mjd - MJD_UNIX_DAYS) * 86400000),
  time: (ms) => (ms == null ? "" : new Date(ms).toISOString().replace("T", " ").slice(0, 19)),
  num: (value, digits) => (value == null ? "–" : Number(value).toFixed(digits)),
  // A table row of text cells (never HTML: reasons come from files and events).
  row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.append(cell);
      else td.textContent = cell == null ? "" : String(cell);
      tr.append(td);
    }
    return tr;
  },
  link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  },
  layout(extra) {
    return Object.assign(
      {
        margin: { l: 60, r: 20, t: 10, b: 40 },
        showlegend: true,
        legend: { orientation: "h", y: 1.12 },
        hovermode: "closest",
        uirevision: "keep", // zoom survives live updates
      },
      extra,
    );
  },
  config: { responsive: true, displaylogo: false },
};
