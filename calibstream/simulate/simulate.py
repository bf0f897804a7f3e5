"""Simulated characterized exposures, their ground truth and one reference catalog.

This is the tests' ground truth, so each ingredient is there to catch a real
pipeline mistake: a TAN-SIP WCS with a first guess off by arcseconds
(astrometric fit), proper motions over ten years (epoch propagation), a colour
term and a per-exposure zero-point (photometric calibration), a truncated
PSF image with its aperture correction (flux scale), saturated stars, a bad
column, repaired cosmic rays and resolved galaxies (flags, star/galaxy
confusion), and noise exactly described by the variance plane.

All sources live on one patch of sky (:class:`Sky`, made once per survey), so
overlapping exposures see the same stars and galaxies and one reference
catalog covers them all. Everything is vectorised numpy and deterministic
from the seed (one ``SeedSequence`` child per exposure and per component, so
switching cosmic rays off does not change the noise).

Conventions the pipeline must share (see also :class:`Truth`):

* pixel coordinates are 0-based, pixel centres are integers;
* ``flux`` in the truth is the *total* flux in electrons; stars are rendered
  on stamps large enough to lose < 2e-4 of it; galaxies are Sérsic profiles
  truncated at 5 (n=1) or 8 (n=4) half-light radii, normalised so that the
  truncated profile holds exactly ``flux``;
* the PSF HDU is the pixel-integrated Moffat centred on a pixel, truncated to
  ``psf_size``² and normalised to sum 1; it holds the fraction ``f_in`` of a
  star's flux, and the APCORR ``psf_flux`` term is exactly ``1 / f_in``;
* ``MAGZERO``: ``m_ref_colour_corrected = MAGZERO - 2.5 log10(flux / EXPTIME)``
  with ``m_ref_colour_corrected = r + c0 + c1 (r-i) + c2 (r-i)²`` of the true
  magnitudes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning, Sip
from scipy import signal, special
from scipy.spatial import cKDTree

from calibstream.detection.apcorr import ApCorrMap, ApCorrTerm
from calibstream.detection.psfmodel import (
    gauss_legendre,
    integrate_pixels,
    moffat_alpha,
    moffat_enclosed,
    moffat_profile,
    moffat_radius,
    moffat_stamps,
    psf_image,
    quadrature_order,
)
from calibstream.io.exposure import Exposure, IcSrc, Metadata, Psf, write_exposure

#: LSST's mask-plane order.
MASK_PLANES = MappingProxyType(
    {
        "BAD": 0,
        "SAT": 1,
        "INTRP": 2,
        "CR": 3,
        "EDGE": 4,
        "DETECTED": 5,
        "DETECTED_NEGATIVE": 6,
        "SUSPECT": 7,
        "NO_DATA": 8,
    }
)
#: Source and cosmic-ray counts are given per this many pixels (a 4k×4k chip).
REFERENCE_AREA = 4096 * 4096
MAS_PER_DEG = 3.6e6
#: Gaia-like ids exceed 2**53: a pipeline that passes ids through float64 corrupts them.
REFCAT_ID_BASE = 3_836_264_017_000_000_000
#: Truncation of the Sérsic profiles, in half-light radii (n=1, n=4).
SERSIC_TRUNCATION = {1.0: 5.0, 4.0: 8.0}


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulation; defaults describe a 30-s r-band LSST-like exposure."""

    size: tuple[int, int] = (2048, 2048)  # (nx, ny): image shape is (ny, nx)
    pixel_scale: float = 0.2  # arcsec / px
    fwhm: float = 3.5  # px, Moffat FWHM (the PSF HDU's FWHM key)
    fwhm_jitter: float = 0.0  # fractional rms of the per-exposure FWHM
    moffat_beta: float = 3.5
    psf_size: int = 25  # odd side of the PSF HDU
    sky: float = 1000.0  # e-/px, already subtracted: only its Poisson noise remains
    read_noise: float = 5.0  # e-
    exptime: float = 30.0  # s
    zeropoint: float = 28.0  # mag giving 1 e-/s, mean over exposures
    zeropoint_scatter: float = 0.05  # mag rms per exposure (clouds, airmass)
    colorterm: tuple[float, float, float] = (0.0, 0.04, 0.0)  # r + c0 + c1(r-i) + c2(r-i)²
    saturation: float = 1.0e5  # e-, raw level including the sky
    n_sources: float = 3000.0  # per 4096² px (stars + galaxies), scaled with area
    star_fraction: float = 0.4
    star_mag_range: tuple[float, float] = (14.0, 25.0)  # true r
    star_count_slope: float = 0.15  # d log10 N / dm
    galaxy_mag_range: tuple[float, float] = (18.0, 25.5)  # true r
    galaxy_count_slope: float = 0.3
    galaxy_hlr_range: tuple[float, float] = (0.5, 6.0)  # px, log-uniform, major axis
    galaxy_devauc_fraction: float = 0.2  # fraction of n=4 galaxies (others n=1)
    galaxy_axis_ratio_range: tuple[float, float] = (0.3, 1.0)
    refcat_mag_limit: float = 21.5  # stars with true r below this are in the refcat
    refcat_epoch: float = 2016.0
    pm_sigma: float = 5.0  # mas/yr per component, typical stars
    pm_fast_fraction: float = 0.1
    pm_fast_sigma: float = 30.0  # mas/yr, the nearby minority
    n_cosmic_rays: float = 100.0  # per 4096² px
    repair_cosmic_rays: bool = True  # as characterization did: interpolated, CR|INTRP
    bad_column: bool = True
    bad_column_value: float = 2000.0  # e- of garbage added to the column
    sip_corner_shift: float = 3.0  # px, largest SIP displacement at a chip corner
    first_guess_offset: tuple[float, float] = (3.0, 8.0)  # arcsec, uniform range
    first_guess_rotation: float = 0.02  # deg, typical size (random sign)
    first_guess_sip: bool = True  # first guess carries the (true) camera distortion
    center: tuple[float, float] = (150.0, 2.0)  # deg, survey centre
    dither: float = 0.5  # pointing offsets, uniform within ± this fraction of the chip
    mjd_obs: float = 61000.0  # first exposure (~2025.9, ~10 yr after the refcat epoch)
    airmass: float = 1.2
    detect_nsigma: float = 5.0  # DETECTED where the noiseless model exceeds this × sky sigma
    icsrc_snr: float = 50.0  # characterization's bright-source threshold (true snr)
    apcorr_err: float = 0.0005
    add_noise: bool = True  # False: IMAGE is the noiseless model (VARIANCE unchanged)
    margin: int = 10  # px: sources centred this far off the chip still shed light on it

    def __post_init__(self) -> None:
        if self.psf_size % 2 != 1 or self.psf_size < 3:
            raise ValueError(f"psf_size must be odd and >= 3, got {self.psf_size}")
        if min(self.size) < 16:
            raise ValueError(f"size must be at least 16x16, got {self.size}")
        if not 0.0 <= self.star_fraction <= 1.0:
            raise ValueError(f"star_fraction must be in [0, 1], got {self.star_fraction}")

    @property
    def area_scale(self) -> float:
        return self.size[0] * self.size[1] / REFERENCE_AREA


@dataclass(frozen=True)
class Pointing:
    """Where one exposure looks: the true chip centre and the rotation of its axes."""

    ra: float
    dec: float
    rotation: float  # deg


@dataclass(frozen=True)
class Sky:
    """All true objects of the survey patch and the reference catalog drawn from them."""

    center: tuple[float, float]
    stars: Table  # id, ra, dec (true at refcat epoch), pmra, pmdec, g/r/i_mag, ref_id
    galaxies: Table  # id, ra, dec, r_mag, i_mag, hlr (arcsec), sersic_n, axis_ratio, pa
    refcat: Table


@dataclass(frozen=True)
class Truth:
    """What really is in one exposure (``sources`` columns: see :func:`write_truth`)."""

    expid: int
    wcs: WCS  # true TAN-SIP, 1-based in its header; use origin=0 for 0-based pixels
    magzero: float  # mag = MAGZERO - 2.5 log10(total flux / EXPTIME), colour term applied
    colorterm: tuple[float, float, float]
    fwhm: float  # px, Moffat FWHM
    moffat_beta: float
    sky: float  # e-/px subtracted sky level
    read_noise: float
    sky_variance: float  # sky + read_noise²: the variance of a source-free pixel
    exptime: float
    mjd_obs: float
    epoch: float  # Julian year of MJD-OBS
    saturation: float  # clip level in image units (saturation - sky)
    bad_column: int  # 0-based x of the bad column, -1 if none
    apcorr_psf: float  # 1 / f_in: the psf_flux aperture correction
    apcorr_ap12: float  # 1 / enclosed fraction at r = 12 px
    first_guess_offset: float  # arcsec between first-guess and true chip centre
    first_guess_rotation: float  # deg
    sip_corner_shift: float  # px, largest SIP displacement at the corners
    size: tuple[int, int]
    sources: Table


@dataclass(frozen=True)
class Survey:
    """Simulated exposures with their truth, and the one reference catalog covering them."""

    exposures: list[tuple[Exposure, Truth]]
    refcat: Table
    sky: Sky
    config: SimConfig = field(default_factory=SimConfig)


# ---------------------------------------------------------------- sky geometry


def julian_year(mjd: float) -> float:
    """Julian epoch of an MJD (J2000.0 = MJD 51544.5)."""
    return 2000.0 + (mjd - 51544.5) / 365.25


def tan_deproject(xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float):
    """Gnomonic (TAN) deprojection: tangent-plane offsets in arcsec to (ra, dec) degrees."""
    xi = np.radians(np.asarray(xi, float) / 3600.0)
    eta = np.radians(np.asarray(eta, float) / 3600.0)
    a0, d0 = math.radians(ra0), math.radians(dec0)
    denom = math.cos(d0) - eta * math.sin(d0)
    ra = a0 + np.arctan2(xi, denom)
    dec = np.arctan2(math.sin(d0) + eta * math.cos(d0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def tan_project(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float):
    """Gnomonic projection: (ra, dec) degrees to tangent-plane offsets in arcsec."""
    a = np.radians(np.asarray(ra, float)) - math.radians(ra0)
    d = np.radians(np.asarray(dec, float))
    d0 = math.radians(dec0)
    cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def propagate(ra, dec, pmra, pmdec, years: float):
    """Proper motion over ``years`` (pmra includes cos dec): straight line on the sphere.

    The unit vector moves by Δt·μ along the local east/north axes and is
    renormalised (no parallax, no radial velocity) — as astropy's
    ``apply_space_motion`` for such sources, and valid near the poles.
    """
    ra_r = np.radians(np.asarray(ra, float))
    dec_r = np.radians(np.asarray(dec, float))
    step = years * np.radians(1.0 / MAS_PER_DEG)
    a = np.asarray(pmra, float) * step
    d = np.asarray(pmdec, float) * step
    sin_ra, cos_ra = np.sin(ra_r), np.cos(ra_r)
    sin_dec, cos_dec = np.sin(dec_r), np.cos(dec_r)
    x = cos_dec * cos_ra - a * sin_ra - d * sin_dec * cos_ra
    y = cos_dec * sin_ra + a * cos_ra - d * sin_dec * sin_ra
    z = sin_dec + d * cos_dec
    return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arctan2(z, np.hypot(x, y)))


def _cd_matrix(scale_arcsec: float, rotation_deg: float) -> np.ndarray:
    """CD matrix, north up and east left at rotation 0 (det < 0, as on the sky)."""
    s = scale_arcsec / 3600.0
    c, n = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    return s * np.array([[-c, n], [n, c]])


def _sip_polynomials(rng: np.random.Generator, size: tuple[int, int], corner_shift: float):
    """Order-3 SIP A, B: a radial cubic plus random terms, scaled to ``corner_shift`` px.

    Only terms of order 2 and 3: the distortion and its gradient vanish at
    CRPIX, so the linear part stays the CD matrix.
    """
    nx, ny = size
    scale = max(nx, ny) / 2.0
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    radial = rng.choice([-1.0, 1.0])
    a[3, 0] = a[1, 2] = radial
    b[2, 1] = b[0, 3] = radial
    for p in range(4):
        for q in range(4):
            if 2 <= p + q <= 3:
                a[p, q] += 0.4 * rng.standard_normal()
                b[p, q] += 0.4 * rng.standard_normal()
                a[p, q] /= scale ** (p + q)
                b[p, q] /= scale ** (p + q)
    u = np.array([-1, 1, -1, 1]) * (nx - 1) / 2.0
    v = np.array([-1, -1, 1, 1]) * (ny - 1) / 2.0
    shift = np.hypot(_poly(a, u, v), _poly(b, u, v)).max()
    factor = corner_shift / shift if shift > 0 else 0.0
    return a * factor, b * factor


def _poly(coeffs: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sum of coeffs[p, q] u^p v^q (the SIP convention)."""
    order = coeffs.shape[0] - 1
    total = np.zeros(np.broadcast(u, v).shape)
    for p in range(order + 1):
        for q in range(order + 1 - p):
            if coeffs[p, q] != 0.0:
                total = total + coeffs[p, q] * u**p * v**q
    return total


def _sip_inverse(a: np.ndarray, b: np.ndarray, size: tuple[int, int], order: int = 5):
    """AP, BP fitted by least squares so that readers without iteration still invert well."""
    nx, ny = size
    u, v = np.meshgrid(np.linspace(-nx / 2, nx / 2, 40), np.linspace(-ny / 2, ny / 2, 40))
    u, v = u.ravel(), v.ravel()
    big_u = u + _poly(a, u, v)
    big_v = v + _poly(b, u, v)
    scale = max(nx, ny) / 2.0
    terms = [(p, q) for p in range(order + 1) for q in range(order + 1 - p)]
    design = np.stack([(big_u / scale) ** p * (big_v / scale) ** q for p, q in terms], axis=1)
    ap = np.zeros((order + 1, order + 1))
    bp = np.zeros((order + 1, order + 1))
    sol_u = np.linalg.lstsq(design, u - big_u, rcond=None)[0]
    sol_v = np.linalg.lstsq(design, v - big_v, rcond=None)[0]
    for (p, q), cu, cv in zip(terms, sol_u, sol_v, strict=True):
        ap[p, q] = cu / scale ** (p + q)
        bp[p, q] = cv / scale ** (p + q)
    return ap, bp


def make_wcs(
    ra: float,
    dec: float,
    rotation: float,
    size: tuple[int, int],
    pixel_scale: float,
    sip: tuple[np.ndarray, np.ndarray] | None = None,
) -> WCS:
    """A TAN (or TAN-SIP) WCS with CRPIX at the chip centre and CRVAL at (ra, dec)."""
    nx, ny = size
    wcs = WCS(naxis=2)
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]  # FITS 1-based: 0-based (nx-1)/2
    wcs.wcs.crval = [ra % 360.0, dec]
    wcs.wcs.cd = _cd_matrix(pixel_scale, rotation)
    wcs.wcs.radesys = "ICRS"
    if sip is None:
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    else:
        a, b = sip
        ap, bp = _sip_inverse(a, b, size)
        wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        wcs.sip = Sip(a, b, ap, bp, wcs.wcs.crpix)
    wcs.pixel_shape = (nx, ny)
    wcs.wcs.set()
    return wcs


def _first_guess(truth: WCS, rng: np.random.Generator, config: SimConfig):
    """The header WCS: CRVAL displaced by arcseconds, CD rotated by a few hundredths of a degree."""
    lo, hi = config.first_guess_offset
    offset = rng.uniform(lo, hi)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rotation = rng.choice([-1.0, 1.0]) * config.first_guess_rotation * rng.uniform(0.5, 1.5)
    ra0, dec0 = truth.wcs.crval
    new_ra, new_dec = tan_deproject(offset * math.sin(angle), offset * math.cos(angle), ra0, dec0)
    guess = truth.deepcopy()
    if not config.first_guess_sip:
        guess.sip = None
        guess.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    guess.wcs.crval = [float(new_ra), float(new_dec)]
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    guess.wcs.cd = np.array([[c, -s], [s, c]]) @ truth.wcs.cd
    guess.wcs.set()
    centre = ((config.size[0] - 1) / 2.0, (config.size[1] - 1) / 2.0)
    true_c = truth.all_pix2world([centre], 0)[0]
    guess_c = guess.all_pix2world([centre], 0)[0]
    xi, eta = tan_project(guess_c[0], guess_c[1], true_c[0], true_c[1])
    return guess, float(np.hypot(xi, eta)), float(rotation)


def _world_to_pixel(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixels through the full (SIP-inverting) transform, converged to 1e-10 px."""
    if ra.size == 0:
        return np.empty(0), np.empty(0)
    x, y = wcs.all_world2pix(ra, dec, 0, tolerance=1e-10, maxiter=100, quiet=False)
    return np.asarray(x, float), np.asarray(y, float)


# ---------------------------------------------------------------- the sky


def _power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float):
    """Magnitudes with dN/dm ∝ 10^(slope·m) on [lo, hi] (inverse CDF)."""
    u = rng.uniform(size=n)
    if slope == 0.0 or hi <= lo:
        return lo + (hi - lo) * u
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def _mag_err(mag: np.ndarray, limit: float) -> np.ndarray:
    """PS1-like photometric errors: 2 mmag floor, ~0.03 mag at the catalog limit."""
    return 0.002 + 0.03 * 10.0 ** (0.4 * (mag - limit))


def make_sky(
    config: SimConfig, pointings: list[Pointing], seed: int | np.random.SeedSequence = 0
) -> Sky:
    """Stars and galaxies covering every pointing (plus a margin), and their reference catalog."""
    rng = np.random.default_rng(seed)
    ra0, dec0 = config.center
    nx, ny = config.size
    radius = 0.5 * math.hypot(nx, ny) * config.pixel_scale + 60.0  # arcsec, chip + margin
    xi, eta = tan_project(
        np.array([p.ra for p in pointings]), np.array([p.dec for p in pointings]), ra0, dec0
    )
    lo_xi, hi_xi = xi.min() - radius, xi.max() + radius
    lo_eta, hi_eta = eta.min() - radius, eta.max() + radius
    area_px = (hi_xi - lo_xi) * (hi_eta - lo_eta) / config.pixel_scale**2
    per_px = config.n_sources / REFERENCE_AREA
    n_star = int(rng.poisson(per_px * config.star_fraction * area_px))
    n_gal = int(rng.poisson(per_px * (1.0 - config.star_fraction) * area_px))

    # stars: true positions at the refcat epoch, colours along a rough stellar locus
    s_ra, s_dec = tan_deproject(
        rng.uniform(lo_xi, hi_xi, n_star), rng.uniform(lo_eta, hi_eta, n_star), ra0, dec0
    )
    r = _power_law_mags(rng, n_star, *config.star_mag_range, config.star_count_slope)
    ri = -0.2 + 1.7 * rng.beta(1.3, 3.0, n_star)
    gr = np.minimum(0.15 + 1.9 * ri, 1.55) + 0.03 * rng.standard_normal(n_star)
    fast = rng.uniform(size=n_star) < config.pm_fast_fraction
    pm_sigma = np.where(fast, config.pm_fast_sigma, config.pm_sigma)
    pmra = pm_sigma * rng.standard_normal(n_star)
    pmdec = pm_sigma * rng.standard_normal(n_star)
    in_ref = r < config.refcat_mag_limit
    ref_index = np.cumsum(in_ref) - 1
    ref_id = np.where(in_ref, REFCAT_ID_BASE + 1_000_003 * ref_index, -1).astype(np.int64)
    stars = Table(
        {
            "id": np.arange(1, n_star + 1, dtype=np.int64),
            "ref_id": ref_id,
            "ra": s_ra,
            "dec": s_dec,
            "pmra": pmra,
            "pmdec": pmdec,
            "r_mag": r,
            "i_mag": r - ri,
            "g_mag": r + gr,
        }
    )

    g_ra, g_dec = tan_deproject(
        rng.uniform(lo_xi, hi_xi, n_gal), rng.uniform(lo_eta, hi_eta, n_gal), ra0, dec0
    )
    g_r = _power_law_mags(rng, n_gal, *config.galaxy_mag_range, config.galaxy_count_slope)
    lo_h, hi_h = config.galaxy_hlr_range
    hlr_px = np.exp(rng.uniform(math.log(lo_h), math.log(hi_h), n_gal))
    devauc = rng.uniform(size=n_gal) < config.galaxy_devauc_fraction
    galaxies = Table(
        {
            "id": np.arange(n_star + 1, n_star + n_gal + 1, dtype=np.int64),
            "ra": g_ra,
            "dec": g_dec,
            "r_mag": g_r,
            "i_mag": g_r - rng.uniform(0.0, 0.8, n_gal),
            "hlr": hlr_px * config.pixel_scale,  # arcsec, major axis
            "sersic_n": np.where(devauc, 4.0, 1.0),
            "axis_ratio": rng.uniform(*config.galaxy_axis_ratio_range, n_gal),
            "pa": rng.uniform(0.0, 180.0, n_gal),  # deg east of north
        }
    )
    refcat = _make_refcat(stars[in_ref], rng, config)
    return Sky(center=(ra0, dec0), stars=stars, galaxies=galaxies, refcat=refcat)


def _make_refcat(stars: Table, rng: np.random.Generator, config: SimConfig) -> Table:
    """A Gaia/PS1-like catalog: every value is the truth plus a draw of its quoted error."""
    n = len(stars)
    r = np.asarray(stars["r_mag"])
    pos_err = 0.05 * 10.0 ** (0.217 * np.clip(r - 15.0, 0.0, None))  # mas: 0.05 → ~1 at r=21
    pm_err = 1.1 * pos_err  # mas/yr
    dec = np.asarray(stars["dec"])
    cos_dec = np.cos(np.radians(dec))
    table = Table()
    table["id"] = np.asarray(stars["ref_id"], dtype=np.int64)
    table["ra"] = stars["ra"] + pos_err * rng.standard_normal(n) / (MAS_PER_DEG * cos_dec)
    table["dec"] = dec + pos_err * rng.standard_normal(n) / MAS_PER_DEG
    table["ra_err"] = pos_err
    table["dec_err"] = pos_err
    table["pmra"] = stars["pmra"] + pm_err * rng.standard_normal(n)
    table["pmdec"] = stars["pmdec"] + pm_err * rng.standard_normal(n)
    table["pmra_err"] = pm_err
    table["pmdec_err"] = pm_err
    table["epoch"] = np.full(n, config.refcat_epoch)
    limit = config.refcat_mag_limit
    for band in ("r", "i", "g"):
        mag = np.asarray(stars[f"{band}_mag"])
        err = _mag_err(mag, limit)
        table[f"{band}_mag"] = mag + err * rng.standard_normal(n)
        table[f"{band}_mag_err"] = err
    units = {
        "ra": "deg",
        "dec": "deg",
        "ra_err": "mas",
        "dec_err": "mas",
        "pmra": "mas / yr",
        "pmdec": "mas / yr",
        "pmra_err": "mas / yr",
        "pmdec_err": "mas / yr",
        "epoch": "yr",
    }
    for name, unit in units.items():
        table[name].unit = unit
    for band in ("r", "i", "g"):
        table[f"{band}_mag"].unit = table[f"{band}_mag_err"].unit = "mag"
    return table


def _pointings(config: SimConfig, n: int, rng: np.random.Generator) -> list[Pointing]:
    """Dithered, randomly rotated pointings that overlap or neighbour each other."""
    nx, ny = config.size
    half = config.dither * max(nx, ny) * config.pixel_scale
    xi = rng.uniform(-half, half, n) if n > 1 else np.zeros(n)
    eta = rng.uniform(-half, half, n) if n > 1 else np.zeros(n)
    ra, dec = tan_deproject(xi, eta, *config.center)
    rot = rng.uniform(0.0, 360.0, n)
    return [Pointing(float(a), float(d), float(t)) for a, d, t in zip(ra, dec, rot, strict=True)]


# ---------------------------------------------------------------- rendering


def _star_half_sizes(flux: np.ndarray, fwhm: float, beta: float, noise: float) -> np.ndarray:
    """Stamp half-sizes: < 2e-4 of the flux lost, and wings below 0.05 sky sigma per pixel."""
    alpha = moffat_alpha(fwhm, beta)
    base = int(np.ceil(moffat_radius(2e-4, fwhm, beta)))
    peak_norm = (beta - 1.0) / (np.pi * alpha**2)
    level = np.clip(0.05 * noise / (np.maximum(flux, 1e-9) * peak_norm), 1e-300, 1.0)
    wing = alpha * np.sqrt(level ** (-1.0 / beta) - 1.0)
    half = np.maximum(base, np.ceil(wing)).astype(np.int64)
    step = max(4, base // 2)
    return base + step * np.ceil((half - base) / step).astype(np.int64)  # few distinct sizes


def _scatter(
    stamps: np.ndarray, x0: np.ndarray, y0: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices and values of the on-image part of stamps (for np.bincount)."""
    size = stamps.shape[1]
    offsets = np.arange(size)
    rows = y0[:, None] + offsets[None, :]
    cols = x0[:, None] + offsets[None, :]
    ok = ((rows >= 0) & (rows < shape[0]))[:, :, None] & ((cols >= 0) & (cols < shape[1]))[
        :, None, :
    ]
    flat = rows[:, :, None] * shape[1] + cols[:, None, :]
    return flat[ok], stamps[ok]


def _render_stars(x, y, flux, fwhm, beta, order, noise, shape):
    """Flat (index, value) pairs of all stars, grouped by stamp size."""
    halves = _star_half_sizes(flux, fwhm, beta, noise)
    indices, values = [], []
    for half in np.unique(halves):
        sel = np.flatnonzero(halves == half)
        stamps, x0, y0 = moffat_stamps(x[sel], y[sel], int(half), fwhm, beta, order)
        idx, val = _scatter(stamps * flux[sel, None, None], x0, y0, shape)
        indices.append(idx)
        values.append(val)
    return indices, values


def _sersic_total(re, n, b, q, trunc):
    """Analytic flux of exp(-b (r/re)^(1/n)), axis ratio q, truncated at trunc·re."""
    return (
        2.0
        * np.pi
        * q
        * n
        * re**2
        * b ** (-2.0 * n)
        * special.gamma(2.0 * n)
        * special.gammainc(2.0 * n, b * trunc ** (1.0 / n))
    )


def _render_galaxies(x, y, flux, hlr, sersic_n, q, phi, shape):
    """Flat (index, value) pairs of intrinsic (pre-PSF) galaxies in a layer of ``shape``.

    Wings use 3×3 Gauss-Legendre nodes per pixel; the central 3×3 pixels use
    4×4 panels of 4×4 nodes; the pixel holding the centre (the n=4 cusp,
    which no quadrature resolves) gets the analytic total minus the rest.
    """
    indices, values = [], []
    wing_nodes = gauss_legendre(3)
    core_nodes = gauss_legendre(4, sub=4)
    for n in np.unique(sersic_n):
        b = float(special.gammaincinv(2.0 * n, 0.5))
        trunc = SERSIC_TRUNCATION.get(float(n), 6.0)

        def profile(dx, dy, re, qq, cos, sin, n=n, b=b, trunc=trunc):
            major = dx * cos + dy * sin
            minor = (dy * cos - dx * sin) / qq
            rr = np.sqrt(major * major + minor * minor) / re
            root = rr if n == 1 else np.sqrt(np.sqrt(rr)) if n == 4 else rr ** (1.0 / n)
            return np.where(rr <= trunc, np.exp(-b * root), 0.0)

        of_n = np.flatnonzero(sersic_n == n)
        need = np.ceil(trunc * hlr[of_n]).astype(np.int64) + 1
        # half-sizes on a √2 ladder (4, 6, 8, 12, 16, 23, ...): few distinct stamp shapes
        buckets = np.maximum(4, np.ceil(2.0 ** (np.ceil(2 * np.log2(need)) / 2))).astype(np.int64)
        for half in np.unique(buckets):
            sel = of_n[buckets == half]
            params = (hlr[sel], q[sel], np.cos(phi[sel]), np.sin(phi[sel]))
            stamps, x0, y0 = integrate_pixels(
                profile, x[sel], y[sel], int(half), wing_nodes, params
            )
            core = integrate_pixels(profile, x[sel], y[sel], 1, core_nodes, params)[0]
            c = int(half)
            stamps[:, c - 1 : c + 2, c - 1 : c + 2] = core
            total = _sersic_total(hlr[sel], n, b, q[sel], trunc)
            stamps[:, c, c] = 0.0
            stamps[:, c, c] = np.maximum(total - stamps.sum(axis=(1, 2)), 0.0)
            stamps *= (flux[sel] / stamps.sum(axis=(1, 2)))[:, None, None]
            idx, val = _scatter(stamps, x0, y0, shape)
            indices.append(idx)
            values.append(val)
    return indices, values


def _accumulate(indices, values, shape) -> np.ndarray:
    if not indices:
        return np.zeros(shape)
    flat = np.bincount(
        np.concatenate(indices), weights=np.concatenate(values), minlength=shape[0] * shape[1]
    )
    return flat.reshape(shape)


def _gather_sum(stamps, x0, y0, weights_plane):
    """Σ stamp² / plane over on-chip pixels, per stamp (for optimal S/N)."""
    ny, nx = weights_plane.shape
    size = stamps.shape[1]
    offsets = np.arange(size)
    rows = y0[:, None] + offsets[None, :]
    cols = x0[:, None] + offsets[None, :]
    ok = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
    r = np.clip(rows, 0, ny - 1)[:, :, None]
    c = np.clip(cols, 0, nx - 1)[:, None, :]
    return np.where(ok, stamps**2 / weights_plane[r, c], 0.0).sum(axis=(1, 2))


# ---------------------------------------------------------------- one exposure


def _cosmic_rays(rng, config, shape):
    """Pixels (rows, cols) and deposits of short straight 1–4 px tracks."""
    ny, nx = shape
    count = round(config.n_cosmic_rays * config.area_scale)
    if count == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    x0 = rng.integers(0, nx, count)
    y0 = rng.integers(0, ny, count)
    directions = np.array([(1, 0), (0, 1), (1, 1), (1, -1)])
    d = directions[rng.integers(0, 4, count)]
    length = rng.integers(1, 5, count)
    deposit = np.exp(rng.uniform(math.log(300.0), math.log(5000.0), count))
    k = np.arange(4)
    cols = x0[:, None] + d[:, 0:1] * k[None, :]
    rows = y0[:, None] + d[:, 1:2] * k[None, :]
    ok = (k[None, :] < length[:, None]) & (cols >= 0) & (cols < nx) & (rows >= 0) & (rows < ny)
    return rows[ok], cols[ok], np.broadcast_to(deposit[:, None], ok.shape)[ok]


def _interpolate_rows(image: np.ndarray, rows, cols, exclude: np.ndarray, reach: int = 8):
    """Mean of the nearest non-excluded pixel on each side along the row (LSST-like repair)."""
    nx = image.shape[1]
    sides = []
    for step in (-1, 1):
        found = np.full(rows.size, np.nan)
        for k in range(1, reach + 1):
            c = cols + step * k
            inside = (c >= 0) & (c < nx)
            cc = np.clip(c, 0, nx - 1)
            take = np.isnan(found) & inside & ~exclude[rows, cc]
            found[take] = image[rows[take], cc[take]]
        sides.append(found)
    both = np.stack(sides)
    count = np.sum(~np.isnan(both), axis=0)
    total = np.nansum(both, axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def simulate_exposure(
    config: SimConfig | None = None,
    seed: int | np.random.SeedSequence = 0,
    *,
    index: int = 0,
    sky: Sky | None = None,
    pointing: Pointing | None = None,
) -> tuple[Exposure, Truth]:
    """One characterized exposure and its truth.

    Without ``sky`` a sky covering just this exposure is made from the seed
    (then the reference catalog is ``truth``-consistent but not returned: use
    :func:`simulate_survey` when the refcat matters). ``index`` sets EXPID
    (1000+index), VISIT, DETECTOR and the MJD offset.
    """
    config = config or SimConfig()
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    # children built by key, not root.spawn(): reusing one SeedSequence gives the same exposure
    ss_geom, ss_phot, ss_noise, ss_defects, ss_meas, ss_sky = (
        np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, k)) for k in range(6)
    )
    geom_rng = np.random.default_rng(ss_geom)
    if pointing is None:
        pointing = Pointing(*config.center, rotation=float(geom_rng.uniform(0.0, 360.0)))
    if sky is None:
        sky = make_sky(config, [pointing], ss_sky)

    nx, ny = config.size
    shape = (ny, nx)
    beta = config.moffat_beta
    phot_rng = np.random.default_rng(ss_phot)
    fwhm = float(config.fwhm * max(0.3, 1.0 + config.fwhm_jitter * phot_rng.standard_normal()))
    magzero = float(config.zeropoint + config.zeropoint_scatter * phot_rng.standard_normal())
    airmass = float(config.airmass + 0.05 * phot_rng.uniform(-1.0, 1.0))
    mjd = config.mjd_obs + 0.0012 * index  # ~100 s apart
    epoch = julian_year(mjd)
    sky_var = config.sky + config.read_noise**2
    sky_sigma = math.sqrt(sky_var)

    sip = _sip_polynomials(geom_rng, config.size, config.sip_corner_shift)
    true_wcs = make_wcs(
        pointing.ra,
        pointing.dec,
        pointing.rotation,
        config.size,
        config.pixel_scale,
        sip if config.sip_corner_shift > 0 else None,
    )
    guess_wcs, fg_offset, fg_rotation = _first_guess(true_wcs, geom_rng, config)

    sources = _place_sources(sky, true_wcs, config, epoch, magzero, fwhm)
    x = np.asarray(sources["x"])
    y = np.asarray(sources["y"])
    flux = np.asarray(sources["flux"])
    is_star = np.asarray(sources["is_star"])

    # ---- noiseless model: stars directly, galaxies through an FFT convolution
    order = quadrature_order(fwhm, beta)
    stars = np.flatnonzero(is_star)
    idx, val = _render_stars(x[stars], y[stars], flux[stars], fwhm, beta, order, sky_sigma, shape)
    model = _accumulate(idx, val, shape)
    del idx, val
    gals = np.flatnonzero(~is_star)
    if gals.size:
        model += _galaxy_model(sources[gals], fwhm, beta, shape)

    # ---- noise (Gaussian approximation of sky + source Poisson + read noise)
    variance = (model + sky_var).astype(np.float32)
    image = np.random.default_rng(ss_noise).standard_normal(shape, dtype=np.float32)
    if config.add_noise:
        image *= np.sqrt(variance)
        image += model
    else:
        image[...] = model
    detected = model > config.detect_nsigma * sky_sigma
    del model
    mask = np.zeros(shape, dtype=np.int32)
    bit = {name: np.int32(1 << b) for name, b in MASK_PLANES.items()}
    mask[detected] |= bit["DETECTED"]
    del detected
    clip = config.saturation - config.sky
    saturated = image > clip
    image[saturated] = clip
    mask[saturated] |= bit["SAT"]

    defect_rng = np.random.default_rng(ss_defects)
    bad = np.zeros(shape, dtype=bool)
    bad_x = -1
    if config.bad_column:
        bad_x = int(defect_rng.integers(100, nx - 100)) if nx > 200 else nx // 2
        image[:, bad_x] += config.bad_column_value
        mask[:, bad_x] |= bit["BAD"]
        bad[:, bad_x] = True
    rows, cols, deposit = _cosmic_rays(defect_rng, config, shape)
    if rows.size:
        if config.repair_cosmic_rays:
            hit = np.zeros(shape, dtype=bool)
            hit[rows, cols] = True
            image[rows, cols] = _interpolate_rows(image, rows, cols, hit | bad)
            mask[rows, cols] |= bit["CR"] | bit["INTRP"]
        else:
            np.add.at(image, (rows, cols), deposit)

    # ---- truth columns that need the pixels
    sources["snr"], sources["snr_full"] = _snr(x, y, flux, fwhm, beta, order, sky_var, variance)
    sources["saturated"] = _any_bit_near(mask, bit["SAT"], x, y, 1)
    sources["near_bad_column"] = (
        np.abs(x - bad_x) < 2.0 * fwhm if bad_x >= 0 else np.zeros(len(x), bool)
    )

    psf_img, f_in = psf_image(fwhm, beta, config.psf_size, order)
    apcorr_psf = 1.0 / f_in
    apcorr_ap12 = 1.0 / float(moffat_enclosed(12.0, fwhm, beta))
    apcorr = ApCorrMap(
        terms=MappingProxyType(
            {
                "psf_flux": ApCorrTerm(
                    "psf_flux", 1, np.array([[apcorr_psf, 0.0], [0.0, 0.0]]), config.apcorr_err
                ),
                "ap_flux_12": ApCorrTerm(
                    "ap_flux_12", 1, np.array([[apcorr_ap12, 0.0], [0.0, 0.0]]), config.apcorr_err
                ),
            }
        ),
        width=nx,
        height=ny,
    )
    icsrc = _icsrc(
        sources, mask, bit, guess_wcs, config, fwhm, apcorr_psf, np.random.default_rng(ss_meas)
    )

    expid = 1000 + index
    metadata = Metadata(
        expid=expid,
        visit=2000 + index,
        detector=index % 9,
        band="r",
        mjd_obs=mjd,
        exptime=config.exptime,
        airmass=airmass,
        bore_ra=float(guess_wcs.wcs.crval[0]),
        bore_dec=float(guess_wcs.wcs.crval[1]),
    )
    exposure = Exposure(
        image=image,
        mask=mask,
        variance=variance,
        mask_planes=MASK_PLANES,
        psf=Psf(image=psf_img.astype(np.float32), x=(nx - 1) / 2.0, y=(ny - 1) / 2.0, fwhm=fwhm),
        apcorr=apcorr,
        icsrc=icsrc,
        metadata=metadata,
        wcs=guess_wcs,
    )
    truth = Truth(
        expid=expid,
        wcs=true_wcs,
        magzero=magzero,
        colorterm=tuple(config.colorterm),
        fwhm=fwhm,
        moffat_beta=beta,
        sky=config.sky,
        read_noise=config.read_noise,
        sky_variance=sky_var,
        exptime=config.exptime,
        mjd_obs=mjd,
        epoch=epoch,
        saturation=clip,
        bad_column=bad_x,
        apcorr_psf=apcorr_psf,
        apcorr_ap12=apcorr_ap12,
        first_guess_offset=fg_offset,
        first_guess_rotation=fg_rotation,
        sip_corner_shift=config.sip_corner_shift,
        size=(nx, ny),
        sources=sources,
    )
    return exposure, truth


def _galaxy_model(galaxies: Table, fwhm: float, beta: float, shape: tuple[int, int]):
    """Galaxies rendered intrinsically in a padded layer, then convolved with the PSF by FFT.

    The kernel is the Moffat sampled at pixel centres (normalised to 1): the
    intrinsic layer is already pixel-integrated, so the result is the
    profile ⊗ PSF ⊗ pixel to second order in the pixel size, and every
    galaxy keeps exactly its flux (light falling off the chip excepted).
    """
    ny, nx = shape
    pad = int(np.ceil(moffat_radius(2e-4, fwhm, beta)))
    layer_shape = (ny + 2 * pad, nx + 2 * pad)
    idx, val = _render_galaxies(
        np.asarray(galaxies["x"]) + pad,
        np.asarray(galaxies["y"]) + pad,
        np.asarray(galaxies["flux"]),
        np.asarray(galaxies["half_light_radius"]),
        np.asarray(galaxies["sersic_n"]),
        np.asarray(galaxies["axis_ratio"]),
        np.radians(np.asarray(galaxies["pa_pixel"])),
        layer_shape,
    )
    layer = _accumulate(idx, val, layer_shape).astype(np.float32)
    del idx, val
    grid = np.arange(-pad, pad + 1, dtype=float)
    kernel = moffat_profile(grid[None, :], grid[:, None], moffat_alpha(fwhm, beta), beta)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    smooth = signal.oaconvolve(layer, kernel, mode="same")[pad:-pad, pad:-pad]
    return np.maximum(smooth, 0.0)


def _place_sources(
    sky: Sky, wcs: WCS, config: SimConfig, epoch: float, magzero: float, fwhm: float
) -> Table:
    """Sky objects landing on (or within ``margin`` px of) the chip: pixel positions, fluxes."""
    nx, ny = config.size
    m = config.margin
    slack = m + config.sip_corner_shift + 5.0

    def on_chip(ra, dec):
        """Candidates by the linear WCS, then exact pixels through the SIP inverse."""
        lx, ly = wcs.wcs_world2pix(ra, dec, 0)
        near = np.flatnonzero(
            (lx > -slack) & (lx < nx - 1 + slack) & (ly > -slack) & (ly < ny - 1 + slack)
        )
        x, y = _world_to_pixel(wcs, ra[near], dec[near])
        keep = (x >= -0.5 - m) & (x < nx - 0.5 + m) & (y >= -0.5 - m) & (y < ny - 0.5 + m)
        return near[keep], x[keep], y[keep]

    st = sky.stars
    s_ra, s_dec = propagate(
        st["ra"], st["dec"], st["pmra"], st["pmdec"], epoch - config.refcat_epoch
    )
    s_idx, s_x, s_y = on_chip(np.asarray(s_ra), np.asarray(s_dec))
    ga = sky.galaxies
    g_idx, g_x, g_y = on_chip(np.asarray(ga["ra"], float), np.asarray(ga["dec"], float))

    c0, c1, c2 = config.colorterm
    r = np.concatenate([np.asarray(st["r_mag"])[s_idx], np.asarray(ga["r_mag"])[g_idx]])
    i = np.concatenate([np.asarray(st["i_mag"])[s_idx], np.asarray(ga["i_mag"])[g_idx]])
    colour = r - i
    mag = r + c0 + c1 * colour + c2 * colour**2
    n_s, n_g = s_idx.size, g_idx.size

    # galaxy major-axis angle in pixel space from its sky PA (east of north), via the CD matrix
    pa = np.radians(np.asarray(ga["pa"])[g_idx])
    vec = np.linalg.solve(wcs.wcs.cd, np.stack([np.sin(pa), np.cos(pa)]))
    pa_pixel = np.degrees(np.arctan2(vec[1], vec[0])) % 180.0

    table = Table()
    table["id"] = np.concatenate([np.asarray(st["id"])[s_idx], np.asarray(ga["id"])[g_idx]])
    table["ref_id"] = np.concatenate(
        [np.asarray(st["ref_id"])[s_idx], np.full(n_g, -1, np.int64)]
    ).astype(np.int64)
    table["is_star"] = np.concatenate([np.ones(n_s, bool), np.zeros(n_g, bool)])
    x = np.concatenate([s_x, g_x])
    y = np.concatenate([s_y, g_y])
    table["x"] = x
    table["y"] = y
    table["in_chip"] = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    table["ra"] = np.concatenate([np.asarray(s_ra)[s_idx], np.asarray(ga["ra"])[g_idx]])
    table["dec"] = np.concatenate([np.asarray(s_dec)[s_idx], np.asarray(ga["dec"])[g_idx]])
    table["flux"] = config.exptime * 10.0 ** (-0.4 * (mag - magzero))
    table["mag"] = mag
    table["r_mag"] = r
    table["i_mag"] = i
    table["pmra"] = np.concatenate([np.asarray(st["pmra"])[s_idx], np.zeros(n_g)])
    table["pmdec"] = np.concatenate([np.asarray(st["pmdec"])[s_idx], np.zeros(n_g)])
    table["half_light_radius"] = np.concatenate(
        [np.zeros(n_s), np.asarray(ga["hlr"])[g_idx] / config.pixel_scale]
    )
    table["sersic_n"] = np.concatenate([np.zeros(n_s), np.asarray(ga["sersic_n"])[g_idx]])
    table["axis_ratio"] = np.concatenate([np.ones(n_s), np.asarray(ga["axis_ratio"])[g_idx]])
    table["pa_pixel"] = np.concatenate([np.zeros(n_s), pa_pixel])
    order = np.argsort(table["id"], kind="stable")
    return table[order]


def _snr(x, y, flux, fwhm, beta, order, sky_var, variance):
    """Optimal point-source S/N against the sky noise alone, and against the full variance."""
    if x.size == 0:
        return np.empty(0), np.empty(0)
    half = int(np.ceil(3.0 * fwhm)) + 1  # P² beyond 3 FWHM is < 1e-6 of Σ P²
    stamps, x0, y0 = moffat_stamps(x, y, half, fwhm, beta, order)
    ones = np.full((1, 1), sky_var)
    ny, nx = variance.shape
    sky_plane = np.broadcast_to(ones, (ny, nx))
    s_sky = _gather_sum(stamps, x0, y0, sky_plane)
    s_full = _gather_sum(stamps, x0, y0, variance)
    return flux * np.sqrt(s_sky), flux * np.sqrt(s_full)


def _any_bit_near(mask: np.ndarray, value: int, x, y, radius: int) -> np.ndarray:
    """Whether any pixel within ``radius`` (a square) of each position has the bit."""
    ny, nx = mask.shape
    cx = np.rint(x).astype(np.int64)
    cy = np.rint(y).astype(np.int64)
    found = np.zeros(cx.size, bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            r, c = cy + dy, cx + dx
            ok = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
            found[ok] |= (mask[r[ok], c[ok]] & value) != 0
    return found


def _icsrc(
    sources: Table,
    mask,
    bit,
    guess_wcs: WCS,
    config: SimConfig,
    fwhm: float,
    apcorr_psf: float,
    rng: np.random.Generator,
) -> IcSrc:
    """Characterization's bright-source catalog: noisy truth, first-guess sky positions, flags."""
    nx, ny = config.size
    snr_full = np.asarray(sources["snr_full"])
    bright = np.asarray(sources["in_chip"]) & (np.asarray(sources["snr"]) > config.icsrc_snr)
    sel = np.flatnonzero(bright)
    x = np.asarray(sources["x"])
    y = np.asarray(sources["y"])
    flux = np.asarray(sources["flux"])
    is_star = np.asarray(sources["is_star"])
    hlr = np.asarray(sources["half_light_radius"])

    # PSF flux: total / apcorr for stars; a Gaussian-approximation deficit for galaxies
    sigma_p = fwhm / 2.3548
    sigma_g2 = (hlr / 1.1774) ** 2
    psf_flux = np.where(
        is_star, flux / apcorr_psf, flux * 2.0 * sigma_p**2 / (2.0 * sigma_p**2 + sigma_g2)
    )
    sel_snr = snr_full[sel]
    err = psf_flux[sel] / sel_snr
    meas_flux = psf_flux[sel] + err * rng.standard_normal(sel.size)
    pos_err = 0.6 * fwhm / sel_snr * (1.0 + hlr[sel] / sigma_p) + 0.002
    mx = x[sel] + pos_err * rng.standard_normal(sel.size)
    my = y[sel] + pos_err * rng.standard_normal(sel.size)
    if sel.size:
        ra, dec = guess_wcs.all_pix2world(mx, my, 0)
    else:
        ra = dec = np.empty(0)

    # isolation: nothing detectable within 3 FWHM, nothing brighter within 20 px
    detectable = np.flatnonzero(np.asarray(sources["snr"]) > 5.0)
    isolated = np.ones(sel.size, bool)
    if sel.size and detectable.size:
        mine = cKDTree(np.column_stack([x[sel], y[sel]]))
        theirs = cKDTree(np.column_stack([x[detectable], y[detectable]]))
        pairs = mine.sparse_distance_matrix(theirs, max(3.0 * fwhm, 20.0), output_type="ndarray")
        me, other = sel[pairs["i"]], detectable[pairs["j"]]
        spoils = (me != other) & ((pairs["v"] < 3.0 * fwhm) | (flux[other] > flux[me]))
        isolated[pairs["i"][spoils]] = False
    half_psf = config.psf_size // 2
    away = (
        (x[sel] > half_psf)
        & (x[sel] < nx - 1 - half_psf)
        & (y[sel] > half_psf)
        & (y[sel] < ny - 1 - half_psf)
    )
    clean = ~_any_bit_near(mask, int(bit["CR"] | bit["SAT"] | bit["BAD"]), x[sel], y[sel], 3)
    candidate = (
        is_star[sel]
        & isolated
        & away
        & clean
        & ~np.asarray(sources["saturated"])[sel]
        & ~np.asarray(sources["near_bad_column"])[sel]
    )
    draw = rng.uniform(size=sel.size)
    used = candidate & (draw < 0.8)
    reserved = candidate & (draw >= 0.8) & (draw < 0.9)

    order = np.lexsort((mx, my))  # detection order: by row
    ids = np.empty(sel.size, np.int64)
    ids[order] = np.arange(1, sel.size + 1)
    icsrc_id = np.full(len(sources), -1, np.int64)
    icsrc_id[sel] = ids
    sources["icsrc_id"] = icsrc_id
    return IcSrc(
        id=ids[order],
        x=mx[order],
        y=my[order],
        ra=np.asarray(ra)[order],
        dec=np.asarray(dec)[order],
        psf_flux=meas_flux[order],
        psf_flux_err=err[order],
        calib_psf_candidate=candidate[order],
        calib_psf_used=used[order],
        calib_psf_reserved=reserved[order],
    )


# ---------------------------------------------------------------- survey and files


def _plan(n: int, config: SimConfig, seed: int):
    """Pointings, the sky and one seed per exposure: what fixes a survey before any pixel."""
    ss_point, ss_sky, *ss_exp = np.random.SeedSequence(seed).spawn(n + 2)
    pointings = _pointings(config, n, np.random.default_rng(ss_point))
    return pointings, make_sky(config, pointings, ss_sky), ss_exp


def simulate_survey(n: int, config: SimConfig | None = None, seed: int = 0) -> Survey:
    """``n`` exposures of one sky patch and the reference catalog covering all of them."""
    config = config or SimConfig()
    pointings, sky, seeds = _plan(n, config, seed)
    exposures = [
        simulate_exposure(config, seeds[i], index=i, sky=sky, pointing=pointings[i])
        for i in range(n)
    ]
    return Survey(exposures=exposures, refcat=sky.refcat, sky=sky, config=config)


_TRUTH_KEYS = {
    # attribute: (header key, comment)
    "expid": ("EXPID", "exposure id"),
    "magzero": ("MAGZERO", "mag = MAGZERO - 2.5 log10(flux_e / EXPTIME)"),
    "fwhm": ("FWHM", "Moffat FWHM, px"),
    "moffat_beta": ("MOFFBETA", "Moffat beta"),
    "sky": ("SKYLEVEL", "e-/px subtracted sky"),
    "read_noise": ("RDNOISE", "e-"),
    "sky_variance": ("SKYVAR", "sky + read_noise^2, e-^2"),
    "exptime": ("EXPTIME", "s"),
    "mjd_obs": ("MJD-OBS", "mid-exposure MJD"),
    "epoch": ("EPOCHOBS", "Julian year of MJD-OBS"),
    "saturation": ("SATLEVEL", "image-unit clip level (saturation - sky)"),
    "bad_column": ("BADCOL", "0-based x of the bad column, -1 none"),
    "apcorr_psf": ("APCORPSF", "psf_flux aperture correction = 1/f_in"),
    "apcorr_ap12": ("APCOR12", "ap_flux_12 aperture correction"),
    "first_guess_offset": ("FGOFFSET", "arcsec, first guess - true at chip centre"),
    "first_guess_rotation": ("FGROT", "deg, first-guess rotation"),
    "sip_corner_shift": ("SIPSHIFT", "px, largest SIP displacement at corners"),
}


def write_truth(truth: Truth, path: str | os.PathLike[str]) -> None:
    """Primary header: true WCS + scalars (_TRUTH_KEYS, COLORTERM1..3, IMNX, IMNY); 'SOURCES'."""
    header = truth.wcs.to_header(relax=True)
    for attr, (key, comment) in _TRUTH_KEYS.items():
        header[key] = (getattr(truth, attr), comment)
    for k, value in enumerate(truth.colorterm, start=1):
        header[f"HIERARCH COLORTERM{k}"] = (float(value), f"c{k - 1}")
    header["IMNX"] = (truth.size[0], "image width (px)")
    header["IMNY"] = (truth.size[1], "image height (px)")
    table_hdu = fits.table_to_hdu(truth.sources)
    table_hdu.name = "SOURCES"
    fits.HDUList([fits.PrimaryHDU(header=header), table_hdu]).writeto(path, overwrite=True)


def read_truth(path: str | os.PathLike[str]) -> Truth:
    """Inverse of :func:`write_truth`."""
    with fits.open(path) as hdul:
        header = hdul[0].header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, relax=True)
        size = (int(header["IMNX"]), int(header["IMNY"]))
        wcs.pixel_shape = size
        values = {attr: header[key] for attr, (key, _) in _TRUTH_KEYS.items()}
        data = hdul["SOURCES"].data
        sources = Table(
            {
                name: np.asarray(data[name]).astype(data[name].dtype.newbyteorder("="))
                for name in data.names
            }
        )
    for attr in ("expid", "bad_column"):
        values[attr] = int(values[attr])
    for attr in set(values) - {"expid", "bad_column"}:
        values[attr] = float(values[attr])
    colorterm = tuple(float(header[f"COLORTERM{k}"]) for k in (1, 2, 3))
    return Truth(wcs=wcs, colorterm=colorterm, size=size, sources=sources, **values)


def write_simulation(
    outdir: Path,
    n: int,
    size: tuple[int, int],
    seed: int,
    *,
    compress: bool = False,
    config: SimConfig | None = None,
) -> list[Path]:
    """Write exp_<EXPID>.fits, exp_<EXPID>.truth.fits per exposure and refcat.fits.

    The same files as :func:`simulate_survey` would give, made and written one
    exposure at a time so that memory does not grow with ``n``.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config or SimConfig(), size=(int(size[0]), int(size[1])))
    pointings, sky, seeds = _plan(n, config, seed)
    paths: list[Path] = []
    for i in range(n):
        exposure, truth = simulate_exposure(
            config, seeds[i], index=i, sky=sky, pointing=pointings[i]
        )
        exp_path = outdir / f"exp_{truth.expid}.fits"
        truth_path = outdir / f"exp_{truth.expid}.truth.fits"
        write_exposure(exposure, exp_path, compress=compress)
        write_truth(truth, truth_path)
        paths += [exp_path, truth_path]
    refcat_path = outdir / "refcat.fits"
    sky.refcat.write(refcat_path, format="fits", overwrite=True)
    paths.append(refcat_path)
    return paths
