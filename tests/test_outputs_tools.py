"""Outputs tools read as they are: Parquet beside the FITS tables (same rows, units and
descriptions), TUNIT and TCOMM on every FITS column, calexp.fits with pixels when asked and
without a warning when not, fitsverify clean, ordinary permissions, the same bytes again."""

from __future__ import annotations

import shutil
import stat
import subprocess
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from calibstream.io.exposure import read_exposure
from streams.cli import main

FITS_FILES = ("calexp.fits", "src.fits", "matches.fits", "background.fits")
TABLES = (("src", "SRC"), ("matches", "MATCHES"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    sim = root / "sim"
    assert main(["simulate", str(sim), "--n", "1", "--size", "1536", "1536", "--seed", "21"]) == 0
    assert main(["ingest-refcat", str(sim / "refcat.fits"), "--out", str(root / "store")]) == 0
    (root / "pixels.toml").write_text("[outputs]\npixels = true\n")
    exposure = sorted(sim.glob("exp_*[0-9].fits"))[0]
    outs = {}
    for key, extra in (("header", []), ("pixels", ["--config", str(root / "pixels.toml")])):
        outs[key] = root / key
        args = ["calibrate", str(exposure), "--refcat", str(root / "store"), "--out"]
        assert main([*args, str(outs[key]), *extra]) == 0
    folders = {k: next((v / "exposures").iterdir()) for k, v in outs.items()}
    return root, exposure, folders


def fitsverify(path) -> tuple[int, int]:
    """(warnings, errors) of Debian's fitsverify, else of astropy's own verify."""
    if shutil.which("fitsverify"):
        out = subprocess.run(["fitsverify", str(path)], capture_output=True, text=True).stdout
        line = next(x for x in out.splitlines() if "Verification found" in x)
        words = line.split()
        return int(words[3]), int(words[6])
    with fits.open(path) as hdul:
        hdul.verify("exception")
    return 0, 0


@pytest.mark.parametrize("kind", ["header", "pixels"])
def test_every_fits_output_is_clean_for_fitsverify(runs, kind):
    _, _, folders = runs
    for name in FITS_FILES:
        assert fitsverify(folders[kind] / name) == (0, 0), name


def test_the_header_only_calexp_opens_in_astropy_without_a_warning(runs):
    _, _, folders = runs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(folders["header"] / "calexp.fits") as hdul:
            assert len(hdul) == 1 and hdul[0].data.size == 0  # (0, 0): no data
            header = hdul[0].header
            wcs = WCS(header)
    assert header["NAXIS"] == 2 and header["NAXIS1"] == header["NAXIS2"] == 0
    assert wcs.has_distortion and header["MAGZERO"] > 0


def test_calexp_pixels_carry_the_fitted_wcs_and_the_inputs_planes(runs):
    _, exposure, folders = runs
    source = read_exposure(exposure)
    header = fits.getheader(folders["header"] / "calexp.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(folders["pixels"] / "calexp.fits") as hdul:
            assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
            fitted = WCS(header)
            x, y = np.meshgrid(np.linspace(0, 1535, 7), np.linspace(0, 1535, 7))
            want = fitted.all_pix2world(x, y, 0)
            for hdu in hdul[1:]:
                got = WCS(hdu.header).all_pix2world(x, y, 0)
                assert np.abs(np.subtract(got, want)).max() * 3.6e6 < 1e-6, hdu.name
            image, mask, variance = (
                np.asarray(hdul[n].data) for n in ("IMAGE", "MASK", "VARIANCE")
            )
            primary = hdul[0].header
    assert np.array_equal(mask, source.mask) and np.array_equal(variance, source.variance)
    background = fits.getdata(folders["pixels"] / "background.fits")
    residual = source.image - image  # what the calexp subtracted: the background model
    assert np.allclose(residual.mean(), np.mean(background), atol=0.05), "background subtracted"
    assert primary["MAGZERO"] == header["MAGZERO"]


def test_parquet_tables_read_back_equal_to_the_fits_tables_with_units(runs):
    _, _, folders = runs
    for kind in ("header", "pixels"):
        for stem, extname in TABLES:
            from_fits = Table.read(folders[kind] / f"{stem}.fits", hdu=extname)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                from_parquet = Table.read(folders[kind] / f"{stem}.parquet")
            assert from_fits.colnames == from_parquet.colnames and len(from_fits) > 10
            for name in from_fits.colnames:
                a, b = np.asarray(from_fits[name]), np.asarray(from_parquet[name])
                assert a.dtype.kind == b.dtype.kind, name
                assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
                assert from_fits[name].unit == from_parquet[name].unit, name
            header = fits.getheader(folders[kind] / f"{stem}.fits", extname)
            schema = pq.read_schema(folders[kind] / f"{stem}.parquet")
            for i, name in enumerate(from_fits.colnames, start=1):
                assert f"TUNIT{i}" in header and header[f"TCOMM{i}"], name
                meta = schema.field(name).metadata
                assert meta[b"unit"].decode() == header[f"TUNIT{i}"], name
                assert meta[b"description"].decode() == header[f"TCOMM{i}"], name
    src = Table.read(folders["header"] / "src.parquet")
    assert str(src["ra"].unit) == "deg" and str(src["psf_mag"].unit) == "mag"
    assert str(src["x"].unit) == "pix" and src["x"].description.startswith("x of the windowed")


def test_outputs_have_ordinary_permissions(runs):
    _, _, folders = runs
    for folder in folders.values():
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


def test_a_rerun_writes_the_same_bytes_parquet_and_pixels_included(runs, tmp_path):
    root, exposure, folders = runs
    again = tmp_path / "again"
    args = ["calibrate", str(exposure), "--refcat", str(root / "store"), "--out", str(again)]
    assert main([*args, "--config", str(root / "pixels.toml")]) == 0
    rerun = next((again / "exposures").iterdir())
    names = sorted(p.name for p in folders["pixels"].iterdir())
    assert names == sorted(p.name for p in rerun.iterdir())
    assert {"src.parquet", "matches.parquet"} <= set(names)
    for name in names:
        assert (rerun / name).read_bytes() == (folders["pixels"] / name).read_bytes(), name
