"""The visit's pointing error: a rigid transform of the fitted WCS against the first guess.

All detectors of a visit share one pointing, so a pointing error moves every detector's
first guess the same way: a shift and a rotation about the boresight in the tangent
plane. Each detector gives its centre and four corners through both WCS; the boresight
is where the focal plane's origin falls through the first guesses (an affine fit of the
points' focal-plane pixels to their guessed sky positions), and the fitted points
against the guessed ones about it give (least squares, closed form)

    fitted = R(θ) guessed + (dξ, dη)

with ξ east (Δα cos δ) and η north, in arcsec; θ > 0 turns east towards north
(counter-clockwise in the (ξ, η) plane). The shift is where the boresight really points
relative to where the first guess put it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calibstream.astrometry.sipfit import gnomonic, inverse_gnomonic
from calibstream.camera import Camera
from calibstream.visit.outcome import DetectorOutcome, point_pixels

ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0


@dataclass(frozen=True)
class PointingFit:
    """The pointing offset (arcsec), rotation (arcsec), residual rms (mas), points used."""

    dra_cosdec: float
    ddec: float
    rotation: float
    rms_mas: float
    n_detectors: int
    boresight: tuple[float, float]  # (ra, dec) deg through the first guesses


def _mean_direction(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    """The normalised mean unit vector as (ra, dec) deg (no wrap at ra = 0)."""
    r, d = np.radians(ra), np.radians(dec)
    v = np.array([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)]).sum(axis=1)
    return math.degrees(math.atan2(v[1], v[0])) % 360.0, math.degrees(
        math.atan2(v[2], math.hypot(v[0], v[1]))
    )


def _focal_plane(outcomes: Sequence[DetectorOutcome], camera: Camera) -> np.ndarray:
    """(5n, 2) focal-plane pixels of each outcome's centre and corners."""
    parts = []
    for o in outcomes:  # per detector, not per point: five points each
        det = camera.detector(o.detector)
        x, y = det.to_focal_plane(*point_pixels((det.ny, det.nx)))
        parts.append(np.column_stack([x, y]))
    return np.concatenate(parts)


def boresight(focal: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    """Where focal-plane (0, 0) falls through the first guesses: an affine fit's offset."""
    ra0, dec0 = _mean_direction(ra, dec)
    xi, eta = gnomonic(ra, dec, ra0, dec0)
    design = np.column_stack([np.ones(len(focal)), focal])
    coeffs = np.linalg.lstsq(design, np.column_stack([xi, eta]), rcond=None)[0]
    bra, bdec = inverse_gnomonic(coeffs[0, 0], coeffs[0, 1], ra0, dec0)
    return float(bra), float(bdec)


def rigid_fit(guess: np.ndarray, fitted: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Least-squares shift t and angle θ (rad) of ``fitted ≈ R(θ) guess + t``; residuals."""
    g_mean, f_mean = guess.mean(axis=0), fitted.mean(axis=0)
    g, f = guess - g_mean, fitted - f_mean
    theta = math.atan2(float(np.sum(g[:, 0] * f[:, 1] - g[:, 1] * f[:, 0])), float(np.sum(g * f)))
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    shift = f_mean - rot @ g_mean
    return shift, theta, fitted - (guess @ rot.T + shift)


def fit_pointing(outcomes: Sequence[DetectorOutcome], camera: Camera) -> PointingFit | None:
    """The visit's pointing offset and rotation from the detectors with both WCS; None
    when no detector has both."""
    used = [o for o in outcomes if o.guess_points and o.fitted_points]
    if not used:
        return None
    guess = np.array([p for o in used for p in o.guess_points], float)
    fitted = np.array([p for o in used for p in o.fitted_points], float)
    if guess.shape != fitted.shape:
        raise ValueError("an outcome's guessed and fitted points differ in number")
    focal = _focal_plane(used, camera)
    if len(focal) != len(guess):
        raise ValueError("an outcome holds other than the centre and four corners")
    ra0, dec0 = boresight(focal, guess[:, 0], guess[:, 1])
    g = np.column_stack(gnomonic(guess[:, 0], guess[:, 1], ra0, dec0)) * 3600.0
    f = np.column_stack(gnomonic(fitted[:, 0], fitted[:, 1], ra0, dec0)) * 3600.0
    shift, theta, resid = rigid_fit(g, f)
    return PointingFit(
        dra_cosdec=float(shift[0]),
        ddec=float(shift[1]),
        rotation=theta * ARCSEC_PER_RAD,
        rms_mas=float(np.sqrt(np.mean(np.sum(resid**2, axis=1)))) * 1000.0,
        n_detectors=len(used),
        boresight=(ra0, dec0),
    )
