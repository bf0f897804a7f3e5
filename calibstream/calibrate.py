"""The whole of CalibrateTask for one exposure, as three steps.

1. pixels: detect and measure (``pipeline.measure_exposure``);
2. :func:`solve_astrometry`: reference stars in the footprint, moved to the
   epoch → TAN-SIP fit → sky positions → matches;
3. :func:`calibrate_photometry`: zero-point and calibrated magnitudes.

Steps 2 and 3 read no pixels, only the catalog and the exposure's
:class:`Frame`, so the streaming agents run them on their own and a replay of
the detection topic never opens an image. Pure: arrays and dataclasses in, a
:class:`Calibration` out. Writing is ``outputs``' job.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from calibstream.astrometry.fit import AstrometryResult, fit_astrometry
from calibstream.astrometry.refcat import (
    RefCatalog,
    ShardCache,
    footprint_circle,
    load_refcat,
    propagate_to_epoch,
)
from calibstream.config import Config
from calibstream.detection.background import Background
from calibstream.detection.pipeline import measure_exposure
from calibstream.errors import CalibrationError, stage
from calibstream.io.exposure import Exposure, Metadata
from calibstream.photometry.photocal import (
    PhotoCalResult,
    calibrated_magnitudes,
    fit_zeropoint,
    select_calibration_stars,
)

#: Flags that disqualify a source from the astrometric fit.
ASTROMETRY_REJECT = (
    "flag_edge",
    "flag_saturated",
    "flag_bad_centroid",
    "flag_bad",
    "flag_cr",
    "flag_nodata",
)


@dataclass(frozen=True)
class Matches:
    """Each source paired with its nearest reference star (after the astrometric fit)."""

    source: np.ndarray  # row in the source catalog
    ref: np.ndarray  # row in the reference catalog
    distance_mas: np.ndarray


@dataclass(frozen=True)
class Frame:
    """What calibration needs of an exposure besides its sources: no pixels.

    The first-guess WCS is kept as its FITS header cards, the form in which it
    travels between processes, so every process builds the same WCS from it.
    """

    metadata: Metadata
    wcs_header: fits.Header
    shape: tuple[int, int]  # (height, width)
    psf_fwhm: float  # pixels

    @functools.cached_property
    def wcs(self) -> WCS:
        return WCS(self.wcs_header, relax=True)


def frame_of(exposure: Exposure) -> Frame:
    height, width = exposure.shape
    return Frame(
        metadata=exposure.metadata,
        wcs_header=exposure.wcs.to_header(relax=True),
        shape=(int(height), int(width)),
        psf_fwhm=float(exposure.psf.fwhm),
    )


@dataclass(frozen=True)
class AstrometricSolution:
    """The astrometric step's result: the catalog with fitted sky positions, and its matches."""

    refs: RefCatalog  # astrometric references at the epoch; ``matches.ref`` indexes them
    astrometry: AstrometryResult
    matches: Matches
    catalog: dict[str, np.ndarray]  # with ra, dec from the fitted WCS and calib_astrometry_used
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Calibration:
    frame: Frame
    background: Background
    refs: RefCatalog  # astrometric references at the exposure epoch
    astrometry: AstrometryResult
    matches: Matches  # sources to ``refs``
    photometry: PhotoCalResult
    catalog: dict[str, np.ndarray]  # the final src catalog
    timings: dict[str, float] = field(default_factory=dict)


def load_references(
    store: Path, frame: Frame, margin_deg: float, cache: ShardCache | None = None
) -> RefCatalog:
    """Reference rows covering the exposure, at its epoch."""
    ra, dec, radius = footprint_circle(frame.wcs, frame.shape, margin_deg)
    refs = load_refcat(store, ra, dec, radius, shard_cache=cache)
    if len(refs) == 0:
        raise CalibrationError(
            f"no reference stars within {radius:.3f} deg of ({ra:.5f}, {dec:.5f}) in {store}",
            where="refcat",
        )
    return propagate_to_epoch(refs, frame.metadata.mjd_obs)


def calibrate_exposure(
    exposure: Exposure,
    astrometry_store: Path,
    config: Config,
    photometry_store: Path | None = None,
    cache: ShardCache | None = None,
) -> Calibration:
    """Calibrate one exposure against its reference catalog(s): the three steps in a row."""
    with stage("detect"):
        measurement = measure_exposure(exposure, config)
    frame = frame_of(exposure)
    with stage("astrometry"):
        solution = solve_astrometry(frame, measurement.catalog, astrometry_store, config, cache)
    with stage("photometry"):
        photometry, catalog, phot_timings = calibrate_photometry(
            frame,
            solution.catalog,
            solution.refs,
            solution.matches,
            config,
            photometry_store,
            cache,
        )
    return Calibration(
        frame=frame,
        background=measurement.background,
        refs=solution.refs,
        astrometry=solution.astrometry,
        matches=solution.matches,
        photometry=photometry,
        catalog=catalog,
        timings={**measurement.timings, **solution.timings, **phot_timings},
    )


def solve_astrometry(
    frame: Frame,
    catalog: dict[str, np.ndarray],
    store: Path,
    config: Config,
    cache: ShardCache | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> AstrometricSolution:
    """References in the footprint, the TAN-SIP fit, sky positions and matches."""
    start = clock()
    cal = config.calibration
    refs = load_references(store, frame, cal.footprint_margin_deg, cache)
    loaded = clock()
    catalog = dict(catalog)
    astrometry = fit_sources(catalog, refs, frame, config)
    ra, dec = astrometry.wcs.all_pix2world(catalog["x"], catalog["y"], 0)
    catalog["ra"], catalog["dec"] = np.asarray(ra, float), np.asarray(dec, float)
    catalog["calib_astrometry_used"] = astrometry.used
    matches = match_to_references(catalog["ra"], catalog["dec"], refs, cal.match_radius_arcsec)
    timings = {"refcat": loaded - start, "astrometry": clock() - loaded}
    return AstrometricSolution(refs, astrometry, matches, catalog, timings)


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


def fit_sources(
    catalog: dict[str, np.ndarray], refs: RefCatalog, frame: Frame, config: Config
) -> AstrometryResult:
    """The astrometric fit on the sources fit for it; indices refer to the whole catalog."""
    good = np.isfinite(catalog["x_err"]) & np.isfinite(catalog["y_err"]) & (catalog["x_err"] > 0)
    good &= np.isfinite(catalog["psf_flux"])
    for flag in ASTROMETRY_REJECT:
        good &= ~catalog[flag]
    rows = np.flatnonzero(good)
    ref_err = np.hypot(np.nan_to_num(refs.ra_err, nan=10.0), np.nan_to_num(refs.dec_err, nan=10.0))
    # Pattern matching ranks references by brightness in the exposure's band where known.
    term = config.colorterms.get(frame.metadata.band)
    ref_brightness = None
    if term is not None and term.primary in refs.bands:
        ref_brightness = -np.nan_to_num(refs.bands[term.primary][0], nan=99.0)
    result = fit_astrometry(
        catalog["x"][rows],
        catalog["y"][rows],
        catalog["x_err"][rows],
        catalog["y_err"][rows],
        catalog["psf_flux"][rows],
        refs.ra,
        refs.dec,
        ref_err / np.sqrt(2),
        frame.wcs,
        frame.shape,
        config.astrometry,
        ref_brightness=ref_brightness,
    )
    used = np.zeros(len(catalog["id"]), dtype=bool)
    used[rows[result.source_index]] = True
    return dataclasses.replace(result, source_index=rows[result.source_index], used=used)


def match_to_references(
    ra: np.ndarray, dec: np.ndarray, refs: RefCatalog, radius_arcsec: float
) -> Matches:
    """Nearest reference within ``radius_arcsec`` of each source; each reference used once."""
    source_xyz = _unit_vectors(ra, dec)
    ref_xyz = _unit_vectors(refs.ra, refs.dec)
    chord = 2 * np.sin(np.radians(radius_arcsec / 3600) / 2)
    distance, nearest = cKDTree(ref_xyz).query(source_xyz, distance_upper_bound=chord)
    hit = np.flatnonzero(np.isfinite(distance))
    hit = hit[np.argsort(distance[hit], kind="stable")]
    _, first = np.unique(nearest[hit], return_index=True)
    sources = np.sort(hit[first])
    angle = 2 * np.arcsin(np.clip(distance[sources] / 2, 0, 1))
    return Matches(source=sources, ref=nearest[sources], distance_mas=np.degrees(angle) * 3.6e6)


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def fit_photometry(
    catalog: dict[str, np.ndarray],
    refs: RefCatalog,
    matches: Matches,
    frame: Frame,
    config: Config,
) -> PhotoCalResult:
    """Zero-point from matched clean stars; adds calibrated magnitudes and flags to ``catalog``."""
    meta = frame.metadata
    if meta.band not in config.colorterms:
        raise CalibrationError(
            f"no colour term configured for band {meta.band!r}", where="colorterms"
        )
    colorterm = config.colorterms[meta.band]
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
