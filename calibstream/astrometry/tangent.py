"""The first guess's tangent plane: sources and reference stars about its chip centre.

:func:`~calibstream.astrometry.fit.fit_astrometry` works in arcseconds on the
tangent plane about the first-guess WCS's chip centre: the sources projected
through the first guess, the reference stars by the gnomonic projection, both
with their per-axis errors in mas. The reference stars kept are those in the
footprint searched: the chip grown by the largest displacement a first guess
within the configured bounds can cause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from calibstream.astrometry.sipfit import gnomonic
from calibstream.config import AstrometryConfig
from calibstream.errors import AstrometryError

#: Reference stars farther than this from the chip centre (deg) are never projected.
MAX_PROJECTED_DEG = 45.0
#: Per-axis error (mas) of a reference star whose error is unknown everywhere.
UNKNOWN_REF_ERR_MAS = 10.0


@dataclass(frozen=True, eq=False)
class TangentFrame:
    """The first guess's chip centre on the sky, its linear CD matrix and pixel scale."""

    ra: float  # deg, chip centre through the first guess
    dec: float
    cd: np.ndarray  # (2, 2) deg / px
    pixel_scale: float  # arcsec / px
    nx: int
    ny: int

    def project(self, ra, dec) -> np.ndarray:
        """(n, 2) tangent-plane positions in arcsec about the chip centre."""
        return tangent(ra, dec, self.ra, self.dec)


@dataclass(frozen=True, eq=False)
class Projected:
    """Rows of the caller's arrays kept, their tangent-plane positions and per-axis errors."""

    rows: np.ndarray  # indices into the caller's arrays
    xy: np.ndarray  # (n, 2) arcsec
    sigma_mas: np.ndarray  # per-axis error, mas


def tangent_frame(initial_wcs: WCS, shape: tuple[int, int]) -> TangentFrame:
    """The first guess's tangent plane about its chip centre (``shape`` is numpy's (ny, nx))."""
    ny, nx = (int(s) for s in shape)
    centre = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    ra_c, dec_c = (float(v) for v in initial_wcs.all_pix2world([centre], 0)[0])
    cd0 = np.asarray(initial_wcs.pixel_scale_matrix, float)
    pixel_scale = 3600.0 * math.sqrt(abs(np.linalg.det(cd0)))  # arcsec / px
    return TangentFrame(ra_c, dec_c, cd0, pixel_scale, nx, ny)


def project_sources(
    x: np.ndarray,
    y: np.ndarray,
    x_err: np.ndarray,
    y_err: np.ndarray,
    initial_wcs: WCS,
    frame: TangentFrame,
    min_matches: int,
) -> Projected:
    """Sources with finite centroids on the tangent plane; too few is an error."""
    src_ok = np.isfinite(x) & np.isfinite(y)
    src_rows = np.flatnonzero(src_ok)
    if src_rows.size < min_matches:
        raise AstrometryError(
            f"only {src_rows.size} sources to match (need {min_matches})",
            where="astrometry.sources",
        )
    s_ra, s_dec = initial_wcs.all_pix2world(x[src_rows], y[src_rows], 0)
    src_xy = frame.project(s_ra, s_dec)
    src_sigma = source_sigma(x_err[src_rows], y_err[src_rows], frame.pixel_scale)
    return Projected(src_rows, src_xy, src_sigma)


def search_margin(frame: TangentFrame, cfg: AstrometryConfig) -> float:
    """Pixels the footprint grows by: the largest displacement a first guess in bounds causes."""
    return cfg.max_offset_arcsec / frame.pixel_scale + 0.5 * math.hypot(frame.nx, frame.ny) * (
        math.radians(cfg.max_rotation_deg) + cfg.max_scale_error
    )


def project_references(
    ref_ra: np.ndarray,
    ref_dec: np.ndarray,
    ref_err: np.ndarray,
    frame: TangentFrame,
    margin: float,
    min_matches: int,
) -> Projected:
    """Reference stars within the chip + ``margin`` px on the tangent plane; too few is an error."""
    ref_ok = np.isfinite(ref_ra) & np.isfinite(ref_dec)
    ref_ok[ref_ok] = (
        angular_distance(ref_ra[ref_ok], ref_dec[ref_ok], frame.ra, frame.dec) < MAX_PROJECTED_DEG
    )
    ref_rows = np.flatnonzero(ref_ok)
    ref_xy = frame.project(ref_ra[ref_rows], ref_dec[ref_rows])
    approx_px = (np.linalg.inv(frame.cd) @ (ref_xy.T / 3600.0)).T  # linear first guess, px
    in_foot = (np.abs(approx_px[:, 0]) <= frame.nx / 2.0 + margin) & (
        np.abs(approx_px[:, 1]) <= frame.ny / 2.0 + margin
    )
    ref_rows, ref_xy = ref_rows[in_foot], ref_xy[in_foot]
    n_foot = ref_rows.size
    if n_foot < min_matches:
        raise AstrometryError(
            f"only {n_foot} reference stars within the footprint (chip + {margin:.0f} px) "
            f"about ({frame.ra:.5f}, {frame.dec:.5f}); need at least {min_matches}",
            where="astrometry.refs",
        )
    return Projected(ref_rows, ref_xy, reference_sigma(ref_err[ref_rows]))


def reference_sigma(ref_err: np.ndarray) -> np.ndarray:
    """Per-axis reference errors in mas; invalid ones take the median (or a default)."""
    ref_sigma = np.where(
        np.isfinite(ref_err) & (ref_err >= 0),
        ref_err,
        np.nanmedian(ref_err) if ref_err.size else 0.0,
    )
    return np.nan_to_num(ref_sigma, nan=UNKNOWN_REF_ERR_MAS)


def source_sigma(x_err, y_err, pixel_scale):
    """Per-axis centroid error in mas (isotropic); non-finite errors take the median."""
    var = 0.5 * (np.square(x_err) + np.square(y_err))
    bad = ~np.isfinite(var) | (var <= 0)
    if bad.all():
        var = np.full(var.shape, 0.01)  # 0.1 px: no error given at all
    elif bad.any():
        var = np.where(bad, np.median(var[~bad]), var)
    return np.sqrt(var) * pixel_scale * 1000.0


def tangent(ra, dec, ra0, dec0) -> np.ndarray:
    """(n, 2) gnomonic standard coordinates in arcsec of (ra, dec) about (ra0, dec0)."""
    xi, eta = gnomonic(ra, dec, ra0, dec0)
    return np.column_stack([xi, eta]) * 3600.0


def angular_distance(ra, dec, ra0, dec0):
    """Great-circle distance in degrees of (ra, dec) from (ra0, dec0)."""
    ra, dec = np.radians(ra), np.radians(dec)
    d0 = math.radians(dec0)
    cos_c = math.sin(d0) * np.sin(dec) + math.cos(d0) * np.cos(dec) * np.cos(ra - math.radians(ra0))
    return np.degrees(np.arccos(np.clip(cos_c, -1.0, 1.0)))
