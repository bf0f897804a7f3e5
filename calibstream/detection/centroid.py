"""Windowed centroids (SExtractor's XWIN/YWIN) with their errors.

The position is sep's ``winpos``: the fixed point of a Gaussian-windowed first
moment. Its error comes from linearising that fixed point,
F(x̄) = Σ w I (x - x̄) = 0, so that::

    σ²(x̄) = Σ w² (x - x̄)² V / (Σ w I (1 - (x - x̄)²/s²))²

which is exact to first order for any profile (SExtractor's factor 4 is the
Gaussian special case).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep

from calibstream.detection.stamps import gather, size_classes, stamp_indices

#: The window is cut at this many window sigmas, as in SExtractor.
WINDOW_EXTENT = 4.0
#: Error stamps stop at this half-size: beyond it the window weight of any
#: point source is nil, and huge windows (saturated stars) need no exact error.
MAX_ERROR_HALF_SIZE = 32
#: Stamp pixels of the sources whose errors are computed at once (a dozen float64 arrays
#: of this many: ~6 MB of temporaries, whatever the stamps' size).
ERROR_PIXELS = 1 << 16


@dataclass(frozen=True)
class Centroids:
    x: np.ndarray
    y: np.ndarray
    x_err: np.ndarray
    y_err: np.ndarray
    xy_cov: np.ndarray
    failed: np.ndarray


def windowed_centroids(
    image: np.ndarray,
    variance: np.ndarray | float,
    invalid: np.ndarray | None,
    x0: np.ndarray,
    y0: np.ndarray,
    sigma: np.ndarray,
) -> Centroids:
    """Windowed centroids starting from (x0, y0), window sigma per source."""
    if len(x0) == 0:
        empty = np.zeros(0)
        return Centroids(empty, empty, empty, empty, empty, np.zeros(0, dtype=bool))
    x, y, flag = sep.winpos(image, x0, y0, sigma, mask=invalid)
    # A window cut by the image edge still gives SExtractor's XWIN; anything else fails.
    failed = ((flag & ~sep.APER_TRUNC) != 0) | ~np.isfinite(x) | ~np.isfinite(y)
    x = np.where(failed, x0, x)
    y = np.where(failed, y0, y)
    x_err, y_err, cov = (np.empty(len(x)) for _ in range(3))
    half_sizes = np.minimum(WINDOW_EXTENT * sigma + 1, MAX_ERROR_HALF_SIZE)
    for members, half in size_classes(half_sizes):
        step = max(1, ERROR_PIXELS // (2 * half + 1) ** 2)
        for start in range(0, len(members), step):  # temporaries of a chunk only
            chunk = members[start : start + step]
            x_err[chunk], y_err[chunk], cov[chunk] = _errors(
                image, variance, invalid, x[chunk], y[chunk], sigma[chunk], half
            )
    bad_err = ~(np.isfinite(x_err) & np.isfinite(y_err))
    return Centroids(x, y, x_err, y_err, cov, failed | bad_err)


def _errors(image, variance, invalid, x, y, sigma, half):
    ix = np.rint(x).astype(np.int64)
    iy = np.rint(y).astype(np.int64)
    rows, cols, inside = stamp_indices(image.shape, ix, iy, half)
    data = gather(image, rows, cols).astype(np.float64)
    if np.isscalar(variance):
        var = np.full(data.shape, float(variance))
    else:
        var = gather(variance, rows, cols).astype(np.float64)
    usable = inside & np.isfinite(data)
    if invalid is not None:
        usable &= ~gather(invalid, rows, cols)
    dx = cols - x[:, None, None]
    dy = rows - y[:, None, None]
    s2 = (np.asarray(sigma, dtype=float) ** 2)[:, None, None]
    r2 = dx * dx + dy * dy
    w = np.where(usable & (r2 < WINDOW_EXTENT**2 * s2), np.exp(-r2 / (2 * s2)), 0.0)
    wi = w * np.where(usable, data, 0.0)
    w2v = w * w * np.where(usable, var, 0.0)
    # Jacobian of F = Σ w I (x - x̄) with respect to x̄ (and the cross terms).
    jxx = np.einsum("nij,nij->n", wi, 1.0 - dx * dx / s2)
    jyy = np.einsum("nij,nij->n", wi, 1.0 - dy * dy / s2)
    jxy = -np.einsum("nij,nij->n", wi, dx * dy / s2)
    cxx = np.einsum("nij,nij->n", w2v, dx * dx)
    cyy = np.einsum("nij,nij->n", w2v, dy * dy)
    cxy = np.einsum("nij,nij->n", w2v, dx * dy)
    # Covariance of x̄ = J^-1 C J^-T for the 2x2 system of both coordinates.
    det = jxx * jyy - jxy * jxy
    with np.errstate(divide="ignore", invalid="ignore"):
        ixx, iyy, ixy = jyy / det, jxx / det, -jxy / det
        var_x = ixx * ixx * cxx + 2 * ixx * ixy * cxy + ixy * ixy * cyy
        var_y = ixy * ixy * cxx + 2 * ixy * iyy * cxy + iyy * iyy * cyy
        cov = ixx * ixy * cxx + (ixx * iyy + ixy * ixy) * cxy + ixy * iyy * cyy
        return np.sqrt(var_x), np.sqrt(var_y), cov
