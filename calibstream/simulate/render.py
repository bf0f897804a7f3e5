"""The noiseless model: stars as pixel-integrated Moffats, galaxies as Sérsics ⊗ the PSF.

Stars are rendered on stamps large enough to lose < 2e-4 of their flux;
galaxies are Sérsic profiles truncated at 5 (n=1) or 8 (n=4) half-light
radii, normalised so that the truncated profile holds exactly their flux.
Sources are rendered as flat (pixel index, value) pairs summed by
``np.bincount``, in batches of equal stamp size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy import signal, special

from calibstream.detection.psfmodel import (
    gauss_legendre,
    integrate_pixels,
    moffat_alpha,
    moffat_profile,
    moffat_radius,
    moffat_stamps,
)
from calibstream.simulate.conditions import Conditions

#: Truncation of the Sérsic profiles, in half-light radii (n=1, n=4).
SERSIC_TRUNCATION = {1.0: 5.0, 4.0: 8.0}


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


@dataclass(frozen=True)
class _Sersic:
    """One Sérsic index with its b_n (half the light within re) and its truncation in re."""

    n: float
    b: float
    trunc: float

    @classmethod
    def of(cls, n: float) -> _Sersic:
        """The family of index ``n``: b_n solves γ(2n, b) = Γ(2n)/2."""
        return cls(
            n, float(special.gammaincinv(2.0 * n, 0.5)), SERSIC_TRUNCATION.get(float(n), 6.0)
        )

    def profile(self, dx, dy, re, qq, cos, sin):
        """exp(-b (r/re)^(1/n)) at pixel offsets, axis ratio qq, zero beyond trunc·re."""
        n, b, trunc = self.n, self.b, self.trunc
        major = dx * cos + dy * sin
        minor = (dy * cos - dx * sin) / qq
        rr = np.sqrt(major * major + minor * minor) / re
        root = rr if n == 1 else np.sqrt(np.sqrt(rr)) if n == 4 else rr ** (1.0 / n)
        return np.where(rr <= trunc, np.exp(-b * root), 0.0)

    def total(self, re, q):
        """Analytic flux of the truncated profile (the pixel sums must add up to it)."""
        n, b, trunc = self.n, self.b, self.trunc
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


def _galaxy_halves(need: np.ndarray) -> np.ndarray:
    """Half-sizes on a √2 ladder (4, 6, 8, 12, 16, 23, ...): few distinct stamp shapes."""
    return np.maximum(4, np.ceil(2.0 ** (np.ceil(2 * np.log2(need)) / 2))).astype(np.int64)


def _galaxy_stamps(sersic: _Sersic, x, y, flux, hlr, q, phi, half: int):
    """Stamps of galaxies of one index and size, each holding exactly its ``flux``.

    Wings use 3×3 Gauss-Legendre nodes per pixel; the central 3×3 pixels use
    4×4 panels of 4×4 nodes; the pixel holding the centre (the n=4 cusp,
    which no quadrature resolves) gets the analytic total minus the rest.
    """
    params = (hlr, q, np.cos(phi), np.sin(phi))
    stamps, x0, y0 = integrate_pixels(sersic.profile, x, y, half, gauss_legendre(3), params)
    core = integrate_pixels(sersic.profile, x, y, 1, gauss_legendre(4, sub=4), params)[0]
    c = half
    stamps[:, c - 1 : c + 2, c - 1 : c + 2] = core
    total = sersic.total(hlr, q)
    stamps[:, c, c] = 0.0
    stamps[:, c, c] = np.maximum(total - stamps.sum(axis=(1, 2)), 0.0)
    stamps *= (flux / stamps.sum(axis=(1, 2)))[:, None, None]
    return stamps, x0, y0


def _render_galaxies(x, y, flux, hlr, sersic_n, q, phi, shape):
    """Flat (index, value) pairs of intrinsic (pre-PSF) galaxies in a layer of ``shape``."""
    indices, values = [], []
    for n in np.unique(sersic_n):
        sersic = _Sersic.of(n)
        of_n = np.flatnonzero(sersic_n == n)
        halves = _galaxy_halves(np.ceil(sersic.trunc * hlr[of_n]).astype(np.int64) + 1)
        for half in np.unique(halves):
            sel = of_n[halves == half]
            stamps, x0, y0 = _galaxy_stamps(
                sersic, x[sel], y[sel], flux[sel], hlr[sel], q[sel], phi[sel], int(half)
            )
            idx, val = _scatter(stamps, x0, y0, shape)
            indices.append(idx)
            values.append(val)
    return indices, values


def _accumulate(indices, values, shape) -> np.ndarray:
    """The image of ``shape`` holding the sum of all (index, value) pairs."""
    if not indices:
        return np.zeros(shape)
    flat = np.bincount(
        np.concatenate(indices), weights=np.concatenate(values), minlength=shape[0] * shape[1]
    )
    return flat.reshape(shape)


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


def noiseless_model(sources: Table, cond: Conditions, shape: tuple[int, int]) -> np.ndarray:
    """The image in e- without noise: stars rendered directly, galaxies through an FFT."""
    x = np.asarray(sources["x"])
    y = np.asarray(sources["y"])
    flux = np.asarray(sources["flux"])
    is_star = np.asarray(sources["is_star"])
    stars = np.flatnonzero(is_star)
    idx, val = _render_stars(
        x[stars], y[stars], flux[stars], cond.fwhm, cond.beta, cond.order, cond.sky_sigma, shape
    )
    model = _accumulate(idx, val, shape)
    del idx, val
    gals = np.flatnonzero(~is_star)
    if gals.size:
        model += _galaxy_model(sources[gals], cond.fwhm, cond.beta, shape)
    return model
