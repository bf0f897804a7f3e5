"""Astrometric calibration: match sources to reference stars and fit a TAN-SIP WCS.

:func:`fit_astrometry` takes plain arrays: source centroids (0-based pixels)
with their errors and a brightness to rank them, reference positions already
moved to the exposure's epoch with their errors, and the exposure's own
first-guess WCS. It

1. projects everything onto the tangent plane about the first guess's chip
   centre and finds the first guess's error (shift, rotation, scale)
   (:mod:`calibstream.astrometry.first_pairs`): by direct matching of the
   brightest sources and reference stars when the first guess is trusted and
   the shift verifies, else by pattern matching them
   (:mod:`calibstream.astrometry.matcher`): no hint beyond the header is needed within
   ``max_offset_arcsec`` / ``max_rotation_deg`` / ``max_scale_error``;
2. fits TAN-SIP by weighted linear least squares (:mod:`calibstream.astrometry.sipfit`),
   rejects outliers beyond ``rejection_sigma`` robust sigmas of the
   normalised residuals, re-matches every source with the improved WCS at a
   shrinking radius and refits, ``iterations`` times
   (:mod:`calibstream.astrometry.refine`).

The tangent plane, the sources' and reference stars' errors and the
footprint searched are :mod:`calibstream.astrometry.tangent`'s.

The distortion: (ξ, η) are fitted as polynomials of order ``sip_order`` of
the pixel offsets from the chip centre (CD = the linear terms, SIP A/B = the
rest through CD⁻¹). When the first guess carries a SIP distortion (the
camera model) and ``first_guess_distortion`` is on, a second model is fitted
too: that distortion kept, with a fitted affine map (6 coefficients). It is
nested in the full one, and the full one replaces it only when an F-test
says it fits significantly better (p < ``refine.MODEL_P_VALUE``), or always
when the matches are too few for the full order (``refine.MATCHES_PER_TERM``
per coefficient). On sparse chips this is what keeps the corners right; a first
guess whose distortion is wrong by ≳ 0.1 px at the corners is refitted.

Weights: σ² = (pixel scale)² (x_err² + y_err²)/2 + ref_err², i.e. an
isotropic per-axis error of the source centroid converted with the local
pixel scale, and the reference star's per-axis error, in quadrature.

ASTRMS (:attr:`AstrometryResult.rms_mas`) is the scatter a new source would
see: the *total* (2-D) rms of the leave-one-out residuals of the matches used
in the final fit (each pair's residual from the fit made without it, exact
for the linear fit): ``sqrt(mean(Δα*² + Δδ²))`` with ``Δα* = Δα cos δ``,
unweighted, in milliarcseconds (a per-axis figure is this divided by √2).
With no degrees of freedom (one star, a shift) it is undefined: NaN.
``residual_*_mas`` stay the in-sample residuals.

ASTERR (:attr:`AstrometryResult.wcs_sigma_mas`) is the fitted WCS's own
uncertainty: the rms over the chip of the total (2-D) 1σ of the fitted
position, from the parameters' covariance scaled by max(χ²/dof, 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from calibstream.astrometry.first_pairs import first_pairs
from calibstream.astrometry.matcher import PatternSolution
from calibstream.astrometry.models import held_out_rms, uncertainty
from calibstream.astrometry.refine import MatchInputs, Refined, refine
from calibstream.astrometry.sipfit import MAS_PER_DEG, inverse_gnomonic, sip_distortion
from calibstream.astrometry.tangent import (
    project_references,
    project_sources,
    search_margin,
    tangent_frame,
)
from calibstream.config import AstrometryConfig
from calibstream.errors import AstrometryError


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
    model: str = "affine"  # ASTMODEL: the rung fitted (shift, similarity, affine, sip<k>)
    dof: int = 0  # ASTDOF: 2 × matches - parameters
    wcs_sigma_mas: float = math.nan  # ASTERR: rms over the chip of the fit's 2-D 1σ, mas
    wcs_sigma_max_mas: float = math.nan  # its largest value on the chip
    #: (x, y) 0-based pixels → the fit's total (2-D) 1σ there, mas (None: unknown).
    sigma_at: object = None
    matching: str = "pattern"  # how the first pairs were found: "pattern" or "direct"

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

    ASTRMS is the total (2-D) leave-one-out rms in mas of the final matches
    (undefined, a card without a value, when there is no freedom);
    ASTNMATCH (a HIERARCH card: nine characters) the number of those matches;
    then :func:`model_cards`.
    """
    header = result.wcs.to_header(relax=True)
    rms = float(result.rms_mas)
    header["ASTRMS"] = (rms if math.isfinite(rms) else None, "[mas] held-out rms of matches")
    # nine characters: a HIERARCH card, read back as header["ASTNMATCH"]
    header["HIERARCH ASTNMATCH"] = (int(result.n_matches), "astrometric matches used")
    for key, value, comment in model_cards(result):
        header[key] = (value, comment)
    return header


def fitted_header(result: AstrometryResult) -> fits.Header:
    """The fitted WCS as FITS keywords with :func:`model_cards` (what the calexp carries)."""
    header = result.wcs.to_header(relax=True)
    for key, value, comment in model_cards(result):
        header[key] = (value, comment)
    return header


def model_cards(result: AstrometryResult) -> list[tuple[str, object, str]]:
    """ASTMODEL (the rung), ASTDOF (degrees of freedom), ASTERR / ASTERRMX (the fit's own
    2-D 1σ, rms and largest over the chip, mas; None when undefined)."""

    def finite(value):
        return float(value) if math.isfinite(value) else None

    return [
        ("ASTMODEL", str(result.model), "astrometric model fitted"),
        ("ASTDOF", int(result.dof), "astrometric fit degrees of freedom"),
        ("ASTERR", finite(result.wcs_sigma_mas), "[mas] rms over chip of WCS 1-sigma"),
        ("ASTERRMX", finite(result.wcs_sigma_max_mas), "[mas] max over chip of WCS 1-sigma"),
    ]


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
    n_brighter: int = 0,
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
    ``n_brighter``: sources on the chip brighter than any given (saturated, left
    out upstream); pattern matching skips as many of the brightest reference
    stars, or on a crowded chip the two brightest lists would not overlap.

    The first pairs: :mod:`calibstream.astrometry.first_pairs` (direct
    matching under ``first_guess_error_arcsec``, verified on rich chips, else
    pattern matching). Raises :class:`AstrometryError`
    when there is no source or reference star, when neither finds pairs, or
    when the fit's rms exceeds ``max_rms_mas``.
    """
    x, y, x_err, y_err, brightness = _vectors(x, y, x_err, y_err, brightness)
    ref_ra, ref_dec, ref_err = _vectors(ref_ra, ref_dec, ref_err_mas)
    _check_lengths((x, y, x_err, y_err, brightness), (ref_ra, ref_dec, ref_err))
    ref_brightness = _reference_brightness(ref_brightness, ref_ra.size)
    cfg = config
    frame = tangent_frame(initial_wcs, shape)
    src = project_sources(x, y, x_err, y_err, initial_wcs, frame, 1)
    margin = search_margin(frame, cfg)
    ref = project_references(ref_ra, ref_dec, ref_err, frame, margin, 1)
    ref_rank = _reference_rank(ref_brightness, ref_err, ref.rows)
    ranks = (brightness[src.rows], ref_rank, n_brighter)
    pattern = first_pairs(src, ref, ranks, frame, margin, cfg)
    base = sip_distortion(initial_wcs, cfg.sip_order) if cfg.first_guess_distortion else None
    shift_deg = pattern.shift / 3600.0
    crval = tuple(float(v) for v in inverse_gnomonic(*shift_deg, frame.ra, frame.dec))
    points = MatchInputs(
        x[src.rows], y[src.rows], src.sigma_mas, ref_ra[ref.rows], ref_dec[ref.rows], ref.sigma_mas
    )
    pairs = (pattern.source_index, pattern.ref_index)
    refined = refine(points, pairs, crval, (frame.ny, frame.nx), cfg, base, frame.cd)
    return _result(refined, points, src.rows, ref.rows, x.size, pattern, cfg)


def _vectors(*arrays) -> tuple[np.ndarray, ...]:
    """Each argument as a flat float64 array (the fit's only input form)."""
    return tuple(np.asarray(a, float).ravel() for a in arrays)


def _check_lengths(sources: tuple[np.ndarray, ...], refs: tuple[np.ndarray, ...]) -> None:
    """Per-source and per-reference arrays must each share one length."""
    if any(a.size != sources[0].size for a in sources[1:]):
        raise AstrometryError("source arrays differ in length", where="astrometry.sources")
    if any(a.size != refs[0].size for a in refs[1:]):
        raise AstrometryError("reference arrays differ in length", where="astrometry.refs")


def _reference_brightness(ref_brightness, n_ref: int) -> np.ndarray | None:
    """``ref_brightness`` as a flat float array of one value per reference star, or None."""
    if ref_brightness is None:
        return None
    ref_brightness = np.asarray(ref_brightness, float).ravel()
    if ref_brightness.size != n_ref:
        raise AstrometryError("ref_brightness differs in length", where="astrometry.refs")
    return ref_brightness


def _reference_rank(ref_brightness, ref_err: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Larger ranks brighter: the given brightness, else the smaller error (NaN last)."""
    if ref_brightness is not None:
        return np.nan_to_num(ref_brightness[rows], nan=-np.inf)
    return -np.nan_to_num(ref_err[rows], nan=np.inf)


def _result(
    refined: Refined,
    points: MatchInputs,
    src_rows: np.ndarray,
    ref_rows: np.ndarray,
    n_src: int,
    pattern: PatternSolution,
    cfg: AstrometryConfig,
) -> AstrometryResult:
    """The final fit's residuals, checked, with indices into the caller's arrays."""
    final_src, final_ref = refined.source_index, refined.ref_index
    fit = refined.fit
    pairs = points.paired(final_src, final_ref)
    res_ra, res_dec = _residuals_mas(fit.wcs, pairs)
    n_matches = int(final_src.size)
    rms = held_out_rms(refined.loo_mas, fit.dof)
    _check_final(n_matches, float(np.sqrt(np.mean(res_ra**2 + res_dec**2))), cfg)
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
        n_refs=ref_rows.size,
        pattern_shift_arcsec=(float(pattern.shift[0]), float(pattern.shift[1])),
        pattern_rotation_deg=pattern.rotation_deg,
        pattern_scale=pattern.scale,
        pattern_votes=pattern.votes,
        pattern_vote_background=pattern.vote_background,
        pattern_matches=pattern.n_verified,
        match_radius_arcsec=refined.match_radius_arcsec,
        model=fit.model,
        dof=fit.dof,
        **uncertainty(fit, cfg.first_guess_rotation_deg, (np.mean(pairs.x), np.mean(pairs.y))),
        matching=pattern.method,
    )


def _residuals_mas(wcs: WCS, pairs: MatchInputs) -> tuple[np.ndarray, np.ndarray]:
    """Fit minus reference per pair, mas: (Δα cos δ, Δδ)."""
    fit_ra, fit_dec = wcs.all_pix2world(pairs.x, pairs.y, 0)
    res_ra = _wrap180(fit_ra - pairs.ra) * np.cos(np.radians(pairs.dec)) * MAS_PER_DEG
    res_dec = (fit_dec - pairs.dec) * MAS_PER_DEG
    return res_ra, res_dec


def _check_final(n_matches: int, rms: float, cfg: AstrometryConfig) -> None:
    """No match, or an in-sample rms above ``max_rms_mas``, fail the fit."""
    if n_matches < 1:
        raise AstrometryError("no match survives the fit", where="astrometry.fit")
    if not rms <= cfg.max_rms_mas:
        raise AstrometryError(
            f"absurd fit: rms of {n_matches} matches is {rms:.1f} mas "
            f"(> max_rms_mas = {cfg.max_rms_mas:g})",
            where="astrometry.fit",
        )


def _wrap180(angle):
    """Angle differences in degrees folded into [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


__all__ = [
    "AstrometryResult",
    "PatternSolution",
    "fit_astrometry",
    "fitted_header",
    "model_cards",
    "wcs_header",
]
