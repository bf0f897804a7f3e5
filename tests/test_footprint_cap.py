"""The astrometric fit's sources capped (issue 16, crowded fields): the catalogue stays whole."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from calibstream.astrometry.solve import capped_rows
from calibstream.simulate.truth import read_truth
from streams.cli import main


def test_capped_rows_keeps_the_brightest_in_order():
    rows = np.array([3, 5, 8, 9, 12])
    flux = np.zeros(13)
    flux[rows] = [1.0, 50.0, 7.0, np.nan, 20.0]
    assert np.array_equal(capped_rows(rows, flux, 2), [5, 12])
    assert np.array_equal(capped_rows(rows, flux, 0), rows)
    assert np.array_equal(capped_rows(rows, flux, 10), rows)


def test_a_capped_fit_calibrates_with_the_whole_catalogue(tmp_path):
    sim, store = str(tmp_path / "sim"), str(tmp_path / "store")
    assert main(["simulate", sim, "--n", "1", "--size", "1536", "1536", "--seed", "4"]) == 0
    assert main(["ingest-refcat", str(tmp_path / "sim" / "refcat.fits"), "--out", store]) == 0
    (tmp_path / "cap.toml").write_text("[calibration]\nmax_footprints = 25\n")
    exposure = sorted((tmp_path / "sim").glob("exp_*[0-9].fits"))[0]
    runs = {}
    for name, extra in (("all", []), ("capped", ["--config", str(tmp_path / "cap.toml")])):
        out = tmp_path / name
        args = ["calibrate", "--refcat", str(tmp_path / "store"), "--out", str(out), *extra]
        assert main([*args, str(exposure)]) == 0
        runs[name] = next((out / "exposures").iterdir())
    truth = read_truth(exposure.with_name(exposure.stem + ".truth.fits"))
    sources = {name: Table.read(folder / "src.fits", hdu="SRC") for name, folder in runs.items()}
    assert len(sources["capped"]) == len(sources["all"]) > 25  # the catalogue stays whole
    header = fits.getheader(runs["capped"] / "calexp.fits")
    assert header["ASTNMATCH"] <= 25 < fits.getheader(runs["all"] / "calexp.fits")["ASTNMATCH"]
    wcs = WCS(header, naxis=2)
    gx, gy = np.meshgrid(np.linspace(0, 1535, 8), np.linspace(0, 1535, 8))
    ra1, dec1 = wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    ra2, dec2 = truth.wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    error = np.hypot((ra1 - ra2) * np.cos(np.radians(dec2)), dec1 - dec2) * 3.6e6
    assert error.max() < 20.0  # mas
