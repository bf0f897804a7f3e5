"""The zero-point's statistics: a Paule–Mandel weighted mean and robust clipping.

Pure functions of per-star zero-points ``z`` and their stated errors ``s``
(mag), used by :func:`calibstream.photometry.photocal.fit_zeropoint`.
"""

from __future__ import annotations

import math

import numpy as np

from calibstream.config import PhotometryConfig


def clip_zeropoints(
    z: np.ndarray, s: np.ndarray, config: PhotometryConfig
) -> tuple[np.ndarray, int]:
    """Iterative clipping at ``clip_sigma`` robust sigmas of (ZP_i - centre) / sqrt(σ_i² + τ²).

    The robust extra scatter τ and scale come from the median of the squared
    normalised residuals of *all* stars (:func:`robust_extra`), not from the
    kept ones: a χ²-based σ_int refitted on clipped stars would shrink, then
    clip the precise stars that reveal it, and so on. The centre starts at the
    median ZP_i and is then the weighted mean of the kept stars; every star is
    judged afresh each round (a clipped star may return). ``few_stars`` or fewer
    are never clipped: a robust scale from so few says nothing.
    """
    keep = np.ones(z.size, dtype=bool)
    if z.size <= config.few_stars:
        return keep, 0
    centre = float(np.median(z))
    iterations = 0
    for _ in range(config.clip_iterations):
        extra, scale = robust_extra(z - centre, s)
        if not scale > 0:
            break
        if keep.sum() > 1:  # never tighter than the χ² estimate of the kept stars
            extra = max(extra, weighted_fit(z[keep], s[keep])[2] ** 2)
        iterations += 1
        new = np.abs(z - centre) <= config.clip_sigma * scale * np.sqrt(s**2 + extra)
        if np.array_equal(new, keep) or new.sum() < 2:
            break
        keep = new
        centre = weighted_fit(z[keep], s[keep])[0]
    return keep, iterations


#: Median of χ² with one degree of freedom: median(r²) of Gaussian residuals r.
MEDIAN_CHI2_1 = 0.45493642311957283


def robust_extra(d: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """τ² >= 0 making median(d² / (s² + τ²)) that of χ²₁, and the residual scale then.

    The scale is 1 when τ² > 0; below 1 when the stated errors alone
    overstate the scatter (τ² = 0).
    """
    var = s**2
    d2 = d**2

    def excess(extra: float) -> float:
        return float(np.median(d2 / (var + extra)) - MEDIAN_CHI2_1)

    at_zero = excess(0.0)
    if at_zero <= 0:
        return 0.0, math.sqrt((at_zero + MEDIAN_CHI2_1) / MEDIAN_CHI2_1)
    upper = float(np.median(d2)) / MEDIAN_CHI2_1  # median(d²/(s²+upper)) <= that
    if not excess(upper) < 0:
        return upper, 1.0
    from scipy.optimize import brentq  # imported when first needed (10 MB, 0.05 s)

    return brentq(excess, 0.0, upper, xtol=1e-14, rtol=1e-10), 1.0


def weighted_fit(z: np.ndarray, s: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Weighted mean, its error, the extra scatter σ_int, and the weights.

    σ_int² >= 0 solves Σ (z_i - ẑ)² / (s_i² + σ_int²) = N - 1 (Paule–Mandel:
    χ²/dof = 1); it is 0 when the stated errors already give χ²/dof <= 1.
    """
    var = s**2
    dof = z.size - 1

    def excess(extra: float) -> float:
        w = 1.0 / (var + extra)
        mean = np.sum(w * z) / np.sum(w)
        return float(np.sum(w * (z - mean) ** 2) - dof)

    extra = 0.0
    if dof > 0 and excess(0.0) > 0:
        from scipy.optimize import brentq

        # at this σ_int² the χ² is at most dof (each weight <= 1/extra): a bracket
        upper = float(np.sum((z - z.mean()) ** 2) / dof)
        extra = brentq(excess, 0.0, upper, xtol=1e-14, rtol=1e-10) if excess(upper) < 0 else upper
    w = 1.0 / (var + extra)
    total = np.sum(w)
    return float(np.sum(w * z) / total), float(1.0 / np.sqrt(total)), math.sqrt(extra), w


def floored_fit(
    z: np.ndarray, s: np.ndarray, floor: float
) -> tuple[float, float, float, np.ndarray]:
    """:func:`weighted_fit` with the extra scatter σ_int at least ``floor`` (mag).

    For a zero-point from a few stars: with n = 2 the χ²/dof = 1 condition
    gives σ_int² = max(((z₁ - z₂)² - s₁² - s₂²) / 2, 0), one difference's
    excess, zero about two times in three; with n = 1 there is nothing to
    estimate it from. A floor keeps the error from trusting that luck.
    """
    mean, err, extra, w = weighted_fit(z, s) if z.size > 1 else (0.0, 0.0, 0.0, None)
    if z.size > 1 and extra >= floor:
        return mean, err, extra, w
    extra = max(extra, floor)
    w = 1.0 / (s**2 + extra**2)
    total = np.sum(w)
    return float(np.sum(w * z) / total), float(1.0 / np.sqrt(total)), extra, w
