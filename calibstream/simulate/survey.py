"""Surveys: exposures of one sky patch with the reference catalog covering them, and their files.

A survey's seed fixes, before any pixel, the pointings, the sky and one seed
per exposure (:func:`_plan`), so :func:`write_simulation` writes the very
exposures :func:`simulate_survey` returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from calibstream.io.exposure import Exposure, write_exposure
from calibstream.simulate.config import SimConfig
from calibstream.simulate.exposure import simulate_exposure
from calibstream.simulate.sky import Pointing, Sky, dithered_pointings, make_sky
from calibstream.simulate.truth import Truth, write_truth


@dataclass(frozen=True)
class Survey:
    """Simulated exposures with their truth, and the one reference catalog covering them."""

    exposures: list[tuple[Exposure, Truth]]
    refcat: Table
    sky: Sky
    config: SimConfig = field(default_factory=SimConfig)


def _plan(
    n: int, config: SimConfig, seed: int
) -> tuple[list[Pointing], Sky, list[np.random.SeedSequence]]:
    """Pointings, the sky and one seed per exposure: what fixes a survey before any pixel."""
    ss_point, ss_sky, *ss_exp = np.random.SeedSequence(seed).spawn(n + 2)
    pointings = dithered_pointings(config, n, np.random.default_rng(ss_point))
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
