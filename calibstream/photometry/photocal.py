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
  scatter the stated errors do not explain (σ_int ≥ ``few_sigma_int`` from few stars).

Sign of everything: ``mag = MAGZERO - 2.5 log10(psf_flux / EXPTIME)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from calibstream.config import ColorTerm, PhotometryConfig
from calibstream.errors import PhotometryError
from calibstream.photometry.zeropoint_stats import clip_zeropoints, floored_fit

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
    few_stars: bool = False  # MAGZERO_FEW: nobj <= few_stars (σ_int ≥ few_sigma_int)

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
    matched = _Matched.checked(
        psf_flux,
        psf_flux_err,
        ref_primary_mag,
        ref_primary_err,
        ref_secondary_mag,
        ref_secondary_err,
        candidate,
        colorterm,
    )
    exptime = _positive_exptime(exptime)
    stars = _star_zeropoints(matched, exptime, colorterm, config)
    reserved = reserve_stars(stars.eligible, exposure_id, config.reserve_fraction, config.min_stars)
    fit_rows = np.flatnonzero(stars.eligible & ~reserved)
    if fit_rows.size < config.min_stars:
        raise _too_few_stars(fit_rows.size, stars, config)
    keep, iterations = clip_zeropoints(stars.zeropoints[fit_rows], stars.sigma[fit_rows], config)
    rows = fit_rows[keep]
    if rows.size < config.min_stars:
        raise PhotometryError(
            f"{rows.size} calibration stars left after sigma clipping of {fit_rows.size}, "
            f"need {config.min_stars}",
            where="photometry",
        )
    return _photocal_result(stars, rows, reserved, colorterm, iterations, config)


@dataclass(frozen=True, eq=False)
class _Matched:
    """The fit's per-row inputs, checked: PSF fluxes and the colour term's two bands."""

    flux: np.ndarray
    flux_err: np.ndarray
    primary: np.ndarray
    primary_err: np.ndarray
    secondary: np.ndarray
    secondary_err: np.ndarray
    candidate: np.ndarray

    @classmethod
    def checked(
        cls, flux, flux_err, primary, primary_err, secondary, secondary_err, candidate, colorterm
    ) -> _Matched:
        """1-D arrays of one length; the error names the first bad input."""
        flux = _vector(flux, "psf_flux")
        n = flux.size
        return cls(
            flux,
            _vector(flux_err, "psf_flux_err", n),
            _vector(primary, f"{colorterm.primary}_mag", n),
            _vector(primary_err, f"{colorterm.primary}_mag_err", n),
            _vector(secondary, f"{colorterm.secondary}_mag", n),
            _vector(secondary_err, f"{colorterm.secondary}_mag_err", n),
            _vector(candidate, "candidate", n, dtype=bool),
        )


@dataclass(frozen=True, eq=False)
class _StarZeropoints:
    """Per row: ZP_i, its stated σ_i, the colour, and the cuts each row passes."""

    zeropoints: np.ndarray
    sigma: np.ndarray
    colour: np.ndarray
    candidate: np.ndarray
    valid: np.ndarray  # finite, positive flux and errors
    bright: np.ndarray  # S/N >= min_snr
    eligible: np.ndarray  # candidate, valid, bright and a precise reference


def _positive_exptime(exptime) -> float:
    """EXPTIME as a float; it must be finite and positive."""
    exptime = float(exptime)
    if not (math.isfinite(exptime) and exptime > 0):
        raise PhotometryError(f"EXPTIME must be positive, got {exptime!r}", where="EXPTIME")
    return exptime


def _star_zeropoints(
    m: _Matched, exptime: float, colorterm: ColorTerm, config: PhotometryConfig
) -> _StarZeropoints:
    """Each row's ZP_i = m_i + 2.5 log10(flux_i / EXPTIME), its σ_i, and the cuts."""
    ref_mag, ref_err, colour = reference_magnitudes(
        colorterm, m.primary, m.primary_err, m.secondary, m.secondary_err
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        zeropoints = ref_mag + 2.5 * np.log10(m.flux / exptime)
        inst_err = MAG_PER_RELATIVE_FLUX * m.flux_err / m.flux
        sigma = np.hypot(inst_err, ref_err)
        valid = (
            np.isfinite(zeropoints)
            & np.isfinite(sigma)
            & (m.flux > 0)
            & (m.flux_err > 0)
            & (sigma > 0)
            & (m.primary_err >= 0)
            & (m.secondary_err >= 0)
        )
        bright = m.flux >= config.min_snr * m.flux_err
        precise = ref_err <= config.max_mag_err
    eligible = m.candidate & valid & bright & precise
    return _StarZeropoints(zeropoints, sigma, colour, m.candidate, valid, bright, eligible)


def _too_few_stars(n_fit: int, stars: _StarZeropoints, config: PhotometryConfig) -> PhotometryError:
    """The error counting the rows each cut leaves."""
    candidate, valid = stars.candidate, stars.valid
    return PhotometryError(
        f"{n_fit} calibration stars, need {config.min_stars}: of {candidate.size} matched "
        f"sources {int(candidate.sum())} are candidates, {int((candidate & valid).sum())} "
        f"with valid fluxes and reference magnitudes, "
        f"{int((candidate & valid & stars.bright).sum())} with S/N >= {config.min_snr:g}, "
        f"{int(stars.eligible.sum())} with reference error <= {config.max_mag_err:g} mag",
        where="photometry",
    )


def _photocal_result(
    stars: _StarZeropoints,
    rows: np.ndarray,
    reserved: np.ndarray,
    colorterm: ColorTerm,
    iterations: int,
    config: PhotometryConfig,
) -> PhotoCalResult:
    """MAGZERO by the weighted mean of ``rows`` (σ_int ≥ ``few_sigma_int`` from few stars)."""
    zeropoints, sigma, valid = stars.zeropoints, stars.sigma, stars.valid
    floor = config.few_sigma_int if rows.size <= config.few_stars else 0.0
    magzero, magzero_err, sigma_int, weights = floored_fit(zeropoints[rows], sigma[rows], floor)
    rms = float(np.sqrt(np.mean((zeropoints[rows] - magzero) ** 2))) if rows.size > 1 else math.nan
    used = np.zeros(zeropoints.size, dtype=bool)
    used[rows] = True
    offsets = zeropoints[reserved] - magzero
    return PhotoCalResult(
        magzero=magzero,
        magzero_err=magzero_err,
        magzero_rms=rms,
        nobj=int(rows.size),
        colorterm=colorterm.coefficients,
        used=used,
        reserved=reserved,
        reserved_rms=float(np.sqrt(np.mean(offsets**2))) if offsets.size else math.nan,
        reserved_mean_offset=float(np.mean(offsets)) if offsets.size else math.nan,
        sigma_int=sigma_int,
        colour_mean=float(np.sum(weights * stars.colour[rows]) / np.sum(weights)),
        zeropoints=np.where(valid, zeropoints, np.nan),
        zeropoint_errs=np.where(valid, sigma, np.nan),
        iterations=iterations,
        few_stars=bool(rows.size <= config.few_stars),
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
