"""Characterization's bright-source catalog (ICSRC), as the pipeline's input would hold it.

The truth of the sources above ``icsrc_snr``, measured with the noise of
their true S/N, placed on the sky by the first-guess WCS, numbered in
detection (row) order, and flagged as PSF-star candidates, used or reserved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from calibstream.io.exposure import IcSrc
from calibstream.simulate.config import MASK_BITS, SimConfig
from calibstream.simulate.sources import any_bit_near

#: Gaussian sigma of a FWHM, and of a half-light radius.
_FWHM_PER_SIGMA = 2.3548
_HLR_PER_SIGMA = 1.1774


@dataclass(frozen=True)
class _Measured:
    """The selected sources as characterization measured them."""

    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray  # by the first-guess WCS
    dec: np.ndarray
    psf_flux: np.ndarray
    psf_flux_err: np.ndarray


@dataclass(frozen=True)
class _PsfFlags:
    """Characterization's PSF-star selection: candidates, 80 % of them used, 10 % reserved."""

    candidate: np.ndarray
    used: np.ndarray
    reserved: np.ndarray


def make_icsrc(
    sources: Table,
    mask: np.ndarray,
    guess_wcs: WCS,
    config: SimConfig,
    fwhm: float,
    apcorr_psf: float,
    rng: np.random.Generator,
) -> IcSrc:
    """Characterization's bright-source catalog: noisy truth, first-guess sky positions, flags.

    Also numbers the truth's ``icsrc_id`` column (-1 for sources not in it).
    """
    bright = np.asarray(sources["in_chip"]) & (np.asarray(sources["snr"]) > config.icsrc_snr)
    sel = np.flatnonzero(bright)
    meas = _measure(sources, sel, guess_wcs, fwhm, apcorr_psf, rng)
    flags = _psf_flags(sources, sel, mask, config, fwhm, rng)
    order = np.lexsort((meas.x, meas.y))  # detection order: by row
    ids = np.empty(sel.size, np.int64)
    ids[order] = np.arange(1, sel.size + 1)
    icsrc_id = np.full(len(sources), -1, np.int64)
    icsrc_id[sel] = ids
    sources["icsrc_id"] = icsrc_id
    return IcSrc(
        id=ids[order],
        x=meas.x[order],
        y=meas.y[order],
        ra=meas.ra[order],
        dec=meas.dec[order],
        psf_flux=meas.psf_flux[order],
        psf_flux_err=meas.psf_flux_err[order],
        calib_psf_candidate=flags.candidate[order],
        calib_psf_used=flags.used[order],
        calib_psf_reserved=flags.reserved[order],
    )


def _psf_flux(sources: Table, fwhm: float, apcorr_psf: float) -> np.ndarray:
    """True PSF flux: total / apcorr for stars; a Gaussian-approximation deficit for galaxies."""
    flux = np.asarray(sources["flux"])
    sigma_p = fwhm / _FWHM_PER_SIGMA
    sigma_g2 = (np.asarray(sources["half_light_radius"]) / _HLR_PER_SIGMA) ** 2
    return np.where(
        np.asarray(sources["is_star"]),
        flux / apcorr_psf,
        flux * 2.0 * sigma_p**2 / (2.0 * sigma_p**2 + sigma_g2),
    )


def _measure(
    sources: Table,
    sel: np.ndarray,
    guess_wcs: WCS,
    fwhm: float,
    apcorr_psf: float,
    rng: np.random.Generator,
) -> _Measured:
    """Flux, then x, then y of the selected sources drawn with the errors of their true S/N."""
    snr = np.asarray(sources["snr_full"])[sel]
    hlr = np.asarray(sources["half_light_radius"])[sel]
    sigma_p = fwhm / _FWHM_PER_SIGMA
    psf_flux = _psf_flux(sources, fwhm, apcorr_psf)[sel]
    err = psf_flux / snr
    meas_flux = psf_flux + err * rng.standard_normal(sel.size)
    pos_err = 0.6 * fwhm / snr * (1.0 + hlr / sigma_p) + 0.002
    mx = np.asarray(sources["x"])[sel] + pos_err * rng.standard_normal(sel.size)
    my = np.asarray(sources["y"])[sel] + pos_err * rng.standard_normal(sel.size)
    if sel.size:
        ra, dec = guess_wcs.all_pix2world(mx, my, 0)
    else:
        ra = dec = np.empty(0)
    return _Measured(mx, my, np.asarray(ra), np.asarray(dec), meas_flux, err)


def _isolated(sources: Table, sel: np.ndarray, fwhm: float) -> np.ndarray:
    """Nothing detectable within 3 FWHM, nothing brighter within max(3 FWHM, 20 px)."""
    x = np.asarray(sources["x"])
    y = np.asarray(sources["y"])
    flux = np.asarray(sources["flux"])
    detectable = np.flatnonzero(np.asarray(sources["snr"]) > 5.0)
    isolated = np.ones(sel.size, bool)
    if sel.size and detectable.size:
        mine = cKDTree(np.column_stack([x[sel], y[sel]]))
        theirs = cKDTree(np.column_stack([x[detectable], y[detectable]]))
        pairs = mine.sparse_distance_matrix(theirs, max(3.0 * fwhm, 20.0), output_type="ndarray")
        me, other = sel[pairs["i"]], detectable[pairs["j"]]
        spoils = (me != other) & ((pairs["v"] < 3.0 * fwhm) | (flux[other] > flux[me]))
        isolated[pairs["i"][spoils]] = False
    return isolated


def _psf_flags(
    sources: Table,
    sel: np.ndarray,
    mask: np.ndarray,
    config: SimConfig,
    fwhm: float,
    rng: np.random.Generator,
) -> _PsfFlags:
    """Isolated stars whose PSF stamp fits on the chip, clear of CR, SAT and BAD pixels."""
    nx, ny = config.size
    x = np.asarray(sources["x"])[sel]
    y = np.asarray(sources["y"])[sel]
    half_psf = config.psf_size // 2
    away = (x > half_psf) & (x < nx - 1 - half_psf) & (y > half_psf) & (y < ny - 1 - half_psf)
    spoilt = int(MASK_BITS["CR"] | MASK_BITS["SAT"] | MASK_BITS["BAD"])
    candidate = (
        np.asarray(sources["is_star"])[sel]
        & _isolated(sources, sel, fwhm)
        & away
        & ~any_bit_near(mask, spoilt, x, y, 3)
        & ~np.asarray(sources["saturated"])[sel]
        & ~np.asarray(sources["near_bad_column"])[sel]
    )
    draw = rng.uniform(size=sel.size)
    used = candidate & (draw < 0.8)
    reserved = candidate & (draw >= 0.8) & (draw < 0.9)
    return _PsfFlags(candidate, used, reserved)
