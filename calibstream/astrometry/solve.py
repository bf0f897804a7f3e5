"""The astrometric step: references in the footprint at the epoch, the TAN-SIP fit, matches.

Reads no pixels, only the catalog and the exposure's :class:`~calibstream.frame.Frame`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from calibstream.astrometry import preload
from calibstream.astrometry.fit import AstrometryResult, fit_astrometry
from calibstream.astrometry.refcat import (
    RefCatalog,
    ShardCache,
    footprint_circle,
    load_refcat,
    propagate_to_epoch,
)
from calibstream.colorterms import colorterm_for
from calibstream.config import Config
from calibstream.errors import CalibrationError
from calibstream.frame import Frame

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
class AstrometricSolution:
    """The astrometric step's result: the catalog with fitted sky positions, and its matches."""

    refs: RefCatalog  # astrometric references at the epoch; ``matches.ref`` indexes them
    astrometry: AstrometryResult
    matches: Matches
    catalog: dict[str, np.ndarray]  # with ra, dec from the fitted WCS and calib_astrometry_used
    timings: dict[str, float] = field(default_factory=dict)


def load_references(
    store: Path, frame: Frame, margin_deg: float, cache: ShardCache | None = None
) -> RefCatalog:
    """Reference rows covering the exposure, at its epoch."""
    ra, dec, radius = footprint_circle(frame.wcs, frame.shape, margin_deg)
    refs = preload.take(store, ra, dec, radius)  # the detect step's preload, if it covers
    if refs is None:
        refs = load_refcat(store, ra, dec, radius, shard_cache=cache)
    if len(refs) == 0:
        raise CalibrationError(
            f"no reference stars within {radius:.3f} deg of ({ra:.5f}, {dec:.5f}) in {store}",
            where="refcat",
        )
    return propagate_to_epoch(refs, frame.metadata.mjd_obs)


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


def fit_sources(
    catalog: dict[str, np.ndarray], refs: RefCatalog, frame: Frame, config: Config
) -> AstrometryResult:
    """The astrometric fit on the sources fit for it; indices refer to the whole catalog."""
    good = np.isfinite(catalog["x_err"]) & np.isfinite(catalog["y_err"]) & (catalog["x_err"] > 0)
    good &= np.isfinite(catalog["psf_flux"])
    for flag in ASTROMETRY_REJECT:
        good &= ~catalog[flag]
    rows = capped_rows(np.flatnonzero(good), catalog["psf_flux"], config.calibration.max_footprints)
    ref_err = np.hypot(np.nan_to_num(refs.ra_err, nan=10.0), np.nan_to_num(refs.dec_err, nan=10.0))
    # Pattern matching ranks references by brightness in the exposure's band where known.
    term = colorterm_for(config, frame.metadata.band, refs.name)
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
        n_brighter=int(np.count_nonzero(catalog["flag_saturated"])),
    )
    used = np.zeros(len(catalog["id"]), dtype=bool)
    used[rows[result.source_index]] = True
    return dataclasses.replace(result, source_index=rows[result.source_index], used=used)


def capped_rows(rows: np.ndarray, flux: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` of ``rows`` (0: all), the brightest by ``flux``, in their order.

    Crowded fields: the fit needs the bright sources, not all of them (Rubin's
    ``downsample_max_footprints``); the catalogue itself stays complete.
    """
    if cap <= 0 or rows.size <= cap:
        return rows
    brightest = np.argsort(-flux[rows], kind="stable")[:cap]
    return rows[np.sort(brightest)]


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
