"""The ladder of astrometric models, their degrees of freedom and cross-validated residuals.

Every model maps the fitted features (pixel offsets from the chip centre, or
the first guess's distorted focal plane about it, scaled to about [-1, 1])
onto standard coordinates (ξ, η) linearly in its parameters, so one weighted
least-squares solution, one hat matrix and one covariance serve them all:

========== ============================================================ ==========
rung       (ξ, η) =                                                     parameters
========== ============================================================ ==========
shift      first guess's linear map + a shift                           2
similarity first guess's linear map, rotated and scaled, + a shift      4
affine     any linear map + a shift                                     6
sip<k>     polynomials of order k (k ≥ 2)                               (k+1)(k+2)
========== ============================================================ ==========

Leave-one-out residuals are exact for a linear fit: removing pair *i* (both
axes) changes its residual to ``(I - H_ii)⁻¹ r_i`` with ``H_ii`` the 2 × 2
block of the weighted hat matrix. The parameters' covariance is
``(AᵀA)⁻¹`` in the weights' units (1/mas²), so the 1σ uncertainty of the
fitted position at any pixel follows from its design row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Leave-one-out is undefined for pairs whose leverage leaves less than this of their residual.
MIN_FREEDOM = 1e-9


@dataclass(frozen=True, eq=False)
class Model:
    """One rung: ``kind`` is "shift", "similarity" or "poly" (order ``order``).

    ``first`` (shift, similarity): the first guess's linear map, (2, 2), rows the
    scaled features (u, v), columns (ξ, η) in degrees.
    """

    kind: str
    order: int = 1
    first: np.ndarray | None = None

    @property
    def name(self) -> str:
        if self.kind != "poly":
            return self.kind
        return "affine" if self.order == 1 else f"sip{self.order}"

    def n_parameters(self, n_terms: int) -> int:
        return {"shift": 2, "similarity": 4}.get(self.kind, 2 * n_terms)

    def stack(self, a_mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stacked weighted design (ξ rows, then η rows) and its fixed part.

        ``a_mat``: the weighted polynomial design (m, k), first column the constant.
        """
        m, k = a_mat.shape
        if self.kind == "poly":
            design = np.zeros((2 * m, 2 * k))
            design[:m, :k] = a_mat
            design[m:, k:] = a_mat
            return design, np.zeros(2 * m)
        guess = a_mat[:, 1:3] @ self.first  # (m, 2): the first guess's (ξ, η), weighted
        ones, zeros = a_mat[:, 0], np.zeros(m)
        if self.kind == "shift":
            design = np.block([[ones[:, None], zeros[:, None]], [zeros[:, None], ones[:, None]]])
            return design, np.concatenate([guess[:, 0], guess[:, 1]])
        xi_rows = np.column_stack([guess[:, 0], -guess[:, 1], ones, zeros])
        eta_rows = np.column_stack([guess[:, 1], guess[:, 0], zeros, ones])
        return np.vstack([xi_rows, eta_rows]), np.zeros(2 * m)

    def coefficients(self, beta: np.ndarray, k: int) -> np.ndarray:
        """The (k, 2) polynomial coefficients (constant first) of the solution ``beta``."""
        if self.kind == "poly":
            return np.column_stack([beta[:k], beta[k:]])
        coeffs = np.zeros((k, 2))
        if self.kind == "shift":
            coeffs[0] = beta
            coeffs[1:3] = self.first
            return coeffs
        a, b, tx, ty = beta
        coeffs[0] = (tx, ty)
        coeffs[1:3] = self.first @ np.array([[a, b], [-b, a]])
        return coeffs


def solve(design: np.ndarray, offset: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Least squares of ``design β + offset ≈ rhs`` by the normal equations."""
    return np.linalg.solve(design.T @ design, design.T @ (rhs - offset))


def leave_one_out(design: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Each pair's residual (m, 2) when the fit is made without it (NaN: undefined).

    ``design`` is the stacked weighted design (2m, p); ``residual`` the
    weighted residuals (m, 2) of the fit with every pair.
    """
    m = residual.shape[0]
    gain = design @ np.linalg.inv(design.T @ design)
    xi, eta = design[:m], design[m:]
    h11 = np.sum(gain[:m] * xi, axis=1)
    h22 = np.sum(gain[m:] * eta, axis=1)
    h12 = np.sum(gain[:m] * eta, axis=1)
    # (I - H_ii)⁻¹ r_i with the 2 × 2 block H_ii = [[h11, h12], [h12, h22]]
    a, d, b = 1.0 - h11, 1.0 - h22, -h12
    det = a * d - b * b
    ok = det > MIN_FREEDOM
    det = np.where(ok, det, 1.0)
    loo_xi = (d * residual[:, 0] - b * residual[:, 1]) / det
    loo_eta = (a * residual[:, 1] - b * residual[:, 0]) / det
    out = np.column_stack([loo_xi, loo_eta])
    out[~ok] = np.nan
    return out


def position_sigma(design_rows: np.ndarray, covariance: np.ndarray, n: int) -> np.ndarray:
    """Total (2-D) 1σ of the fitted position at ``n`` points from their stacked rows (2n, p)."""
    var = np.sum((design_rows @ covariance) * design_rows, axis=1)
    return np.sqrt(np.maximum(var[:n], 0.0) + np.maximum(var[n:], 0.0))


def covers(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], cells: int) -> bool:
    """True when every cell of a ``cells`` × ``cells`` grid over the chip holds a point."""
    ny, nx = shape
    ix = np.clip((np.asarray(x) * cells / nx).astype(int), 0, cells - 1)
    iy = np.clip((np.asarray(y) * cells / ny).astype(int), 0, cells - 1)
    return np.unique(iy * cells + ix).size == cells * cells


def held_out_rms(loo_mas: np.ndarray, dof: int) -> float:
    """Total (2-D) rms of the leave-one-out residuals (mas); NaN without freedom."""
    total = np.sum(np.square(loo_mas), axis=1)
    total = total[np.isfinite(total)]
    if dof <= 0 or total.size == 0:
        return math.nan
    return float(np.sqrt(np.mean(total)))


def uncertainty(fit, rotation_prior_deg: float = 0.0, pivot=None) -> dict:
    """ASTERR and ASTERRMX of a :class:`~calibstream.astrometry.sipfit.TanSipFit` on a 10 × 10
    grid of the chip, and its 1σ function, scaled by max(χ²/dof, 1).

    The shift rung fits neither rotation nor scale: its uncertainty adds the first guess's
    (``rotation_prior_deg``, 1σ, and the same in radians of relative scale) times the
    distance from ``pivot`` (the matches' mean pixel; default the chip centre), in quadrature.
    """
    nx, ny = fit.wcs.pixel_shape
    factor = math.sqrt(max(fit.chi2 / fit.dof, 1.0)) if fit.dof > 0 else 1.0
    mas_per_px = math.sqrt(abs(np.linalg.det(fit.wcs.pixel_scale_matrix))) * 3.6e6
    prior = math.radians(rotation_prior_deg) if fit.model == "shift" else 0.0
    centre = ((nx - 1) / 2.0, (ny - 1) / 2.0) if pivot is None else pivot

    def sigma_at(px, py):
        px, py = np.asarray(px, float), np.asarray(py, float)
        radius = np.hypot(px - centre[0], py - centre[1]) * mas_per_px
        return np.hypot(factor * fit.sigma_mas(px, py), math.sqrt(2.0) * prior * radius)

    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 10), np.linspace(0, ny - 1, 10))
    sigma = sigma_at(gx.ravel(), gy.ravel())
    return {
        "wcs_sigma_mas": float(np.sqrt(np.mean(sigma**2))),
        "wcs_sigma_max_mas": float(sigma.max()),
        "sigma_at": sigma_at,
    }
