"""Adaptive second moments (Bernstein & Jarvis 2002; SdssShape, GalSim's HSM), vectorised.

The moments of an image under an elliptical Gaussian weight matched to it: iterate
``M <- 2 Q(M)``, where ``Q(M)`` are the second moments of the image times the weight
``exp(-d^T M^-1 d / 2)`` about the weighted centroid. For a Gaussian image the fixed point
is its covariance; for any other profile it is the covariance of the Gaussian that best
matches it, the quantity Rubin's ``psfSigma`` (``computeShape().getDeterminantRadius()``)
and the PSF-star residuals are made of. Pure functions over stacks of stamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Per stamp: the adaptive moments (px²), the centroid (px, in the stamps' frame: 0 at
    the first pixel's centre) and whether the iteration failed to converge."""

    xx: np.ndarray
    yy: np.ndarray
    xy: np.ndarray
    x: np.ndarray
    y: np.ndarray
    failed: np.ndarray  # bool

    @property
    def determinant_radius(self) -> np.ndarray:
        """(Ixx Iyy - Ixy²)^(1/4): Rubin's psfSigma."""
        return np.sqrt(np.sqrt(np.maximum(self.xx * self.yy - self.xy**2, 0.0)))

    @property
    def trace_radius(self) -> np.ndarray:
        """sqrt((Ixx + Iyy) / 2): the size Rubin's PSF-star residuals compare."""
        return np.sqrt((self.xx + self.yy) / 2.0)

    @property
    def e1(self) -> np.ndarray:
        return (self.xx - self.yy) / (self.xx + self.yy)

    @property
    def e2(self) -> np.ndarray:
        return 2.0 * self.xy / (self.xx + self.yy)


def adaptive_moments(
    stamps: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    sigma0: float = 2.0,
    iterations: int = 60,
    tolerance: float = 1e-6,
) -> Moments:
    """Adaptive moments of each stamp of ``stamps`` (N, S, S), starting from a round weight
    of ``sigma0`` px at the stamp's centre. ``weights`` (N, S, S): 1 where a pixel counts,
    0 where it does not (masked, off the image). A stamp whose iteration leaves the stamp,
    turns the weight non-positive-definite or does not settle within ``iterations`` is
    ``failed`` (its moments NaN)."""
    stamps = np.asarray(stamps, dtype=np.float64)
    n, size = stamps.shape[0], stamps.shape[-1]
    use = np.ones_like(stamps) if weights is None else np.asarray(weights, dtype=np.float64)
    grid = np.arange(size, dtype=np.float64)
    gx, gy = grid[None, None, :], grid[None, :, None]
    centre = (size - 1) / 2.0
    x, y = np.full(n, centre), np.full(n, centre)
    xx, yy, xy = np.full(n, sigma0**2), np.full(n, sigma0**2), np.zeros(n)
    done = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    for _ in range(iterations):
        live = np.flatnonzero(~done & ~failed)  # only the stamps still iterating
        if live.size == 0:
            break
        step = _iterate(
            stamps[live], use[live], gx, gy, x[live], y[live], xx[live], yy[live], xy[live]
        )
        nx, ny, nxx, nyy, nxy = step
        bad = ~np.all(np.isfinite(np.stack(step)), axis=0) | (nxx <= 0) | (nyy <= 0)
        bad |= nxx * nyy - nxy**2 <= 0
        bad |= (np.abs(nx - centre) > size / 2.0) | (np.abs(ny - centre) > size / 2.0)
        moved = np.abs(nxx - xx[live]) + np.abs(nyy - yy[live]) + np.abs(nxy - xy[live])
        failed[live[bad]] = True
        good, kept = live[~bad], ~bad
        x[good], y[good], xx[good], yy[good], xy[good] = (
            nx[kept],
            ny[kept],
            nxx[kept],
            nyy[kept],
            nxy[kept],
        )
        done[good] = moved[kept] < tolerance * (xx[good] + yy[good])
    failed |= ~done
    nan = np.where(failed, np.nan, 1.0)
    return Moments(xx * nan, yy * nan, xy * nan, x * nan, y * nan, failed)


def _iterate(stamps, use, gx, gy, x, y, xx, yy, xy):
    """One step: the weighted centroid and twice the weighted second moments about it."""
    det = xx * yy - xy**2
    det = np.where(det > 0, det, np.nan)
    ixx, iyy, ixy = (yy / det)[:, None, None], (xx / det)[:, None, None], (-xy / det)[:, None, None]
    dx = gx - x[:, None, None]
    dy = gy - y[:, None, None]
    weight = np.exp(-0.5 * (ixx * dx * dx + 2.0 * ixy * dx * dy + iyy * dy * dy)) * use
    wi = weight * stamps
    total = wi.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        cx = x + (wi * dx).sum(axis=(1, 2)) / total
        cy = y + (wi * dy).sum(axis=(1, 2)) / total
        dx = gx - cx[:, None, None]
        dy = gy - cy[:, None, None]
        mxx = (wi * dx * dx).sum(axis=(1, 2)) / total
        myy = (wi * dy * dy).sum(axis=(1, 2)) / total
        mxy = (wi * dx * dy).sum(axis=(1, 2)) / total
    return cx, cy, 2.0 * mxx, 2.0 * myy, 2.0 * mxy
