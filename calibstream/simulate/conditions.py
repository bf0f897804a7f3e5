"""One exposure's observing conditions: seeing, transparency, airmass and time."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calibstream.detection.psfmodel import quadrature_order
from calibstream.simulate.config import SimConfig
from calibstream.simulate.geometry import julian_year


@dataclass(frozen=True)
class Conditions:
    """What the sky and the clock gave one exposure, and the constants that follow from it."""

    fwhm: float  # px, Moffat FWHM
    beta: float  # Moffat beta
    magzero: float  # mag = MAGZERO - 2.5 log10(total flux / EXPTIME), colour term applied
    airmass: float
    mjd: float
    epoch: float  # Julian year of the MJD
    sky_var: float  # sky + read_noise²: the variance of a source-free pixel
    sky_sigma: float
    order: int  # Gauss-Legendre nodes per pixel axis integrating the PSF well enough


def draw_conditions(config: SimConfig, rng: np.random.Generator, index: int) -> Conditions:
    """Seeing, then zero-point, then airmass from ``rng``; exposures are ~100 s apart."""
    beta = config.moffat_beta
    fwhm = float(config.fwhm * max(0.3, 1.0 + config.fwhm_jitter * rng.standard_normal()))
    magzero = float(config.zeropoint + config.zeropoint_scatter * rng.standard_normal())
    airmass = float(config.airmass + 0.05 * rng.uniform(-1.0, 1.0))
    mjd = config.mjd_obs + 0.0012 * index
    sky_var = config.sky + config.read_noise**2
    return Conditions(
        fwhm=fwhm,
        beta=beta,
        magzero=magzero,
        airmass=airmass,
        mjd=mjd,
        epoch=julian_year(mjd),
        sky_var=sky_var,
        sky_sigma=math.sqrt(sky_var),
        order=quadrature_order(fwhm, beta),
    )
