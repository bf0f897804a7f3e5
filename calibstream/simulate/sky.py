"""The survey's sky: where the exposures point, and the true stars and galaxies they see.

All sources live on one patch of sky (:class:`Sky`, made once per survey), so
overlapping exposures see the same stars and galaxies and one reference
catalog covers them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from calibstream.simulate.config import REFCAT_ID_BASE, REFERENCE_AREA, SimConfig
from calibstream.simulate.geometry import tan_deproject, tan_project
from calibstream.simulate.refcat import make_refcat


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
class _Patch:
    """The tangent-plane box (arcsec about ``center``) holding every chip plus a margin."""

    center: tuple[float, float]
    xi: tuple[float, float]
    eta: tuple[float, float]

    @property
    def area(self) -> float:
        """Square arcseconds: the source counts scale with it."""
        return (self.xi[1] - self.xi[0]) * (self.eta[1] - self.eta[0])

    def uniform_positions(self, rng: np.random.Generator, n: int):
        """``n`` (ra, dec) uniform on the patch; xi is drawn before eta."""
        xi = rng.uniform(self.xi[0], self.xi[1], n)
        eta = rng.uniform(self.eta[0], self.eta[1], n)
        return tan_deproject(xi, eta, *self.center)


def _patch(config: SimConfig, pointings: list[Pointing]) -> _Patch:
    """The box around all pointings, wide enough for a chip at any rotation (plus 1')."""
    ra0, dec0 = config.center
    nx, ny = config.size
    radius = 0.5 * math.hypot(nx, ny) * config.pixel_scale + 60.0  # arcsec, chip + margin
    xi, eta = tan_project(
        np.array([p.ra for p in pointings]), np.array([p.dec for p in pointings]), ra0, dec0
    )
    return _Patch(
        center=(ra0, dec0),
        xi=(xi.min() - radius, xi.max() + radius),
        eta=(eta.min() - radius, eta.max() + radius),
    )


def _power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float):
    """Magnitudes with dN/dm ∝ 10^(slope·m) on [lo, hi] (inverse CDF)."""
    u = rng.uniform(size=n)
    if slope == 0.0 or hi <= lo:
        return lo + (hi - lo) * u
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def make_sky(
    config: SimConfig, pointings: list[Pointing], seed: int | np.random.SeedSequence = 0
) -> Sky:
    """Stars and galaxies covering every pointing (plus a margin), and their reference catalog."""
    rng = np.random.default_rng(seed)
    patch = _patch(config, pointings)
    area_px = patch.area / config.pixel_scale**2
    per_px = config.n_sources / REFERENCE_AREA
    n_star = int(rng.poisson(per_px * config.star_fraction * area_px))
    n_gal = int(rng.poisson(per_px * (1.0 - config.star_fraction) * area_px))
    stars = _make_stars(rng, n_star, patch, config)
    galaxies = _make_galaxies(rng, n_gal, n_star + 1, patch, config)
    refcat = make_refcat(stars[np.asarray(stars["ref_id"]) >= 0], rng, config)
    return Sky(center=patch.center, stars=stars, galaxies=galaxies, refcat=refcat)


def _make_stars(rng: np.random.Generator, n: int, patch: _Patch, config: SimConfig) -> Table:
    """Stars at their true refcat-epoch positions, coloured along a rough stellar locus.

    Those brighter than the refcat limit get a Gaia-like ``ref_id`` (-1 for the others).
    """
    ra, dec = patch.uniform_positions(rng, n)
    r = _power_law_mags(rng, n, *config.star_mag_range, config.star_count_slope)
    ri = -0.2 + 1.7 * rng.beta(1.3, 3.0, n)
    gr = np.minimum(0.15 + 1.9 * ri, 1.55) + 0.03 * rng.standard_normal(n)
    fast = rng.uniform(size=n) < config.pm_fast_fraction
    pm_sigma = np.where(fast, config.pm_fast_sigma, config.pm_sigma)
    pmra = pm_sigma * rng.standard_normal(n)
    pmdec = pm_sigma * rng.standard_normal(n)
    in_ref = r < config.refcat_mag_limit
    ref_index = np.cumsum(in_ref) - 1
    ref_id = np.where(in_ref, REFCAT_ID_BASE + 1_000_003 * ref_index, -1).astype(np.int64)
    return Table(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "ref_id": ref_id,
            "ra": ra,
            "dec": dec,
            "pmra": pmra,
            "pmdec": pmdec,
            "r_mag": r,
            "i_mag": r - ri,
            "g_mag": r + gr,
        }
    )


def _make_galaxies(
    rng: np.random.Generator, n: int, first_id: int, patch: _Patch, config: SimConfig
) -> Table:
    """Exponential and de Vaucouleurs galaxies, log-uniform in size, ids from ``first_id``."""
    ra, dec = patch.uniform_positions(rng, n)
    r = _power_law_mags(rng, n, *config.galaxy_mag_range, config.galaxy_count_slope)
    lo_h, hi_h = config.galaxy_hlr_range
    hlr_px = np.exp(rng.uniform(math.log(lo_h), math.log(hi_h), n))
    devauc = rng.uniform(size=n) < config.galaxy_devauc_fraction
    # the draws below happen in the order of the keys
    return Table(
        {
            "id": np.arange(first_id, first_id + n, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "r_mag": r,
            "i_mag": r - rng.uniform(0.0, 0.8, n),
            "hlr": hlr_px * config.pixel_scale,  # arcsec, major axis
            "sersic_n": np.where(devauc, 4.0, 1.0),
            "axis_ratio": rng.uniform(*config.galaxy_axis_ratio_range, n),
            "pa": rng.uniform(0.0, 180.0, n),  # deg east of north
        }
    )


def dithered_pointings(config: SimConfig, n: int, rng: np.random.Generator) -> list[Pointing]:
    """Dithered, randomly rotated pointings that overlap or neighbour each other."""
    nx, ny = config.size
    half = config.dither * max(nx, ny) * config.pixel_scale
    xi = rng.uniform(-half, half, n) if n > 1 else np.zeros(n)
    eta = rng.uniform(-half, half, n) if n > 1 else np.zeros(n)
    ra, dec = tan_deproject(xi, eta, *config.center)
    rot = rng.uniform(0.0, 360.0, n)
    return [Pointing(float(a), float(d), float(t)) for a, d, t in zip(ra, dec, rot, strict=True)]
