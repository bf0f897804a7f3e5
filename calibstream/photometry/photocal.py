"""Photometric calibration: the zero-point MAGZERO from stars matched to a reference catalog.

Pure functions over matched arrays (no WCS, no matching here): the caller
gives, per matched source, the aperture-corrected PSF flux in electrons and
the reference magnitudes of the colour term's two bands.

* The reference magnitude in the instrument's band is
  ``m = p + c0 + c1 (p - s) + c2 (p - s)²`` (contract: reference-catalog.md),
  its error propagated from both bands (independent errors assumed).
* Each star gives ``ZP_i = m_i + 2.5 log10(psf_flux_i / EXPTIME)`` with
  ``σ_i² = (1.0857 σ_flux/flux)² + σ_m²``.
* A deterministic fraction of the stars is reserved (seeded by the exposure
  id), never fitted, and reported as a check of the fit.
* The rest are fitted by an inverse-variance weighted mean with weights
  ``1 / (σ_i² + σ_int²)``, where the extra scatter ``σ_int`` is solved so that
  χ²/dof = 1 (Paule–Mandel; 0 when the stated errors already explain the
  scatter), and iterative clipping of normalised residuals at ``clip_sigma``
  robust (MAD) sigmas. ``MAGZERO_ERR = 1 / sqrt(Σ w)``, so it grows with any
  scatter the stated errors do not explain.

Sign of everything: ``mag = MAGZERO - 2.5 log10(psf_flux / EXPTIME)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.spatial import cKDTree

from calibstream.config import ColorTerm, PhotometryConfig
from calibstream.errors import PhotometryError

#: mag per unit relative flux error: 2.5 / ln 10.
MAG_PER_RELATIVE_FLUX = 2.5 / math.log(10.0)
#: Mixed into the reserve seed, so the photometric reserve is not the same
#: draw as any other np.random.default_rng(exposure_id) in the pipeline.
RESERVE_SALT = 0x70686F74  # "phot"
#: MAD to Gaussian sigma.
MAD_TO_SIGMA = 1.482602218505602


@dataclass(frozen=True, eq=False)
class PhotoCalResult:
    """The zero-point of one exposure; per-row arrays follow the rows given to the fit."""

    magzero: float  # MAGZERO: mag of 1 e-/s of aperture-corrected PSF flux
    magzero_err: float  # MAGZERO_ERR: 1/sqrt(Σ w), w = 1/(σ_i² + σ_int²)
    magzero_rms: float  # MAGZERO_RMS: unweighted rms of the used stars' ZP_i about MAGZERO
    nobj: int  # MAGZERO_NOBJ: stars used
    colorterm: tuple[float, float, float]  # COLORTERM1..3: (c0, c1, c2) applied
    used: np.ndarray  # bool per row: calib_photometry_used
    reserved: np.ndarray  # bool per row: calib_photometry_reserved (never used)
    reserved_rms: float  # rms of the reserved stars' ZP_i - MAGZERO (NaN if none)
    reserved_mean_offset: float  # mean of the reserved stars' ZP_i - MAGZERO (NaN if none)
    sigma_int: float  # extra per-star scatter (mag) beyond the stated errors
    colour_mean: float  # weighted mean colour (primary - secondary) of the used stars
    zeropoints: np.ndarray  # ZP_i per row (NaN where it cannot be formed)
    zeropoint_errs: np.ndarray  # stated σ_i per row, without σ_int
    iterations: int  # clipping iterations run

    @property
    def nreserved(self) -> int:
        return int(self.reserved.sum())


# ---------------------------------------------------------------- reference magnitudes


def reference_magnitudes(
    colorterm: ColorTerm,
    primary: np.ndarray,
    primary_err: np.ndarray,
    secondary: np.ndarray,
    secondary_err: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference magnitudes in the instrument band, their errors, and the colours p - s."""
    c0, c1, c2 = colorterm.coefficients
    colour = primary - secondary
    mag = primary + c0 + c1 * colour + c2 * colour**2
    slope = c1 + 2.0 * c2 * colour  # dm/d(colour)
    err = np.hypot((1.0 + slope) * primary_err, slope * secondary_err)
    return mag, err, colour


# ---------------------------------------------------------------- star selection


def select_calibration_stars(
    catalog: Mapping[str, np.ndarray], psf_fwhm: float, config: PhotometryConfig
) -> np.ndarray:
    """Clean, unresolved, isolated, unsaturated sources with S/N >= ``min_snr`` (bool per row).

    * none of ``config.reject_flags`` (saturated, edge, bad, CR, deblended, ...);
    * finite, positive ``psf_flux`` and ``psf_flux_err``, S/N >= ``min_snr``;
    * unresolved: ``extendedness_flux`` (an aperture flux, aperture-corrected
      when ``<name>_apcorr`` exists) over ``psf_flux`` not significantly above
      a point source's ratio (see :class:`PhotometryConfig`);
    * isolated: no other detection within ``isolation_fwhm × psf_fwhm``.

    A missing column is a :class:`PhotometryError` naming it.
    """
    flux = _column(catalog, "psf_flux", float)
    n = flux.size
    err = _column(catalog, "psf_flux_err", float, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        good = np.isfinite(flux) & np.isfinite(err) & (flux > 0) & (err > 0)
        good &= flux >= config.min_snr * err
    for name in config.reject_flags:
        good &= ~_column(catalog, name, bool, n)
    if config.extendedness_flux:
        good &= ~_resolved(catalog, flux, err, config)
    if config.isolation_fwhm > 0 and n > 1:
        if not (np.isfinite(psf_fwhm) and psf_fwhm > 0):
            raise PhotometryError(f"PSF FWHM must be positive, got {psf_fwhm!r}", where="FWHM")
        x = _column(catalog, "x", float, n)
        y = _column(catalog, "y", float, n)
        xy = np.column_stack([x, y])
        finite = np.all(np.isfinite(xy), axis=1)
        distance, _ = cKDTree(xy[finite]).query(xy[finite], k=2)
        crowded = np.ones(n, dtype=bool)
        crowded[finite] = distance[:, 1] < config.isolation_fwhm * psf_fwhm
        good &= ~crowded
    return good


def _resolved(
    catalog: Mapping[str, np.ndarray], psf: np.ndarray, psf_err: np.ndarray, config
) -> np.ndarray:
    """Sources whose aperture flux exceeds a point source's, by a fraction and significantly."""
    name = config.extendedness_flux
    n = psf.size
    ap = _column(catalog, name, float, n)
    ap_err = _column(catalog, name + "_err", float, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = ap / psf
        if name + "_apcorr" in catalog:
            expected = 1.0  # both fluxes are total fluxes
        else:
            psf_stars = _column(catalog, "calib_psf_used", bool, n) & np.isfinite(ratio)
            if psf_stars.sum() < 5:
                raise PhotometryError(
                    f"{name} has no aperture correction and only {int(psf_stars.sum())} "
                    "calib_psf_used stars to calibrate its point-source ratio",
                    where=name,
                )
            expected = float(np.median(ratio[psf_stars]))
        excess = ratio / expected - 1.0
        sigma = np.hypot(ap_err, ratio * psf_err) / (expected * psf)
        resolved = (excess > config.max_extendedness) & (
            excess > config.extendedness_nsigma * sigma
        )
    return resolved | ~np.isfinite(ratio)


def _column(catalog: Mapping[str, np.ndarray], name: str, dtype, n: int | None = None):
    if name not in catalog:
        raise PhotometryError("column missing from the source catalog", where=name)
    value = np.asarray(catalog[name], dtype=dtype)
    if value.ndim != 1 or (n is not None and value.size != n):
        raise PhotometryError(f"expected {n} values, got shape {value.shape}", where=name)
    return value


# ---------------------------------------------------------------- the fit


def fit_zeropoint(
    psf_flux: np.ndarray,
    psf_flux_err: np.ndarray,
    exptime: float,
    ref_primary_mag: np.ndarray,
    ref_primary_err: np.ndarray,
    ref_secondary_mag: np.ndarray,
    ref_secondary_err: np.ndarray,
    colorterm: ColorTerm,
    candidate: np.ndarray,
    exposure_id: int,
    config: PhotometryConfig | None = None,
) -> PhotoCalResult:
    """MAGZERO of one exposure from matched stars (one row per source–reference pair).

    Rows fit for the fit (``eligible``): ``candidate``, every input finite,
    positive flux and errors, S/N >= ``min_snr``, colour-term-corrected
    reference error <= ``max_mag_err``. Of those, ``reserve_fraction`` (rounded
    down, never leaving fewer than ``min_stars``) are reserved by a draw
    seeded by ``exposure_id``; the same inputs always reserve the same rows.
    Raises :class:`PhotometryError` when fewer than ``min_stars`` remain.
    """
    config = config or PhotometryConfig()
    flux = _vector(psf_flux, "psf_flux")
    n = flux.size
    flux_err = _vector(psf_flux_err, "psf_flux_err", n)
    primary = _vector(ref_primary_mag, f"{colorterm.primary}_mag", n)
    primary_err = _vector(ref_primary_err, f"{colorterm.primary}_mag_err", n)
    secondary = _vector(ref_secondary_mag, f"{colorterm.secondary}_mag", n)
    secondary_err = _vector(ref_secondary_err, f"{colorterm.secondary}_mag_err", n)
    candidate = _vector(candidate, "candidate", n, dtype=bool)
    exptime = float(exptime)
    if not (math.isfinite(exptime) and exptime > 0):
        raise PhotometryError(f"EXPTIME must be positive, got {exptime!r}", where="EXPTIME")

    ref_mag, ref_err, colour = reference_magnitudes(
        colorterm, primary, primary_err, secondary, secondary_err
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        zeropoints = ref_mag + 2.5 * np.log10(flux / exptime)
        inst_err = MAG_PER_RELATIVE_FLUX * flux_err / flux
        sigma = np.hypot(inst_err, ref_err)
        valid = (
            np.isfinite(zeropoints)
            & np.isfinite(sigma)
            & (flux > 0)
            & (flux_err > 0)
            & (sigma > 0)
            & (primary_err >= 0)
            & (secondary_err >= 0)
        )
        bright = flux >= config.min_snr * flux_err
        precise = ref_err <= config.max_mag_err
    eligible = candidate & valid & bright & precise

    reserved = reserve_stars(eligible, exposure_id, config.reserve_fraction, config.min_stars)
    fit_rows = np.flatnonzero(eligible & ~reserved)
    if fit_rows.size < config.min_stars:
        raise PhotometryError(
            f"{fit_rows.size} calibration stars, need {config.min_stars}: of {n} matched "
            f"sources {int(candidate.sum())} are candidates, {int((candidate & valid).sum())} "
            f"with valid fluxes and reference magnitudes, "
            f"{int((candidate & valid & bright).sum())} with S/N >= {config.min_snr:g}, "
            f"{int(eligible.sum())} with reference error <= {config.max_mag_err:g} mag",
            where="photometry",
        )

    keep, iterations = _clip(zeropoints[fit_rows], sigma[fit_rows], config)
    rows = fit_rows[keep]
    if rows.size < config.min_stars:
        raise PhotometryError(
            f"{rows.size} calibration stars left after sigma clipping of {fit_rows.size}, "
            f"need {config.min_stars}",
            where="photometry",
        )
    magzero, magzero_err, sigma_int, weights = _weighted_fit(zeropoints[rows], sigma[rows])
    used = np.zeros(n, dtype=bool)
    used[rows] = True
    offsets = zeropoints[reserved] - magzero
    return PhotoCalResult(
        magzero=magzero,
        magzero_err=magzero_err,
        magzero_rms=float(np.sqrt(np.mean((zeropoints[rows] - magzero) ** 2))),
        nobj=int(rows.size),
        colorterm=colorterm.coefficients,
        used=used,
        reserved=reserved,
        reserved_rms=float(np.sqrt(np.mean(offsets**2))) if offsets.size else math.nan,
        reserved_mean_offset=float(np.mean(offsets)) if offsets.size else math.nan,
        sigma_int=sigma_int,
        colour_mean=float(np.sum(weights * colour[rows]) / np.sum(weights)),
        zeropoints=np.where(valid, zeropoints, np.nan),
        zeropoint_errs=np.where(valid, sigma, np.nan),
        iterations=iterations,
    )


def reserve_stars(
    eligible: np.ndarray, exposure_id: int, fraction: float, min_stars: int = 0
) -> np.ndarray:
    """A deterministic ``floor(fraction × n)`` of the eligible rows, seeded by the exposure id.

    Never leaves fewer than ``min_stars`` eligible rows unreserved. The draw
    depends only on the exposure id and on which rows are eligible (their
    order included), so replaying an exposure reserves the same stars.
    """
    eligible = np.asarray(eligible, dtype=bool)
    rows = np.flatnonzero(eligible)
    count = min(math.floor(fraction * rows.size + 1e-9), max(rows.size - min_stars, 0))
    reserved = np.zeros(eligible.size, dtype=bool)
    if count > 0:
        rng = np.random.default_rng([RESERVE_SALT, int(exposure_id) % 2**64])
        reserved[rows[rng.permutation(rows.size)[:count]]] = True
    return reserved


def _clip(z: np.ndarray, s: np.ndarray, config: PhotometryConfig) -> tuple[np.ndarray, int]:
    """Iterative clipping at ``clip_sigma`` robust sigmas of (ZP_i - centre) / sqrt(σ_i² + τ²).

    The robust extra scatter τ and scale come from the median of the squared
    normalised residuals of *all* stars (:func:`_robust_extra`), not from the
    kept ones: a χ²-based σ_int refitted on clipped stars would shrink, then
    clip the precise stars that reveal it, and so on. The centre starts at the
    median ZP_i and is then the weighted mean of the kept stars; every star is
    judged afresh each round (a clipped star may return).
    """
    keep = np.ones(z.size, dtype=bool)
    centre = float(np.median(z))
    iterations = 0
    for _ in range(config.clip_iterations):
        extra, scale = _robust_extra(z - centre, s)
        if not scale > 0:
            break
        if keep.sum() > 1:  # never tighter than the χ² estimate of the kept stars
            extra = max(extra, _weighted_fit(z[keep], s[keep])[2] ** 2)
        iterations += 1
        new = np.abs(z - centre) <= config.clip_sigma * scale * np.sqrt(s**2 + extra)
        if np.array_equal(new, keep) or new.sum() < 2:
            break
        keep = new
        centre = _weighted_fit(z[keep], s[keep])[0]
    return keep, iterations


#: Median of χ² with one degree of freedom: median(r²) of Gaussian residuals r.
MEDIAN_CHI2_1 = 0.45493642311957283


def _robust_extra(d: np.ndarray, s: np.ndarray) -> tuple[float, float]:
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
    return brentq(excess, 0.0, upper, xtol=1e-14, rtol=1e-10), 1.0


def _weighted_fit(z: np.ndarray, s: np.ndarray) -> tuple[float, float, float, np.ndarray]:
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
        # at this σ_int² the χ² is at most dof (each weight <= 1/extra): a bracket
        upper = float(np.sum((z - z.mean()) ** 2) / dof)
        extra = brentq(excess, 0.0, upper, xtol=1e-14, rtol=1e-10) if excess(upper) < 0 else upper
    w = 1.0 / (var + extra)
    total = np.sum(w)
    return float(np.sum(w * z) / total), float(1.0 / np.sqrt(total)), math.sqrt(extra), w


def _vector(value, name: str, n: int | None = None, dtype=float) -> np.ndarray:
    array = np.asarray(value, dtype=dtype)
    if array.ndim != 1 or (n is not None and array.size != n):
        expected = "a 1-D array" if n is None else f"{n} values"
        raise PhotometryError(f"expected {expected}, got shape {array.shape}", where=name)
    return array


# ---------------------------------------------------------------- calibrated magnitudes


def calibrated_magnitudes(
    psf_flux: np.ndarray,
    psf_flux_err: np.ndarray,
    exptime: float,
    result: PhotoCalResult,
    include_zeropoint_err: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``psf_mag = MAGZERO - 2.5 log10(psf_flux / EXPTIME)`` and its error.

    The error is the instrumental ``1.0857 σ/flux`` with MAGZERO_ERR added in
    quadrature (as LSST's PhotoCalib): the error against the reference system.
    MAGZERO_ERR is common to every source of the exposure, so for relative
    photometry within one exposure pass ``include_zeropoint_err=False`` (or
    use the fluxes). Non-positive or non-finite fluxes give NaN.
    """
    flux = np.asarray(psf_flux, dtype=float)
    err = np.asarray(psf_flux_err, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(flux) & (flux > 0)
        mag = np.where(ok, result.magzero - 2.5 * np.log10(flux / float(exptime)), np.nan)
        mag_err = np.where(ok, MAG_PER_RELATIVE_FLUX * err / flux, np.nan)
    if include_zeropoint_err:
        mag_err = np.hypot(mag_err, result.magzero_err)
    return mag, mag_err
