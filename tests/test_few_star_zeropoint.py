"""Zero-points from 1–5 stars: flagged, with an error that covers the truth (issue 16).

Stars are drawn with S/N 50–200, reference errors 0.01 mag and an intrinsic
scatter of 0.015 mag the stated errors do not include; 3000 exposures per
star count. Without the floor on σ_int, two stars' Paule–Mandel estimate
rests on one difference and the pulls are too wide.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibstream.config import ColorTerm, PhotometryConfig
from calibstream.photometry.photocal import fit_zeropoint

TRUE_ZP = 27.0
EXPTIME = 30.0
INTRINSIC = 0.015
TERM = ColorTerm("r", "i")


def pulls(n_stars: int, config: PhotometryConfig, trials: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed + n_stars)
    out, flagged = np.empty(trials), 0
    for k in range(trials):
        mag = rng.uniform(16, 19, n_stars)
        snr = rng.uniform(50, 200, n_stars)
        ref_err = np.full(n_stars, 0.01)
        true_inst = mag + rng.normal(0, INTRINSIC, n_stars)  # scatter nobody states
        flux = EXPTIME * 10 ** (-0.4 * (true_inst - TRUE_ZP))
        flux_err = flux / snr
        flux = flux + rng.normal(0, 1, n_stars) * flux_err
        ref = mag + rng.normal(0, 1, n_stars) * ref_err
        result = fit_zeropoint(
            flux, flux_err, EXPTIME, ref, ref_err, ref - 0.3, np.full(n_stars, 0.005), TERM,
            np.ones(n_stars, bool), k, config,
        )  # fmt: skip
        assert result.nobj == n_stars
        flagged += result.few_stars
        out[k] = (result.magzero - TRUE_ZP) / result.magzero_err
    return out, flagged


@pytest.mark.parametrize("n_stars", [1, 2, 3, 5])
def test_few_star_zeropoints_are_flagged_and_cover_the_truth(n_stars):
    found, flagged = pulls(n_stars, PhotometryConfig())
    width = float(np.std(found))
    inside = float(np.mean(np.abs(found) < 1.0))
    print(f"\n{n_stars} stars: pull width {width:.2f}, |pull| < 1 in {inside:.1%}")
    assert flagged == found.size
    assert 0.6 < width < 1.1 and inside > 0.6


def test_two_stars_without_the_floor_understate_the_error():
    found, _ = pulls(2, PhotometryConfig(few_sigma_int=0.0))
    width = float(np.std(found))
    print(f"\n2 stars, no floor: pull width {width:.2f}")
    assert width > 1.15


def test_one_star_has_no_scatter():
    rng = np.random.default_rng(1)
    flux = np.array([1e5])
    result = fit_zeropoint(
        flux, flux / 100, EXPTIME, np.array([17.0]), np.array([0.01]), np.array([16.7]),
        np.array([0.01]), TERM, np.ones(1, bool), int(rng.integers(1000)), PhotometryConfig(),
    )  # fmt: skip
    assert result.nobj == 1 and result.few_stars and math.isnan(result.magzero_rms)
    assert result.magzero_err == pytest.approx(math.hypot(1.0857 / 100, 0.01, 0.02), rel=1e-3)
