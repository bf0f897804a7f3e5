"""The photometric step: the zero-point from matched clean stars, calibrated magnitudes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from calibstream.astrometry.refcat import RefCatalog, ShardCache
from calibstream.astrometry.solve import Matches, load_references, match_to_references
from calibstream.colorterms import required_colorterm
from calibstream.config import Config
from calibstream.errors import CalibrationError
from calibstream.frame import Frame
from calibstream.photometry.photocal import (
    PhotoCalResult,
    calibrated_magnitudes,
    fit_zeropoint,
    select_calibration_stars,
)


def calibrate_photometry(
    frame: Frame,
    catalog: dict[str, np.ndarray],
    refs: RefCatalog,
    matches: Matches,
    config: Config,
    photometry_store: Path | None = None,
    cache: ShardCache | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[PhotoCalResult, dict[str, np.ndarray], dict[str, float]]:
    """The zero-point and the calibrated catalog (a new dict), and the step's timings.

    ``catalog`` has the fitted sky positions; ``matches`` pair it with the
    astrometric ``refs``, which serve unless a separate photometric store is given.
    """
    start = clock()
    catalog = dict(catalog)
    if photometry_store is not None:
        margin = config.calibration.footprint_margin_deg
        refs = load_references(photometry_store, frame, margin, cache)
        matches = match_to_references(
            catalog["ra"], catalog["dec"], refs, config.calibration.match_radius_arcsec
        )
    photometry = fit_photometry(catalog, refs, matches, frame, config)
    return photometry, catalog, {"photometry": clock() - start}


def fit_photometry(
    catalog: dict[str, np.ndarray],
    refs: RefCatalog,
    matches: Matches,
    frame: Frame,
    config: Config,
) -> PhotoCalResult:
    """Zero-point from matched clean stars; adds calibrated magnitudes and flags to ``catalog``."""
    meta = frame.metadata
    colorterm = required_colorterm(config, meta.band, refs.name)  # by catalogue and band
    for band in (colorterm.primary, colorterm.secondary):
        if band not in refs.bands:
            raise CalibrationError(
                f"the photometric catalog has no {band}_mag column", where=f"{band}_mag"
            )
    rows, ref_rows = matches.source, matches.ref
    primary, primary_err = (a[ref_rows] for a in refs.bands[colorterm.primary])
    secondary, secondary_err = (a[ref_rows] for a in refs.bands[colorterm.secondary])
    candidate = select_calibration_stars(catalog, frame.psf_fwhm, config.photometry)[rows]
    candidate &= np.isfinite(primary) & np.isfinite(secondary)
    result = fit_zeropoint(
        catalog["psf_flux"][rows],
        catalog["psf_flux_err"][rows],
        meta.exptime,
        primary,
        primary_err,
        secondary,
        secondary_err,
        colorterm,
        candidate,
        meta.expid,
        config.photometry,
    )
    n = len(catalog["id"])
    for name, per_match in (
        ("calib_photometry_used", result.used),
        ("calib_photometry_reserved", result.reserved),
    ):
        column = np.zeros(n, dtype=bool)
        column[rows] = per_match
        catalog[name] = column
    catalog["psf_mag"], catalog["psf_mag_err"] = calibrated_magnitudes(
        catalog["psf_flux"], catalog["psf_flux_err"], meta.exptime, result
    )
    return result
