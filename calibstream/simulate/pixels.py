"""From the noiseless model to characterized pixels: noise, detection, saturation, defects.

The noise is exactly described by the variance plane (a Gaussian
approximation of sky + source Poisson + read noise). A bad column carries
garbage flagged BAD; cosmic rays are, as characterization left them,
interpolated over and flagged CR|INTRP (or, unrepaired, left in unflagged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calibstream.simulate.conditions import Conditions
from calibstream.simulate.config import MASK_BITS, SimConfig


@dataclass(frozen=True)
class Pixels:
    """The three planes of an exposure (arrays filled in place as defects are added)."""

    image: np.ndarray  # float32, e-, sky subtracted
    mask: np.ndarray  # int32, MASK_PLANES bits
    variance: np.ndarray  # float32, e-²


def expose(model: np.ndarray, config: SimConfig, cond: Conditions, seed) -> Pixels:
    """Noise drawn from ``seed`` on the model, DETECTED where the model is bright, SAT clipped.

    The caller passes ``model`` without keeping it: it is freed once the mask is made.
    """
    shape = model.shape
    variance = (model + cond.sky_var).astype(np.float32)
    image = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if config.add_noise:
        image *= np.sqrt(variance)
        image += model
    else:
        image[...] = model
    detected = model > config.detect_nsigma * cond.sky_sigma
    del model
    mask = np.zeros(shape, dtype=np.int32)
    mask[detected] |= MASK_BITS["DETECTED"]
    del detected
    clip = config.saturation - config.sky
    saturated = image > clip
    image[saturated] = clip
    mask[saturated] |= MASK_BITS["SAT"]
    return Pixels(image=image, mask=mask, variance=variance)


def add_defects(pixels: Pixels, config: SimConfig, rng: np.random.Generator) -> int:
    """The bad column, then the cosmic rays, from ``rng``; returns the column's x (-1: none)."""
    bad_x = _add_bad_column(pixels, config, rng)
    _add_cosmic_rays(pixels, config, rng, bad_x)
    return bad_x


def _add_bad_column(pixels: Pixels, config: SimConfig, rng: np.random.Generator) -> int:
    """Garbage added to one column away from the edges, flagged BAD (-1 when switched off)."""
    if not config.bad_column:
        return -1
    nx = config.size[0]
    bad_x = int(rng.integers(100, nx - 100)) if nx > 200 else nx // 2
    pixels.image[:, bad_x] += config.bad_column_value
    pixels.mask[:, bad_x] |= MASK_BITS["BAD"]
    return bad_x


def _add_cosmic_rays(
    pixels: Pixels, config: SimConfig, rng: np.random.Generator, bad_x: int
) -> None:
    """Cosmic-ray hits, repaired from their row neighbours (not from the bad column) or not."""
    image, shape = pixels.image, pixels.image.shape
    rows, cols, deposit = _cosmic_rays(rng, config, shape)
    if not rows.size:
        return
    if not config.repair_cosmic_rays:
        np.add.at(image, (rows, cols), deposit)
        return
    exclude = np.zeros(shape, dtype=bool)
    if bad_x >= 0:
        exclude[:, bad_x] = True
    exclude[rows, cols] = True
    image[rows, cols] = _interpolate_rows(image, rows, cols, exclude)
    pixels.mask[rows, cols] |= MASK_BITS["CR"] | MASK_BITS["INTRP"]


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
