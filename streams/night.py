"""The night per band: the latest seeing, depth and effective time of each band, from the
read model's newest rows (for ``/metrics`` and the dashboard's gauges)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.readmodel import ReadModel

#: The row's figures the gauges follow: name -> (row field, metric name, help).
FIGURES = {
    "seeing": (
        "psf_fwhm_arcsec",
        "calibstream_seeing_arcsec",
        "PSF FWHM of the latest exposure per band (psfSigma x 2.3548 x pixelScale), arcsec",
    ),
    "depth": (
        "maglim",
        "calibstream_maglim",
        "5-sigma point-source depth magLim of the latest exposure per band, mag",
    ),
    "efftime": (
        "efftime",
        "calibstream_efftime_seconds",
        "Effective exposure time effTime (DES t_eff) of the latest exposure per band, s",
    ),
}

#: Newest rows looked through for each band's latest figures.
SCAN = 1000


def latest_by_band(readmodel: ReadModel, scan: int = SCAN) -> dict[str, dict[str, Any]]:
    """For each band among the newest ``scan`` rows: each figure of :data:`FIGURES` from the
    latest exposure (by MJD-OBS) that has it, with that exposure's EXPID and MJD-OBS."""
    latest: dict[str, dict[str, Any]] = {}
    for row in readmodel.page_metrics(scan):
        band, mjd = row.get("band"), row.get("mjd_obs")
        if not isinstance(band, str) or not isinstance(mjd, int | float):
            continue
        figures = latest.setdefault(band, {})
        for name, (field, *_) in FIGURES.items():
            value = row.get(field)
            if isinstance(value, int | float) and (
                name not in figures or mjd > figures[name]["mjd_obs"]
            ):
                figures[name] = {"value": float(value), "expid": row.get("expid"), "mjd_obs": mjd}
    return {band: figures for band, figures in sorted(latest.items()) if figures}


def gauge_values(latest: Mapping[str, Mapping[str, Any]], name: str) -> dict[str, float]:
    """Band -> the latest value of figure ``name``."""
    return {band: f[name]["value"] for band, f in latest.items() if name in f}
