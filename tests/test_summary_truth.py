"""The summary statistics against the simulator's truth (README "Summary statistics").

* psfSigma within 2% of the true PSF's (the adaptive-moment determinant radius of the
  pixel-integrated Moffat the simulator draws, computed here on a fine grid, independently
  of the pipeline's code), from the PSF model and from the PSF stars' own pixels;
* skyBg and skyNoise within 1% of the sky and sqrt(sky + read noise²) simulated;
* magLim within 0.1 mag of the magnitude at which point sources injected into a simulated
  exposure are measured at S/N 5;
* effTime's factors follow the formula when the sky, the seeing or the transparency change
  (pairs of exposures simulated alike but for that);
* the geometry (corners, centre, pixel scale) and the zenith distance against the truth's
  WCS and astropy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from scipy import ndimage
from scipy.spatial import cKDTree

from calibstream.cli import main as core_main
from calibstream.config import Config
from calibstream.detection.pipeline import measure_exposure
from calibstream.detection.psfmodel import moffat_alpha, moffat_stamps
from calibstream.io.exposure import read_exposure, write_exposure
from calibstream.quality_config import Fiducial
from calibstream.simulate.config import SimConfig
from calibstream.simulate.survey import simulate_survey, write_simulation
from calibstream.simulate.truth import read_truth
from calibstream.summary_image import image_summary
from calibstream.summary_stats import FWHM_PER_SIGMA, wcs_geometry, zenith_distance
from streams.cli import main as cli_main

SIZE = 2048


def true_psf_sigma(fwhm: float, beta: float, step: float = 1 / 16, half: float = 30.0) -> float:
    """The determinant radius of the adaptive moments of a Moffat convolved with the unit
    pixel: the profile sampled every ``step`` px, box-averaged over one pixel, and the
    Gaussian-weighted fixed point sigma² = 2 <x²>_w solved on that fine grid."""
    alpha = moffat_alpha(fwhm, beta)
    grid = np.arange(-half, half + step / 2, step)
    x, y = np.meshgrid(grid, grid)
    profile = (1.0 + (x * x + y * y) / alpha**2) ** (-beta)
    smooth = ndimage.uniform_filter(profile, size=round(1 / step), mode="constant")
    sigma = fwhm / 2.3548
    for _ in range(200):
        weight = smooth * np.exp(-0.5 * (x * x + y * y) / sigma**2)
        updated = math.sqrt(2.0 * np.sum(weight * x * x) / np.sum(weight))
        if abs(updated - sigma) < 1e-10:
            break
        sigma = updated
    return sigma


def config_for(sim: SimConfig) -> Config:
    """The pipeline's configuration with the simulated camera's read noise as the r band's."""
    fiducials = dict(Config().fiducials)
    fiducials["r"] = dataclasses.replace(fiducials["r"], read_noise=sim.read_noise)
    return dataclasses.replace(Config(), fiducials=fiducials)


@pytest.mark.parametrize("fwhm", [3.5, 5.2])
def test_psf_sigma_is_within_two_percent_of_the_true_psf(fwhm):
    sim = SimConfig(size=(SIZE, SIZE), fwhm=fwhm)
    exposure, truth = simulate_survey(1, sim, seed=31).exposures[0]
    measurement = measure_exposure(exposure, Config())
    stats, shapes = image_summary(
        exposure, measurement.catalog, measurement.background.image,
        config_for(sim).fiducials["r"], Config().summary,
    )  # fmt: skip
    true = true_psf_sigma(truth.fwhm, truth.moffat_beta)
    print(f"FWHM {fwhm} px: true sigma {true:.4f} px, psfSigma {stats.psfSigma:.4f} px")
    assert abs(stats.psfSigma / true - 1) < 0.02
    assert abs(stats.psfIxx / true**2 - 1) < 0.04 and abs(stats.psfIxy) < 1e-6
    # the PSF stars' own pixels: their adaptive sizes and shapes agree with the model's
    used = measurement.catalog["calib_psf_used"] & ~shapes["adaptive_flag"]
    assert stats.nPsfStar == int(measurement.catalog["calib_psf_used"].sum()) >= 20
    xx, yy, xy = (shapes[f"adaptive_{k}"] for k in ("xx", "yy", "xy"))
    det = np.sqrt(np.sqrt(xx * yy - xy**2))
    star_sigma = float(np.median(det[used]))
    print(f"median PSF-star sigma {star_sigma:.4f} px over {used.sum()} stars")
    assert abs(star_sigma / true - 1) < 0.02
    assert abs(stats.psfStarDeltaSizeMedian) < 0.02 * true
    assert abs(stats.psfStarDeltaE1Median) < 0.01 and abs(stats.psfStarDeltaE2Median) < 0.01
    assert 0 < stats.psfStarDeltaE1Scatter < 0.05 and 0 < stats.psfStarDeltaE2Scatter < 0.05


@pytest.mark.parametrize(("sky", "read_noise"), [(1000.0, 5.0), (3000.0, 12.0)])
def test_sky_level_and_noise_are_within_one_percent(sky, read_noise):
    """The input is background-subtracted: the sky comes back from the variance plane."""
    sim = SimConfig(size=(SIZE, SIZE), sky=sky, read_noise=read_noise)
    exposure, truth = simulate_survey(1, sim, seed=32).exposures[0]
    assert abs(np.median(exposure.image)) < 0.05 * math.sqrt(sky)  # truly subtracted
    measurement = measure_exposure(exposure, Config())
    stats, _ = image_summary(
        exposure, measurement.catalog, measurement.background.image,
        config_for(sim).fiducials["r"], Config().summary,
    )  # fmt: skip
    noise = math.sqrt(truth.sky_variance)
    print(f"sky {stats.skyBg:.2f} / {truth.sky}, noise {stats.skyNoise:.3f} / {noise:.3f}")
    assert abs(stats.skyBg / truth.sky - 1) < 0.01
    assert abs(stats.skyNoise / noise - 1) < 0.01
    assert abs(stats.meanVar / truth.sky_variance - 1) < 0.01


# ---------------------------------------------------------------- the full chain


def calibrate(root: Path, files: list[Path], store: Path, config: Path | None = None) -> Path:
    out = root / "out"
    argv = ["calibrate", *map(str, files), "--refcat", str(store), "--out", str(out)]
    assert cli_main([*argv, *(["--config", str(config)] if config else [])]) == 0
    return out


def simulated(root: Path, sim: SimConfig, seed: int = 33) -> tuple[Path, Path]:
    """One simulated exposure file and its reference store."""
    paths = write_simulation(root / "sim", 1, sim.size, seed, config=sim)
    store = root / "store"
    assert core_main(["ingest-refcat", str(root / "sim" / "refcat.fits"), "--out", str(store)]) == 0
    return paths[0], store


def summary_of(out: Path, expid: int = 1000) -> dict:
    return json.loads((out / "exposures" / str(expid) / "summary.json").read_text())


def inject_stars(path: Path, truth, mags: np.ndarray, target: Path) -> Table:
    """Point sources of magnitudes ``mags`` added to the exposure at ``path`` (rendered as
    the simulator renders stars, with their Poisson noise in the image and the variance),
    on a grid away from the true sources; written to ``target``."""
    exposure = read_exposure(path)
    rng = np.random.default_rng(7)
    side = np.arange(60, SIZE - 60, 96, dtype=float)
    gx, gy = np.meshgrid(side, side)
    x, y = (
        gx.ravel() + rng.uniform(-0.5, 0.5, gx.size),
        gy.ravel() + rng.uniform(-0.5, 0.5, gx.size),
    )
    sources = truth.sources[truth.sources["in_chip"]]
    near = cKDTree(np.column_stack([sources["x"], sources["y"]])).query(np.column_stack([x, y]))[0]
    clear = np.flatnonzero(near > 20.0)[: len(mags)]
    x, y = x[clear], y[clear]
    flux = truth.exptime * 10 ** (0.4 * (truth.magzero - mags[: len(x)]))
    stamps, x0, y0 = moffat_stamps(x, y, 20, truth.fwhm, truth.moffat_beta)
    model = np.zeros(exposure.image.shape)
    for stamp, f, i, j in zip(stamps, flux, y0, x0, strict=True):
        model[i : i + 41, j : j + 41] += f * stamp
    image = exposure.image + model + rng.standard_normal(model.shape) * np.sqrt(model)
    injected = dataclasses.replace(
        exposure,
        image=image.astype(np.float32),
        variance=(exposure.variance + model).astype(np.float32),
    )
    write_exposure(injected, target)
    return Table({"x": x, "y": y, "mag": mags[: len(x)], "flux": flux})


def test_maglim_is_the_magnitude_injected_point_sources_reach_s_n_5(tmp_path):
    sim = SimConfig(size=(SIZE, SIZE), zeropoint_scatter=0.0)
    path, store = simulated(tmp_path, sim)
    truth = read_truth(path.with_name(path.stem + ".truth.fits"))
    mags = np.linspace(22.0, 25.0, 300)
    injected = inject_stars(path, truth, mags, tmp_path / "exp_1000.fits")
    config = tmp_path / "r.toml"
    config.write_text(f"[fiducials.r]\nread_noise = {sim.read_noise}\n")
    out = calibrate(tmp_path, [tmp_path / "exp_1000.fits"], store, config)
    summary = summary_of(out)
    maglim = summary["summary_stats"]["magLim"]
    src = Table.read(out / "exposures" / "1000" / "src.fits", hdu="SRC")
    distance, row = cKDTree(np.column_stack([src["x"], src["y"]])).query(
        np.column_stack([injected["x"], injected["y"]]), distance_upper_bound=1.0
    )
    found = np.isfinite(distance)
    flux, err = (np.asarray(src[c])[row[found]] for c in ("psf_flux", "psf_flux_err"))
    true_flux, mag = injected["flux"][found], injected["mag"][found]
    # the errors are the noise: pulls of unit width where every source is found
    bright = true_flux / err > 12
    pulls = (flux - true_flux)[bright] / err[bright]
    assert 0.85 < 1.4826 * np.median(np.abs(pulls - np.median(pulls))) < 1.15
    # the S/N of a source of known flux, against magnitude: where it crosses 5
    slope, intercept = np.polyfit(mag, np.log10(true_flux / err), 1)
    m5 = (math.log10(5.0) - intercept) / slope
    print(f"magLim {maglim:.3f}; injected sources reach S/N 5 at {m5:.3f} ({found.sum()} found)")
    assert found.sum() > 150 and abs(slope + 0.4) < 0.05
    assert abs(maglim - m5) < 0.1


def test_eff_time_follows_the_formula_when_sky_seeing_or_transparency_change(tmp_path):
    base = SimConfig(size=(SIZE, SIZE), zeropoint_scatter=0.0)
    changes = {
        "base": {},
        "sky": {"sky": 2.5 * base.sky},
        "seeing": {"fwhm": 1.4 * base.fwhm},
        "transparency": {"zeropoint": base.zeropoint - 0.5},
    }
    found = {}
    for name, change in changes.items():
        sim = dataclasses.replace(base, **change)
        path, store = simulated(tmp_path / name, sim, seed=34)
        found[name] = summary_of(calibrate(tmp_path / name, [path], store))["summary_stats"]
        assert found[name]["effTime"] is not None, name
    b = found["base"]
    ratio = {name: s["effTime"] / b["effTime"] for name, s in found.items()}
    sigma = {name: true_psf_sigma(base.fwhm * (1.4 if name == "seeing" else 1.0), 3.5)
             for name in ("base", "seeing")}  # fmt: skip
    expected = {
        "sky": 1 / 2.5,  # (B / B')
        "seeing": (sigma["base"] / sigma["seeing"]) ** 2,  # (σ / σ')²
        "transparency": 10 ** (-0.8 * 0.5),  # (10^(0.4 Δzp))²
    }
    for name, value in expected.items():
        print(f"{name}: effTime ratio {ratio[name]:.4f}, formula {value:.4f}")
        assert abs(ratio[name] / value - 1) < 0.03, name
    factor = {"sky": "effTimeSkyBgScale", "seeing": "effTimePsfSigmaScale",
              "transparency": "effTimeZeroPointScale"}  # fmt: skip
    for name, key in factor.items():  # each change moves its own factor only
        assert abs(found[name][key] / b[key] / expected[name] - 1) < 0.03, name
        for other in set(factor.values()) - {key}:
            assert abs(found[name][other] / b[other] - 1) < 0.02, (name, other)
    # and the fiducial exposure is worth its exposure time
    assert abs(b["effTime"] / base.exptime - 1) < 0.05


def test_geometry_and_zenith_distance_match_the_truth_and_astropy():
    from astropy import units as u
    from astropy.coordinates import AltAz, EarthLocation, SkyCoord
    from astropy.time import Time
    from astropy.utils import iers

    _, truth = simulate_survey(1, SimConfig(size=(1024, 1024)), seed=35).exposures[0]
    header = truth.wcs.to_header(relax=True)
    geometry = wcs_geometry(header, (1024, 1024))
    corners = truth.wcs.all_pix2world([-0.5, 1023.5, 1023.5, -0.5], [-0.5, -0.5, 1023.5, 1023.5], 0)
    assert np.allclose(geometry.ra_corners, corners[0], atol=1e-9)
    assert np.allclose(geometry.dec_corners, corners[1], atol=1e-9)
    assert abs(geometry.pixel_scale / 0.2 - 1) < 0.002  # the simulated camera's 0.2"/px
    config = Config().summary
    for mjd in (61000.0, 61000.3, 61000.6):
        zd = zenith_distance(geometry.ra, geometry.dec, mjd, config)
        site = EarthLocation(
            lon=config.site_longitude * u.deg, lat=config.site_latitude * u.deg,
            height=config.site_elevation * u.m,
        )  # fmt: skip
        with warnings.catch_warnings(), iers.conf.set_temp("auto_download", False):
            warnings.simplefilter("ignore")
            when = Time(mjd, format="mjd", scale="tai")
            altaz = SkyCoord(geometry.ra * u.deg, geometry.dec * u.deg).transform_to(
                AltAz(obstime=when, location=site)
            )
        assert abs(zd - (90.0 - altaz.alt.deg)) < 0.01, mjd
    assert abs(FWHM_PER_SIGMA - 2.35482) < 1e-5


def test_fiducials_are_configuration():
    fiducial = Config().fiducials["r"]
    assert isinstance(fiducial, Fiducial) and fiducial.exptime == 30.0
