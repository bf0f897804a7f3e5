"""Residual background: what characterization's subtraction left behind.

SExtractor's mesh estimator (sep): sigma-clipped mode per mesh cell, median
filtered over cells, bicubic spline between them. Bad pixels are masked so
that a bad column or a saturated star does not lift the sky around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep

from .arrays import writable_alias
from .config import BackgroundConfig


@dataclass(frozen=True)
class Background:
    """The background model at full resolution and its global noise level."""

    image: np.ndarray  # float32, same shape as the exposure
    global_level: float
    global_rms: float
    mesh_size: int
    filter_size: int


def estimate_background(
    image: np.ndarray, config: BackgroundConfig, masked: np.ndarray | None = None
) -> Background:
    """Background of ``image`` with the ``masked`` pixels (boolean) left out."""
    data = writable_alias(np.ascontiguousarray(image, dtype=np.float32))
    if masked is not None and not np.isfinite(data[masked]).all():
        # sep skips masked pixels, but non-finite values there (NO_DATA) must not leak in.
        data = np.where(masked, np.float32(0), data)
    bkg = sep.Background(
        data,
        mask=masked,
        bw=config.mesh_size,
        bh=config.mesh_size,
        fw=config.filter_size,
        fh=config.filter_size,
    )
    return Background(
        image=bkg.back(dtype=np.float32),
        global_level=float(bkg.globalback),
        global_rms=float(bkg.globalrms),
        mesh_size=config.mesh_size,
        filter_size=config.filter_size,
    )
