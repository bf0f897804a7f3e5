"""Photometric calibration judged against the simulator's true zero-point.

Sources are matched to the reference catalog through the simulator's truth
(no astrometry needed): each true star with a ``ref_id`` is paired with the
measured source within 1 px of its true position.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from calibstream.config import (
    DEFAULT_COLORTERMS,
    ColorTerm,
    Config,
    PhotometryConfig,
    load_config,
)
from calibstream.detection.pipeline import measure_exposure
from calibstream.errors import ConfigError, PhotometryError
from calibstream.photometry.photocal import (
    calibrated_magnitudes,
    fit_zeropoint,
    reserve_stars,
    select_calibration_stars,
)
from calibstream.simulate.config import SimConfig
from calibstream.simulate.survey import simulate_survey

MATCH_RADIUS = 1.0  # px


@dataclasses.dataclass
class Matched:
    """One measured exposure with its sources paired to refcat rows through the truth."""

    truth: object
    fwhm: float
    catalog: dict
    rows: np.ndarray  # catalog rows
    truth_rows: np.ndarray  # rows of truth.sources
    primary: np.ndarray  # r_mag, r_mag_err, i_mag, i_mag_err of the paired refcat rows
    primary_err: np.ndarray
    secondary: np.ndarray
    secondary_err: np.ndarray

    @property
    def colorterm(self) -> ColorTerm:
        return ColorTerm("r", "i", *self.truth.colorterm)

    def candidates(self, config: PhotometryConfig | None = None) -> np.ndarray:
        config = config or PhotometryConfig()
        return select_calibration_stars(self.catalog, self.fwhm, config)[self.rows]

    def fit(self, colorterm=None, config=None, flux=None, exposure_id=None):
        config = config or PhotometryConfig()
        return fit_zeropoint(
            self.catalog["psf_flux"][self.rows] if flux is None else flux,
            self.catalog["psf_flux_err"][self.rows],
            self.truth.exptime,
            self.primary,
            self.primary_err,
            self.secondary,
            self.secondary_err,
            colorterm or self.colorterm,
            self.candidates(config),
            self.truth.expid if exposure_id is None else exposure_id,
            config,
        )


def measure_and_match(exposure, truth, refcat) -> Matched:
    catalog = measure_exposure(exposure, Config()).catalog
    sources = truth.sources
    stars = np.flatnonzero((np.asarray(sources["ref_id"]) >= 0) & np.asarray(sources["in_chip"]))
    tree = cKDTree(np.column_stack([catalog["x"], catalog["y"]]))
    distance, rows = tree.query(np.column_stack([sources["x"][stars], sources["y"][stars]]))
    near = distance < MATCH_RADIUS
    stars, rows = stars[near], rows[near]
    _, first = np.unique(rows, return_index=True)  # one true star per source
    stars, rows = stars[first], rows[first]
    ref_ids = np.asarray(refcat["id"])
    ref_rows = np.searchsorted(ref_ids, np.asarray(sources["ref_id"])[stars])
    assert np.array_equal(ref_ids[ref_rows], np.asarray(sources["ref_id"])[stars])
    return Matched(
        truth=truth,
        fwhm=exposure.psf.fwhm,
        catalog=catalog,
        rows=rows,
        truth_rows=stars,
        primary=np.asarray(refcat["r_mag"], float)[ref_rows],
        primary_err=np.asarray(refcat["r_mag_err"], float)[ref_rows],
        secondary=np.asarray(refcat["i_mag"], float)[ref_rows],
        secondary_err=np.asarray(refcat["i_mag_err"], float)[ref_rows],
    )


@pytest.fixture(scope="module")
def big():
    """One full 4000×4072 chip with the default survey (galaxies, saturation, CRs, bad column)."""
    survey = simulate_survey(1, SimConfig(size=(4000, 4072)), seed=0)
    exposure, truth = survey.exposures[0]
    return measure_and_match(exposure, truth, survey.refcat)


@pytest.fixture(scope="module")
def many():
    """Thirty independent star-rich 1k×1k exposures (each its own sky and refcat)."""
    config = SimConfig(size=(1024, 1024), n_sources=8000, star_fraction=0.6)
    matched = []
    for seed in range(30):
        survey = simulate_survey(1, config, seed=100 + seed)
        exposure, truth = survey.exposures[0]
        matched.append(measure_and_match(exposure, truth, survey.refcat))
    return matched


# ---------------------------------------------------------------- accuracy


def test_zeropoint_of_a_full_chip_is_within_three_millimag(big):
    result = big.fit()
    error = result.magzero - big.truth.magzero
    assert abs(error) <= 0.003, (error, result.magzero_err)
    assert result.nobj >= 100
    assert result.colorterm == big.truth.colorterm
    # the header numbers are coherent with each other
    assert 0 < result.magzero_err < result.magzero_rms
    assert result.nobj == result.used.sum()
    zp = result.zeropoints[result.used]
    assert math.isclose(result.magzero_rms, np.sqrt(np.mean((zp - result.magzero) ** 2)))
    # the reserved stars agree with the fit within their own scatter
    assert result.reserved.sum() >= 10
    spread = np.nanmedian(result.zeropoint_errs[result.reserved])
    assert (
        abs(result.reserved_mean_offset)
        < 3 * result.reserved_rms / np.sqrt(result.reserved.sum()) + 3 * result.magzero_err
    )
    assert result.reserved_rms < 3 * max(spread, result.magzero_rms)


def test_ignoring_the_colour_term_is_detectably_wrong(big):
    """The 3 mmag test has power: without the true c1 the zero-point misses by ~10 mmag."""
    result = big.fit(ColorTerm("r", "i"))
    assert abs(result.magzero - big.truth.magzero) > 0.005


def test_zeropoint_errors_are_honest_over_thirty_exposures(many):
    pulls = np.array(
        [(r.magzero - m.truth.magzero) / r.magzero_err for m in many for r in [m.fit()]]
    )
    assert len(pulls) >= 30
    assert 0.7 <= np.std(pulls) <= 1.4, pulls
    assert abs(np.mean(pulls)) < 3 / np.sqrt(len(pulls)) + 0.2, pulls


def test_unstated_scatter_is_included_in_the_error(many):
    """20 mmag of per-star scatter the errors do not state: σ_int absorbs it.

    Ten draws per exposure; the same pulls with σ_int forced to zero (the
    naive weighted-mean error) are far too wide, so the check has power.
    """
    rng = np.random.default_rng(7)
    extra = 0.02
    pulls, naive, sigma_int = [], [], []
    for m in many:
        flux = m.catalog["psf_flux"][m.rows]
        for _ in range(10):
            jitter = extra * rng.standard_normal(flux.size)
            result = m.fit(flux=flux * 10 ** (-0.4 * jitter))
            offset = result.magzero - m.truth.magzero
            pulls.append(offset / result.magzero_err)
            stated = result.zeropoint_errs[result.used]
            naive.append(offset * np.sqrt(np.sum(stated**-2.0)))
            sigma_int.append(result.sigma_int)
    assert 0.85 <= np.std(pulls) <= 1.25, np.std(pulls)
    assert np.std(naive) > 2.0, np.std(naive)
    assert abs(np.mean(sigma_int) - extra) < 0.002, np.mean(sigma_int)


def test_calibrated_magnitudes_match_the_truth(big):
    result = big.fit()
    flux = big.catalog["psf_flux"]
    mag, err = calibrated_magnitudes(flux, big.catalog["psf_flux_err"], big.truth.exptime, result)
    used = big.rows[result.used]
    true_mag = np.asarray(big.truth.sources["mag"])[big.truth_rows[result.used]]
    assert abs(np.median(mag[used] - true_mag)) < 0.003
    # errors: instrumental with MAGZERO_ERR in quadrature; NaN where the flux is not positive
    inst = 2.5 / np.log(10) * big.catalog["psf_flux_err"][used] / flux[used]
    assert np.allclose(err[used], np.hypot(inst, result.magzero_err))
    _, bare = calibrated_magnitudes(
        flux, big.catalog["psf_flux_err"], big.truth.exptime, result, include_zeropoint_err=False
    )
    assert np.allclose(bare[used], inst)
    negative = ~(flux > 0)
    assert np.isnan(mag[negative]).all() and np.isnan(err[negative]).all()


def test_selected_stars_are_clean_true_stars(big):
    """Flags and S/N hold exactly; star/galaxy separation as far as the pixels allow.

    Small faint galaxies (half-light radius < 1 px = 0.2" in 0.7" seeing, S/N
    < 100) cannot be told from stars by an aperture/PSF flux ratio; they
    never match a reference star, so they do not reach the zero-point.
    """
    chosen = select_calibration_stars(big.catalog, big.fwhm, PhotometryConfig())
    catalog, sources = big.catalog, big.truth.sources
    distance, nearest = cKDTree(np.column_stack([sources["x"], sources["y"]])).query(
        np.column_stack([catalog["x"], catalog["y"]])
    )
    near = distance < MATCH_RADIUS
    is_star = np.asarray(sources["is_star"])[nearest]
    snr = catalog["psf_flux"] / catalog["psf_flux_err"]
    assert (snr[chosen] >= 20).all()
    for flag in PhotometryConfig().reject_flags:
        assert not catalog[flag][chosen].any(), flag
    assert not np.asarray(sources["saturated"])[nearest[chosen & near]].any()
    # clean true stars are kept
    clean = near & is_star & (snr >= 20) & ~np.asarray(sources["saturated"])[nearest]
    for flag in PhotometryConfig().reject_flags:
        clean &= ~catalog[flag]
    assert clean.sum() >= 300
    assert chosen[clean].mean() >= 0.95
    # bright chosen sources are stars; resolved galaxies are rejected
    bright = chosen & near & (snr >= 100)
    assert bright.sum() >= 100
    assert is_star[bright].mean() >= 0.97
    resolved = near & ~is_star & (snr >= 20)
    resolved &= np.asarray(sources["half_light_radius"])[nearest] > 1.5
    assert resolved.sum() >= 20
    assert chosen[resolved].mean() < 0.15


def test_a_missing_catalog_column_is_named(big):
    catalog = {k: v for k, v in big.catalog.items() if k != "flag_saturated"}
    with pytest.raises(PhotometryError) as info:
        select_calibration_stars(catalog, big.fwhm, PhotometryConfig())
    assert info.value.where == "flag_saturated"


# ---------------------------------------------------------------- colour terms


def test_a_c0_shift_shifts_magzero_by_the_same(big):
    base = big.fit()
    c0, c1, c2 = big.truth.colorterm
    shifted = big.fit(ColorTerm("r", "i", c0 + 0.1, c1, c2))
    assert abs(shifted.magzero - base.magzero - 0.1) < 1e-6
    assert np.array_equal(shifted.used, base.used)
    assert shifted.magzero_err == pytest.approx(base.magzero_err, rel=1e-9)
    assert shifted.colorterm == pytest.approx((c0 + 0.1, c1, c2))


def _reweighted(result, zeropoints):
    """The weighted mean of ``zeropoints`` with a fit's own final weights and stars."""
    w = 1 / (result.zeropoint_errs[result.used] ** 2 + result.sigma_int**2)
    return np.sum(w * zeropoints[result.used]) / np.sum(w), w


def test_a_c1_change_shifts_magzero_by_the_mean_colour(big):
    base = big.fit()
    c0, c1, c2 = big.truth.colorterm
    delta = 0.1
    changed = big.fit(ColorTerm("r", "i", c0, c1 + delta, c2))
    colour = big.primary - big.secondary
    # every star's ZP_i moves by Δc1 × its colour p - s (not s - p)
    moved = changed.zeropoints - base.zeropoints
    both = np.isfinite(moved)
    assert np.allclose(moved[both], delta * colour[both], rtol=0, atol=1e-9)
    # MAGZERO: the old ZP_i weighted by the new fit, plus Δc1 × its weighted mean colour
    old_mean, w = _reweighted(changed, base.zeropoints)
    assert changed.colour_mean == pytest.approx(np.sum(w * colour[changed.used]) / np.sum(w))
    assert changed.magzero - old_mean == pytest.approx(delta * changed.colour_mean, abs=1e-9)
    # the weights change only a little with c1 (the errors carry 1 + c1 and c1)
    shift = changed.magzero - base.magzero
    assert abs(delta * changed.colour_mean) > 0.01  # red enough stars for this to mean something
    assert shift == pytest.approx(delta * changed.colour_mean, rel=0.05)


def test_a_c2_term_adds_the_weighted_mean_square_colour(big):
    base = big.fit()
    c0, c1, _ = big.truth.colorterm
    changed = big.fit(ColorTerm("r", "i", c0, c1, 0.05))
    colour = big.primary - big.secondary
    moved = changed.zeropoints - base.zeropoints
    both = np.isfinite(moved)
    assert np.allclose(moved[both], 0.05 * colour[both] ** 2, rtol=0, atol=1e-9)
    old_mean, w = _reweighted(changed, base.zeropoints)
    square_mean = np.sum(w * colour[changed.used] ** 2) / np.sum(w)
    assert changed.magzero - old_mean == pytest.approx(0.05 * square_mean, abs=1e-9)
    assert changed.magzero - base.magzero == pytest.approx(0.05 * square_mean, rel=0.1)


def test_colour_terms_load_from_toml_and_are_used(tmp_path, big):
    exact = tmp_path / "exact.toml"
    exact.write_text(
        '[colorterms.r]\nprimary = "r"\nsecondary = "i"\nc0 = 0.0\nc1 = 0.04\nc2 = 0.0\n'
    )
    config = load_config(exact)
    assert config.colorterms["r"] == ColorTerm("r", "i", 0.0, 0.04, 0.0)
    assert set(config.colorterms) >= {"g", "r", "i", "z"}

    other = tmp_path / "other.toml"
    other.write_text(
        "[photometry]\nreserve_fraction = 0.2\n\n"
        '[colorterms.r]\nprimary = "r"\nsecondary = "i"\nc0 = 0.1\nc1 = 0\nc2 = 0.0\n\n'
        '[colorterms.y]\nprimary = "z"\nsecondary = "i"\nc0 = -0.02\n'
    )
    config = load_config(other)
    assert config.photometry.reserve_fraction == 0.2
    assert config.colorterms["r"] == ColorTerm("r", "i", 0.1, 0.0, 0.0)
    assert config.colorterms["y"] == ColorTerm("z", "i", -0.02)
    assert config.colorterms["g"] == DEFAULT_COLORTERMS["g"]
    result = big.fit(config.colorterms["r"], config.photometry)
    identity = big.fit(ColorTerm("r", "i"), config.photometry)
    assert result.colorterm == (0.1, 0.0, 0.0)
    assert result.magzero - identity.magzero == pytest.approx(0.1, abs=1e-6)
    assert result.reserved.sum() > 1.5 * big.fit().reserved.sum()  # reserve_fraction is used


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[colorterms.r]\nc3 = 1.0\n", "colorterms.r"),
        ("[colorterms.u]\nc0 = 1.0\n", "colorterms.u"),
        ('[colorterms.r]\nc1 = "big"\n', "colorterms.r.c1"),
        ("[photometry]\nreserve_fraction = 1.5\n", "photometry.reserve_fraction"),
    ],
)
def test_bad_photometry_configuration_is_a_config_error(tmp_path, text, where):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.where == where


# ---------------------------------------------------------------- reserve


def test_reserve_is_deterministic_disjoint_and_depends_on_the_exposure(big):
    first, again = big.fit(), big.fit()
    assert np.array_equal(first.reserved, again.reserved)
    assert first.magzero == again.magzero
    assert not (first.reserved & first.used).any()
    eligible_count = first.reserved.sum() + first.used.sum()
    assert first.reserved.sum() >= math.floor(0.1 * eligible_count) - 1
    other = big.fit(exposure_id=big.truth.expid + 1)
    assert not np.array_equal(first.reserved, other.reserved)
    assert first.reserved.sum() == other.reserved.sum()
    # reserved stars never enter the fit: moving them does not move MAGZERO
    flux = big.catalog["psf_flux"][big.rows].copy()
    flux[first.reserved] *= 3.0
    assert big.fit(flux=flux).magzero == first.magzero


def test_reserve_stars_counts_and_keeps_enough_to_fit():
    eligible = np.zeros(100, bool)
    eligible[::2] = True
    picked = reserve_stars(eligible, 1234, 0.1, min_stars=5)
    assert picked.sum() == 5 and not (picked & ~eligible).any()
    assert np.array_equal(picked, reserve_stars(eligible, 1234, 0.1, min_stars=5))
    assert not np.array_equal(picked, reserve_stars(eligible, 1235, 0.1, min_stars=5))
    few = np.ones(6, bool)
    assert reserve_stars(few, 1, 0.5, min_stars=5).sum() == 1
    assert reserve_stars(few, 1, 0.1, min_stars=5).sum() == 0
    assert reserve_stars(np.ones(10, bool), -3, 0.3).sum() == 3  # negative ids are fine


# ---------------------------------------------------------------- failures and robustness


def test_too_few_stars_is_a_photometry_error(big):
    candidate = big.candidates()
    keep = np.flatnonzero(candidate)[:4]
    only = np.zeros_like(candidate)
    only[keep] = True
    args = (
        big.catalog["psf_flux"][big.rows],
        big.catalog["psf_flux_err"][big.rows],
        big.truth.exptime,
        big.primary,
        big.primary_err,
        big.secondary,
        big.secondary_err,
        big.colorterm,
    )
    few = fit_zeropoint(*args, only, big.truth.expid, PhotometryConfig())
    assert few.nobj == 4 and few.few_stars and few.sigma_int >= 0.02  # flagged, floored
    assert abs(few.magzero - big.truth.magzero) < 3 * few.magzero_err
    with pytest.raises(PhotometryError) as info:
        fit_zeropoint(*args, np.zeros_like(candidate), big.truth.expid, PhotometryConfig())
    assert info.value.kind == "photometry"
    assert "0 calibration stars, need 1" in info.value.reason
    with pytest.raises(PhotometryError) as info:
        fit_zeropoint(
            *args,
            only,
            big.truth.expid,
            PhotometryConfig(min_stars=5),
        )
    assert info.value.kind == "photometry"
    assert "4 calibration stars, need 5" in info.value.reason


def test_no_candidates_at_all_is_a_photometry_error():
    empty = np.empty(0)
    with pytest.raises(PhotometryError, match="0 calibration stars"):
        fit_zeropoint(
            empty, empty, 30.0, empty, empty, empty, empty, ColorTerm("r", "i"),
            np.empty(0, bool), 1, PhotometryConfig(),
        )  # fmt: skip


def test_outliers_are_clipped_and_do_not_move_the_zeropoint(big):
    base = big.fit()
    flux = big.catalog["psf_flux"][big.rows].copy()
    victims = np.flatnonzero(base.used)[::10]  # a tenth of the used stars, 0.3–1 mag off
    flux[victims] *= 10 ** (-0.4 * np.linspace(0.3, 1.0, victims.size))
    result = big.fit(flux=flux)
    assert not result.used[victims].any()
    assert abs(result.magzero - base.magzero) < 2 * base.magzero_err + 2e-4
    assert result.sigma_int < 0.005


def test_errors_are_honest_for_synthetic_stars_with_extra_scatter():
    """Many quick fits of synthetic stars: pull spread ~1 with and without unstated scatter."""
    rng = np.random.default_rng(3)
    colorterm = ColorTerm("r", "i", 0.0, 0.04, 0.0)
    for extra in (0.0, 0.03):
        pulls = []
        for trial in range(300):
            n = 60
            r = rng.uniform(16.5, 21.5, n)
            colour = rng.uniform(-0.2, 1.2, n)
            ref_err = 0.002 + 0.03 * 10 ** (0.4 * (r - 21.5))
            flux = 30.0 * 10 ** (-0.4 * (r + 0.04 * colour - 28.0))
            flux_err = np.sqrt(flux + 40 * 1025.0)
            measured = flux + flux_err * rng.standard_normal(n)
            measured *= 10 ** (-0.4 * extra * rng.standard_normal(n))
            result = fit_zeropoint(
                measured, flux_err, 30.0,
                r + ref_err * rng.standard_normal(n), ref_err,
                r - colour + ref_err * rng.standard_normal(n), ref_err,
                colorterm, np.ones(n, bool), trial, PhotometryConfig(),
            )  # fmt: skip
            pulls.append((result.magzero - 28.0) / result.magzero_err)
        assert 0.85 <= np.std(pulls) <= 1.2, (extra, np.std(pulls))
        assert abs(np.mean(pulls)) < 0.2, (extra, np.mean(pulls))
