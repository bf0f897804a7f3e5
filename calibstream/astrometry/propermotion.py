"""Proper motion: reference positions moved to an exposure's epoch, all rows at once.

A star is moved in a straight line in space at constant velocity, seen from
the origin, with no parallax and no radial velocity: its unit vector becomes
``r + Δt·μ`` (μ the proper-motion vector in the tangent plane, in radians per
year), normalised. This is what astropy's ``SkyCoord.apply_space_motion`` and
Gaia's epoch propagation do for a source without parallax or radial
velocity; it is exact on the sphere (no small-angle or cos(dec) shortcut), and
well defined near the poles.
"""

from __future__ import annotations

import numpy as np

MAS_TO_RAD = np.pi / (180.0 * 3600.0 * 1000.0)
MJD_J2000 = 51544.5  # MJD of J2000.0 (TT; MJD TAI differs by 32.184 s, 1e-6 yr)
DAYS_PER_JULIAN_YEAR = 365.25


def julian_year(mjd: float | np.ndarray) -> float | np.ndarray:
    """Julian epoch of an MJD: 2000.0 + (MJD - 51544.5) / 365.25."""
    return 2000.0 + (np.asarray(mjd, dtype=np.float64) - MJD_J2000) / DAYS_PER_JULIAN_YEAR


def propagate_positions(
    ra: np.ndarray,
    dec: np.ndarray,
    pmra: np.ndarray,
    pmdec: np.ndarray,
    dt: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees after ``dt`` Julian years of proper motion (mas/yr, pmra with cos dec).

    Rows with a non-finite proper motion or ``dt`` do not move.
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), ra_r.shape)
    pmra = np.asarray(pmra, dtype=np.float64)
    pmdec = np.asarray(pmdec, dtype=np.float64)
    still = ~(np.isfinite(pmra) & np.isfinite(pmdec) & np.isfinite(dt))
    step = np.where(still, 0.0, dt) * MAS_TO_RAD
    a = np.where(still, 0.0, pmra) * step  # radians along +ra on the sky
    d = np.where(still, 0.0, pmdec) * step  # radians along +dec
    sin_ra, cos_ra = np.sin(ra_r), np.cos(ra_r)
    sin_dec, cos_dec = np.sin(dec_r), np.cos(dec_r)
    # r + a * e_ra + d * e_dec, with e_ra = (-sin ra, cos ra, 0) and
    # e_dec = (-sin dec cos ra, -sin dec sin ra, cos dec); normalising is not
    # needed for the angles.
    x = cos_dec * cos_ra - a * sin_ra - d * sin_dec * cos_ra
    y = cos_dec * sin_ra + a * cos_ra - d * sin_dec * sin_ra
    z = sin_dec + d * cos_dec
    new_ra = np.degrees(np.arctan2(y, x)) % 360.0
    new_ra[new_ra >= 360.0] = 0.0
    new_dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    # Rows that do not move keep their exact input values (no trigonometric round trip).
    moves = (a != 0.0) | (d != 0.0)
    return np.where(moves, new_ra, ra), np.where(moves, new_dec, dec)


def grow_errors(err: np.ndarray, pm_err: np.ndarray, dt: np.ndarray | float) -> np.ndarray:
    """Position error (mas) grown in quadrature by ``pm_err`` (mas/yr) × |dt| (yr).

    A non-finite ``pm_err`` or ``dt`` adds nothing (unknown, not infinite).
    """
    growth = np.abs(np.asarray(pm_err, dtype=np.float64) * np.asarray(dt, dtype=np.float64))
    growth = np.where(np.isfinite(growth), growth, 0.0)
    return np.hypot(np.asarray(err, dtype=np.float64), growth)
