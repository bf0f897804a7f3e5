"""TAN-SIP fits of matched pairs: outlier rejection, model choice and re-matching.

Starting from the pattern solution's pairs, :func:`refine` fits TAN-SIP
(:func:`clipped_fit`: reject beyond ``rejection_sigma`` robust sigmas, refit),
re-matches every source with the improved WCS at a shrinking radius and fits
again, ``iterations`` times. :func:`select_fit` climbs the ladder of models
(:mod:`calibstream.astrometry.models`) as far as the matches' number and
their coverage of the chip allow, and chooses between the full polynomial and
the first guess's distortion with an affine map by an F-test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.spatial import cKDTree

from calibstream.astrometry.matcher import RAYLEIGH_MEDIAN, unique_pairs
from calibstream.astrometry.models import Model, covers
from calibstream.astrometry.sipfit import Distortion, TanSipFit, fit_tan_sip, n_terms
from calibstream.astrometry.tangent import tangent
from calibstream.config import AstrometryConfig
from calibstream.errors import AstrometryError

#: At least this many matches per fitted coefficient (per axis) before the order is lowered.
MATCHES_PER_TERM = 3
#: Re-matching radius shrinks by this factor each iteration ...
RADIUS_SHRINK = 0.6
#: ... but stays above this many times the 90th percentile of the match distances,
#: and above this floor (arcsec).
RADIUS_PERCENTILE_FACTOR = 3.0
RADIUS_FLOOR_ARCSEC = 0.1
#: The full polynomial replaces the first guess's distortion (+ affine) below this p-value.
MODEL_P_VALUE = 0.01
#: Rejection rounds of one clipped fit.
CLIP_ROUNDS = 8
#: Matches each rung below the polynomials needs: 2 (shift), 4 (similarity) and
#: 6 (affine) parameters leave 2n - p ≥ 0, 2 and 6 degrees of freedom.
RUNG_MATCHES = (("affine", 6), ("similarity", 3), ("shift", 1))


@dataclass(frozen=True, eq=False)
class MatchInputs:
    """What the fits pair: source pixels and reference positions, with per-axis errors (mas)."""

    x: np.ndarray  # 0-based pixels
    y: np.ndarray
    src_sigma: np.ndarray
    ra: np.ndarray  # deg, at the exposure's epoch
    dec: np.ndarray
    ref_sigma: np.ndarray

    def paired(self, src: np.ndarray, ref: np.ndarray) -> MatchInputs:
        """The rows of matched pairs: sources ``src`` with reference stars ``ref``."""
        return MatchInputs(
            self.x[src],
            self.y[src],
            self.src_sigma[src],
            self.ra[ref],
            self.dec[ref],
            self.ref_sigma[ref],
        )


@dataclass(frozen=True, eq=False)
class Refined:
    """The last fit, the pairs it used (rows of :class:`MatchInputs`) and the last radius."""

    fit: TanSipFit
    source_index: np.ndarray
    ref_index: np.ndarray
    match_radius_arcsec: float
    loo_mas: np.ndarray  # (n, 2) leave-one-out residuals (ξ, η) of those pairs, mas


def refine(
    points: MatchInputs,
    pairs: tuple[np.ndarray, np.ndarray],
    crval: tuple[float, float],
    shape: tuple[int, int],
    cfg: AstrometryConfig,
    base: Distortion | None,
    first_cd: np.ndarray,
) -> Refined:
    """Fit, re-match with the improved WCS at a shrinking radius, refit, ``iterations`` times.

    ``first_cd``: the first guess's CD matrix (deg/px), kept by the shift and
    similarity rungs.
    """
    pair_src, pair_ref = pairs
    radius = cfg.match_radius_arcsec
    models = (base, np.asarray(first_cd, float).T)
    for iteration in range(max(cfg.iterations, 1)):
        fit, keep = clipped_fit(points.paired(pair_src, pair_ref), shape, crval, cfg, models)
        crval = (float(fit.wcs.wcs.crval[0]), float(fit.wcs.wcs.crval[1]))
        if iteration == cfg.iterations - 1:
            break
        radius = rematch_radius(fit, keep, iteration, cfg)
        pair_src, pair_ref = rematch(fit, points, crval, radius)
        if pair_src.size == 0:
            raise AstrometryError(
                f"no source within {radius:.2f} arcsec of a reference star "
                f"after fit {iteration + 1}",
                where="astrometry.fit",
            )
    loo = np.column_stack([fit.loo_xi_mas[keep], fit.loo_eta_mas[keep]])
    return Refined(fit, pair_src[keep], pair_ref[keep], radius, loo)


def rematch_radius(
    fit: TanSipFit, keep: np.ndarray, iteration: int, cfg: AstrometryConfig
) -> float:
    """The next re-match radius (arcsec): shrinking, but not below the kept pairs' spread."""
    distance = np.hypot(fit.residual_xi_mas[keep], fit.residual_eta_mas[keep]) / 1000.0
    floor = max(RADIUS_PERCENTILE_FACTOR * np.percentile(distance, 90), RADIUS_FLOOR_ARCSEC)
    return min(
        cfg.match_radius_arcsec, max(cfg.match_radius_arcsec * RADIUS_SHRINK**iteration, floor)
    )


def rematch(
    fit: TanSipFit, points: MatchInputs, crval: tuple[float, float], radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Every source's nearest reference star within ``radius`` arcsec through ``fit``."""
    ref_tree = cKDTree(tangent(points.ra, points.dec, *crval))
    fit_ra, fit_dec = fit.wcs.all_pix2world(points.x, points.y, 0)
    dist, nearest = ref_tree.query(tangent(fit_ra, fit_dec, *crval), distance_upper_bound=radius)
    return unique_pairs(dist, nearest)


def clipped_fit(
    pairs: MatchInputs, shape, crval, cfg: AstrometryConfig, models
) -> tuple[TanSipFit, np.ndarray]:
    """Fit, reject beyond ``rejection_sigma`` robust σ of the normalised residuals, refit.

    Rejected pairs may come back when a refit brings them in. Returns the last
    fit and the pairs it used.
    """
    sigma_mas = np.sqrt(pairs.src_sigma**2 + pairs.ref_sigma**2)
    weight = 1.0 / sigma_mas**2
    keep = np.ones(pairs.x.size, dtype=bool)
    fitted = keep
    for _ in range(CLIP_ROUNDS):
        fit = select_fit(pairs, np.where(keep, weight, 0.0), shape, crval, cfg, models)
        normalised = np.hypot(fit.residual_xi_mas, fit.residual_eta_mas) / sigma_mas
        robust = np.median(normalised[keep]) / RAYLEIGH_MEDIAN
        new_keep = normalised <= cfg.rejection_sigma * robust
        if np.array_equal(new_keep, keep) or new_keep.sum() < cfg.min_matches:
            break
        crval = (float(fit.wcs.wcs.crval[0]), float(fit.wcs.wcs.crval[1]))
        keep, fitted = new_keep, keep
    else:
        keep = fitted  # the pairs of the last fit
    return fit, keep


def select_fit(
    pairs: MatchInputs, weight, shape, crval, cfg: AstrometryConfig, models
) -> TanSipFit:
    """The richest rung of the ladder the weighted pairs support (:func:`richest_rung`).

    ``models``: (the first guess's distortion or None, its CD transposed). The
    shift and similarity rungs keep the first guess's distortion and linear
    map; the affine rung keeps its distortion. A polynomial of order
    ``sip_order`` is fitted in full and kept when it is better than the first
    guess's distortion plus an affine map (a model nested in it) by an F-test
    at ``MODEL_P_VALUE``, or when there is no usable first-guess distortion.
    """
    base, first = models
    x, y, ra, dec = pairs.x, pairs.y, pairs.ra, pairs.dec
    used = np.asarray(weight) > 0
    rung = richest_rung(int(used.sum()), x[used], y[used], shape, cfg)

    def fit(order, distortion, model=None):
        args = (x, y, ra, dec, weight, shape, crval, order, cfg.sip_order)
        return fit_tan_sip(*args, base=distortion, model=model)

    try:
        if rung.kind != "poly":
            return fit(1, base, Model(rung.kind, 1, first))
        if base is None:
            return fit(rung.order, None)
        based = fit(1, base)
        if rung.order < cfg.sip_order:
            return based
        full = fit(rung.order, None)
    except np.linalg.LinAlgError as exc:
        raise AstrometryError(f"degenerate fit ({exc})", where="astrometry.fit") from exc
    if full.dof <= 0 or full.chi2 <= 0:
        return based
    extra = full.n_parameters - based.n_parameters
    f_ratio = max(based.chi2 - full.chi2, 0.0) / extra / (full.chi2 / full.dof)
    return full if special.fdtrc(extra, full.dof, f_ratio) < MODEL_P_VALUE else based


def richest_rung(n_pairs: int, x, y, shape, cfg: AstrometryConfig) -> Model:
    """The richest model ``n_pairs`` matches at (x, y) support.

    A polynomial of order k ≥ 2 needs ``MATCHES_PER_TERM`` matches per
    coefficient and a match in every cell of a k × k grid over the chip (no
    order-2 fit with an empty quadrant, no cubic with an empty ninth); below
    that the affine, similarity and shift rungs need 6, 3 and 1 matches.
    """
    order = max(cfg.sip_order, 1)
    while order > 1 and (
        MATCHES_PER_TERM * n_terms(order) > n_pairs or not covers(x, y, shape, order)
    ):
        order -= 1
    if order > 1:
        return Model("poly", order)
    for name, need in RUNG_MATCHES:
        if n_pairs >= need:
            return Model("poly", 1) if name == "affine" else Model(name)
    raise AstrometryError("no matches to fit", where="astrometry.fit")
