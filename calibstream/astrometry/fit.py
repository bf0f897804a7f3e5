"""Astrometric calibration: match sources to reference stars and fit a TAN-SIP WCS.

:func:`fit_astrometry` takes plain arrays: source centroids (0-based pixels)
with their errors and a brightness to rank them, reference positions already
moved to the exposure's epoch with their errors, and the exposure's own
first-guess WCS. It

1. projects everything onto the tangent plane about the first guess's chip
   centre and finds the first guess's error (shift, rotation, scale) by
   pattern matching the brightest sources and reference stars
   (:mod:`calibstream.astrometry.matcher`): no hint beyond the header is needed within
   ``max_offset_arcsec`` / ``max_rotation_deg`` / ``max_scale_error``;
2. fits TAN-SIP by weighted linear least squares (:mod:`calibstream.astrometry.sipfit`),
   rejects outliers beyond ``rejection_sigma`` robust sigmas of the
   normalised residuals, re-matches every source with the improved WCS at a
   shrinking radius and refits, ``iterations`` times.

The distortion: (ξ, η) are fitted as polynomials of order ``sip_order`` of
the pixel offsets from the chip centre (CD = the linear terms, SIP A/B = the
rest through CD⁻¹). When the first guess carries a SIP distortion (the
camera model) and ``first_guess_distortion`` is on, a second model is fitted
too: that distortion kept, with a fitted affine map (6 coefficients). It is
nested in the full one, and the full one replaces it only when an F-test
says it fits significantly better (p < ``MODEL_P_VALUE``), or always when
the matches are too few for the full order (``MATCHES_PER_TERM`` per
coefficient). On sparse chips this is what keeps the corners right; a first
guess whose distortion is wrong by ≳ 0.1 px at the corners is refitted.

Weights: σ² = (pixel scale)² (x_err² + y_err²)/2 + ref_err², i.e. an
isotropic per-axis error of the source centroid converted with the local
pixel scale, and the reference star's per-axis error, in quadrature.

ASTRMS (:attr:`AstrometryResult.rms_mas`) is the *total* (2-D) scatter of the
matches used in the final fit about it: ``sqrt(mean(Δα*² + Δδ²))`` with
``Δα* = Δα cos δ``, unweighted, in milliarcseconds (a per-axis figure is
this divided by √2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import special
from scipy.spatial import cKDTree

from calibstream.astrometry.matcher import (
    RAYLEIGH_MEDIAN,
    PatternSolution,
    match_pattern,
    unique_pairs,
)
from calibstream.astrometry.sipfit import (
    MAS_PER_DEG,
    TanSipFit,
    fit_tan_sip,
    gnomonic,
    inverse_gnomonic,
    n_terms,
    sip_distortion,
)
from calibstream.config import AstrometryConfig
from calibstream.errors import AstrometryError

#: Pattern matching: pairs shorter than this fraction of the chip's short side do not vote.
MIN_PAIR_FRACTION = 0.1
#: Shift-vote bin and verification radius, pixels (converted with the first guess's scale).
SHIFT_BIN_PX = 5.0
VERIFY_RADIUS_PX = 10.0
#: Reference stars used for the votes per bright source, per unit of searched area / chip area.
REF_PER_SOURCE = 2.0
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


@dataclass(frozen=True, eq=False)
class AstrometryResult:
    """The fitted WCS and the matches behind it.

    ``source_index`` / ``ref_index`` are the matched pairs used in the final
    fit (rows of the arrays given to :func:`fit_astrometry`), sorted by
    source; ``residual_*_mas`` are fit minus reference per pair (Δα cos δ,
    Δδ). ``used`` flags the sources in the final fit
    (``calib_astrometry_used``). The ``pattern_*`` fields describe the first
    guess's error that pattern matching found.
    """

    wcs: WCS  # TAN-SIP, CRPIX at the chip centre; 1-based as FITS, use origin=0 for 0-based
    source_index: np.ndarray
    ref_index: np.ndarray
    used: np.ndarray
    residual_ra_mas: np.ndarray
    residual_dec_mas: np.ndarray
    rms_mas: float  # ASTRMS: total (2-D) rms of the residuals, mas
    n_matches: int  # ASTNMATCH
    #: "fitted": the distortion is the polynomial of order ``fit_order`` fitted to
    #: the matches; "first guess": the first guess's SIP distortion kept, with
    #: a fitted affine map (``fit_order`` 1) — when the matches cannot support
    #: a full fit or do not improve on it significantly.
    distortion: str
    fit_order: int
    n_refs: int  # reference stars in the searched footprint
    pattern_shift_arcsec: tuple[float, float]  # first guess → truth at the chip centre (E, N)
    pattern_rotation_deg: float  # rotation of the first guess's frame onto the sky
    pattern_scale: float  # true / first-guess pixel scale
    pattern_votes: float  # rotation/scale votes of the winner ...
    pattern_vote_background: float  # ... against the expectation of random pairs
    pattern_matches: int  # verified matches of the pattern solution
    match_radius_arcsec: float  # radius of the last re-match

    @property
    def pattern_offset_arcsec(self) -> float:
        return math.hypot(*self.pattern_shift_arcsec)

    @property
    def rms_ra_mas(self) -> float:
        return float(np.sqrt(np.mean(self.residual_ra_mas**2)))

    @property
    def rms_dec_mas(self) -> float:
        return float(np.sqrt(np.mean(self.residual_dec_mas**2)))


def wcs_header(result: AstrometryResult) -> fits.Header:
    """The fitted WCS as FITS keywords (1-based, TAN-SIP with AP/BP), ASTRMS and ASTNMATCH.

    ASTRMS is the total (2-D) rms in mas of the final matches about the fit;
    ASTNMATCH (a HIERARCH card: nine characters) the number of those matches.
    """
    header = result.wcs.to_header(relax=True)
    header["ASTRMS"] = (float(result.rms_mas), "[mas] total rms of astrometric matches")
    # nine characters: a HIERARCH card, read back as header["ASTNMATCH"]
    header["HIERARCH ASTNMATCH"] = (int(result.n_matches), "astrometric matches used")
    return header


def fit_astrometry(
    x: np.ndarray,
    y: np.ndarray,
    x_err: np.ndarray,
    y_err: np.ndarray,
    brightness: np.ndarray,
    ref_ra: np.ndarray,
    ref_dec: np.ndarray,
    ref_err_mas: np.ndarray,
    initial_wcs: WCS,
    shape: tuple[int, int],
    config: AstrometryConfig,
    *,
    ref_brightness: np.ndarray | None = None,
) -> AstrometryResult:
    """Match sources to reference stars and fit a TAN-SIP WCS.

    ``x``, ``y``: 0-based centroids (pixels), ``x_err``, ``y_err`` their
    errors; ``brightness`` ranks the sources for pattern matching (e.g.
    psf_flux; NaN ranks last). ``ref_ra``, ``ref_dec`` (deg) at the
    exposure's epoch and ``ref_err_mas`` their per-axis errors at that epoch.
    ``initial_wcs``: the exposure's first guess; ``shape``: the numpy image
    shape (ny, nx). ``ref_brightness`` (larger is brighter, e.g. −mag) ranks
    the reference stars for pattern matching; without it the smallest
    ``ref_err_mas`` rank first (Gaia's errors grow with magnitude).

    Raises :class:`AstrometryError` when the footprint holds fewer than
    ``min_matches`` reference stars, when no pattern solution stands out of
    the random coincidences, or when the fit ends with fewer than
    ``min_matches`` matches or an rms above ``max_rms_mas``.
    """
    x, y, x_err, y_err, brightness = (
        np.asarray(a, float).ravel() for a in (x, y, x_err, y_err, brightness)
    )
    ref_ra, ref_dec, ref_err = (
        np.asarray(a, float).ravel() for a in (ref_ra, ref_dec, ref_err_mas)
    )
    n_src, n_ref = x.size, ref_ra.size
    if not (y.size == x_err.size == y_err.size == brightness.size == n_src):
        raise AstrometryError("source arrays differ in length", where="astrometry.sources")
    if not (ref_dec.size == ref_err.size == n_ref):
        raise AstrometryError("reference arrays differ in length", where="astrometry.refs")
    if ref_brightness is not None:
        ref_brightness = np.asarray(ref_brightness, float).ravel()
        if ref_brightness.size != n_ref:
            raise AstrometryError("ref_brightness differs in length", where="astrometry.refs")
    ny, nx = (int(s) for s in shape)
    cfg = config

    # ---- the first guess's tangent plane (arcsec) about its chip centre
    centre = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    ra_c, dec_c = (float(v) for v in initial_wcs.all_pix2world([centre], 0)[0])
    cd0 = np.asarray(initial_wcs.pixel_scale_matrix, float)
    pixel_scale = 3600.0 * math.sqrt(abs(np.linalg.det(cd0)))  # arcsec / px

    src_ok = np.isfinite(x) & np.isfinite(y)
    src_rows = np.flatnonzero(src_ok)
    if src_rows.size < cfg.min_matches:
        raise AstrometryError(
            f"only {src_rows.size} sources to match (need {cfg.min_matches})",
            where="astrometry.sources",
        )
    s_ra, s_dec = initial_wcs.all_pix2world(x[src_rows], y[src_rows], 0)
    src_xy = _tangent(s_ra, s_dec, ra_c, dec_c)
    src_sigma = _source_sigma(x_err[src_rows], y_err[src_rows], pixel_scale)

    # reference stars in the footprint searched: the chip, grown by the largest
    # displacement a first guess within the bounds can cause
    margin = cfg.max_offset_arcsec / pixel_scale + 0.5 * math.hypot(nx, ny) * (
        math.radians(cfg.max_rotation_deg) + cfg.max_scale_error
    )
    ref_ok = np.isfinite(ref_ra) & np.isfinite(ref_dec)
    ref_ok[ref_ok] = _angular_distance(ref_ra[ref_ok], ref_dec[ref_ok], ra_c, dec_c) < 45.0
    ref_rows = np.flatnonzero(ref_ok)
    ref_xy = _tangent(ref_ra[ref_rows], ref_dec[ref_rows], ra_c, dec_c)
    approx_px = (np.linalg.inv(cd0) @ (ref_xy.T / 3600.0)).T  # linear first guess, px from centre
    in_foot = (np.abs(approx_px[:, 0]) <= nx / 2.0 + margin) & (
        np.abs(approx_px[:, 1]) <= ny / 2.0 + margin
    )
    ref_rows, ref_xy = ref_rows[in_foot], ref_xy[in_foot]
    n_foot = ref_rows.size
    if n_foot < cfg.min_matches:
        raise AstrometryError(
            f"only {n_foot} reference stars within the footprint (chip + {margin:.0f} px) "
            f"about ({ra_c:.5f}, {dec_c:.5f}); need at least {cfg.min_matches}",
            where="astrometry.refs",
        )
    ref_sigma = np.where(
        np.isfinite(ref_err[ref_rows]) & (ref_err[ref_rows] >= 0),
        ref_err[ref_rows],
        np.nanmedian(ref_err[ref_rows]) if n_foot else 0.0,
    )
    ref_sigma = np.nan_to_num(ref_sigma, nan=10.0)

    # ---- pattern matching of the brightest
    area_chip = nx * ny * pixel_scale**2
    area_foot = (nx + 2 * margin) * (ny + 2 * margin) * pixel_scale**2
    rank_src = np.nan_to_num(brightness[src_rows], nan=-np.inf)
    bright_src = np.argsort(-rank_src, kind="stable")[: cfg.n_bright]
    if ref_brightness is not None:
        rank_ref = np.nan_to_num(ref_brightness[ref_rows], nan=-np.inf)
    else:
        rank_ref = -np.nan_to_num(ref_err[ref_rows], nan=np.inf)
    n_ref_bright = round(REF_PER_SOURCE * cfg.n_bright * area_foot / area_chip)
    bright_ref = np.argsort(-rank_ref, kind="stable")[:n_ref_bright]
    pattern = match_pattern(
        src_xy,
        ref_xy,
        bright_src,
        bright_ref,
        ref_density=n_foot / area_foot,
        max_offset=cfg.max_offset_arcsec,
        max_rotation_deg=cfg.max_rotation_deg,
        max_scale_error=cfg.max_scale_error,
        min_pair_length=MIN_PAIR_FRACTION * min(nx, ny) * pixel_scale,
        shift_bin=SHIFT_BIN_PX * pixel_scale,
        verify_radius=VERIFY_RADIUS_PX * pixel_scale,
        min_matches=cfg.min_matches,
    )

    # ---- TAN-SIP fits, rejection and re-matching
    base = sip_distortion(initial_wcs, cfg.sip_order) if cfg.first_guess_distortion else None
    crval = tuple(float(v) for v in inverse_gnomonic(*(pattern.shift / 3600.0), ra_c, dec_c))
    pair_src, pair_ref = pattern.source_index, pattern.ref_index
    radius = cfg.match_radius_arcsec
    xs, ys = x[src_rows], y[src_rows]
    rra, rdec = ref_ra[ref_rows], ref_dec[ref_rows]
    for iteration in range(max(cfg.iterations, 1)):
        fit, keep = _clipped_fit(
            xs[pair_src],
            ys[pair_src],
            rra[pair_ref],
            rdec[pair_ref],
            src_sigma[pair_src],
            ref_sigma[pair_ref],
            (ny, nx),
            crval,
            cfg,
            base,
        )
        crval = (float(fit.wcs.wcs.crval[0]), float(fit.wcs.wcs.crval[1]))
        if iteration == cfg.iterations - 1:
            break
        # re-match every source with the improved WCS
        ref_tree = cKDTree(_tangent(rra, rdec, *crval))
        fit_ra, fit_dec = fit.wcs.all_pix2world(xs, ys, 0)
        distance = np.hypot(fit.residual_xi_mas[keep], fit.residual_eta_mas[keep]) / 1000.0
        floor = max(RADIUS_PERCENTILE_FACTOR * np.percentile(distance, 90), RADIUS_FLOOR_ARCSEC)
        radius = min(
            cfg.match_radius_arcsec, max(cfg.match_radius_arcsec * RADIUS_SHRINK**iteration, floor)
        )
        dist, nearest = ref_tree.query(
            _tangent(fit_ra, fit_dec, *crval), distance_upper_bound=radius
        )
        pair_src, pair_ref = unique_pairs(dist, nearest)
        if pair_src.size < cfg.min_matches:
            raise AstrometryError(
                f"only {pair_src.size} sources within {radius:.2f} arcsec of a reference star "
                f"after fit {iteration + 1} (need {cfg.min_matches})",
                where="astrometry.fit",
            )

    final_src, final_ref = pair_src[keep], pair_ref[keep]
    fit_ra, fit_dec = fit.wcs.all_pix2world(xs[final_src], ys[final_src], 0)
    res_ra = _wrap180(fit_ra - rra[final_ref]) * np.cos(np.radians(rdec[final_ref])) * MAS_PER_DEG
    res_dec = (fit_dec - rdec[final_ref]) * MAS_PER_DEG
    n_matches = int(final_src.size)
    rms = float(np.sqrt(np.mean(res_ra**2 + res_dec**2))) if n_matches else math.inf
    if n_matches < cfg.min_matches:
        raise AstrometryError(
            f"only {n_matches} matches survive the fit (need {cfg.min_matches})",
            where="astrometry.fit",
        )
    if not rms <= cfg.max_rms_mas:
        raise AstrometryError(
            f"absurd fit: rms of {n_matches} matches is {rms:.1f} mas "
            f"(> max_rms_mas = {cfg.max_rms_mas:g})",
            where="astrometry.fit",
        )
    source_index = src_rows[final_src]
    used = np.zeros(n_src, dtype=bool)
    used[source_index] = True
    return AstrometryResult(
        wcs=fit.wcs,
        source_index=source_index,
        ref_index=ref_rows[final_ref],
        used=used,
        residual_ra_mas=res_ra,
        residual_dec_mas=res_dec,
        rms_mas=rms,
        n_matches=n_matches,
        distortion=fit.distortion,
        fit_order=fit.order,
        n_refs=n_foot,
        pattern_shift_arcsec=(float(pattern.shift[0]), float(pattern.shift[1])),
        pattern_rotation_deg=pattern.rotation_deg,
        pattern_scale=pattern.scale,
        pattern_votes=pattern.votes,
        pattern_vote_background=pattern.vote_background,
        pattern_matches=pattern.n_verified,
        match_radius_arcsec=radius,
    )


def _clipped_fit(
    x, y, ra, dec, src_sigma, ref_sigma, shape, crval, cfg: AstrometryConfig, base
) -> tuple[TanSipFit, np.ndarray]:
    """Fit, reject beyond ``rejection_sigma`` robust σ of the normalised residuals, refit.

    Rejected pairs may come back when a refit brings them in. Returns the last
    fit and the pairs it used.
    """
    sigma_mas = np.sqrt(src_sigma**2 + ref_sigma**2)
    weight = 1.0 / sigma_mas**2
    keep = np.ones(x.size, dtype=bool)
    fitted = keep
    for _ in range(8):
        fit = _select_fit(x, y, ra, dec, np.where(keep, weight, 0.0), shape, crval, cfg, base)
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


def _select_fit(x, y, ra, dec, weight, shape, crval, cfg: AstrometryConfig, base) -> TanSipFit:
    """The full polynomial fit, or the first guess's distortion with an affine correction.

    The full fit (order ``sip_order``) is kept when it is better than the
    first guess's distortion plus an affine map (a model nested in it) by an
    F-test at ``MODEL_P_VALUE``, or when there is no usable first-guess
    distortion. Too few pairs for the full order keep the first guess's
    distortion; without one the order is lowered.
    """
    n_pairs = int(np.count_nonzero(weight))
    order = _order_for(n_pairs, cfg)
    try:
        full = None
        if base is None or order == cfg.sip_order:
            full = fit_tan_sip(x, y, ra, dec, weight, shape, crval, order, cfg.sip_order)
        if base is None:
            return full
        based = fit_tan_sip(x, y, ra, dec, weight, shape, crval, 1, cfg.sip_order, base=base)
    except np.linalg.LinAlgError as exc:
        raise AstrometryError(f"degenerate fit ({exc})", where="astrometry.fit") from exc
    dof = 2 * n_pairs - (0 if full is None else full.n_parameters)
    if full is None or dof <= 0 or full.chi2 <= 0:
        return based
    extra = full.n_parameters - based.n_parameters
    f_ratio = max(based.chi2 - full.chi2, 0.0) / extra / (full.chi2 / dof)
    return full if special.fdtrc(extra, dof, f_ratio) < MODEL_P_VALUE else based


def _order_for(n_pairs: int, cfg: AstrometryConfig) -> int:
    """The fit order: ``sip_order`` unless too few pairs for its coefficients."""
    order = max(cfg.sip_order, 1)
    while order > 1 and MATCHES_PER_TERM * n_terms(order) > n_pairs:
        order -= 1
    if n_pairs < n_terms(order):
        raise AstrometryError(f"only {n_pairs} matches to fit", where="astrometry.fit")
    return order


def _source_sigma(x_err, y_err, pixel_scale):
    """Per-axis centroid error in mas (isotropic); non-finite errors take the median."""
    var = 0.5 * (np.square(x_err) + np.square(y_err))
    bad = ~np.isfinite(var) | (var <= 0)
    if bad.all():
        var = np.full(var.shape, 0.01)  # 0.1 px: no error given at all
    elif bad.any():
        var = np.where(bad, np.median(var[~bad]), var)
    return np.sqrt(var) * pixel_scale * 1000.0


def _tangent(ra, dec, ra0, dec0) -> np.ndarray:
    xi, eta = gnomonic(ra, dec, ra0, dec0)
    return np.column_stack([xi, eta]) * 3600.0


def _angular_distance(ra, dec, ra0, dec0):
    ra, dec = np.radians(ra), np.radians(dec)
    d0 = math.radians(dec0)
    cos_c = math.sin(d0) * np.sin(dec) + math.cos(d0) * np.cos(dec) * np.cos(ra - math.radians(ra0))
    return np.degrees(np.arccos(np.clip(cos_c, -1.0, 1.0)))


def _wrap180(angle):
    return (angle + 180.0) % 360.0 - 180.0


__all__ = [
    "AstrometryResult",
    "PatternSolution",
    "fit_astrometry",
    "wcs_header",
]
