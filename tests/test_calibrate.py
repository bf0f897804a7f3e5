"""The batch command end to end: outputs, byte-identical reruns, failures, atomic folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from streaming import OUTPUT_FILES

from calibstream.io.outputs import publish_folder
from calibstream.simulate.truth import read_truth
from streams.cli import main


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("survey")
    assert (
        main(["simulate", str(root / "sim"), "--n", "3", "--size", "1536", "1536", "--seed", "21"])
        == 0
    )
    assert (
        main(["ingest-refcat", str(root / "sim" / "refcat.fits"), "--out", str(root / "store")])
        == 0
    )
    good = sorted((root / "sim").glob("exp_*[0-9].fits"))
    truncated = root / "truncated.fits"
    with fits.open(good[0]) as hdul:
        hdul[0].header["EXPID"] = 998
        hdul.writeto(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    # A field the reference catalog does not cover: the same exposure, 10 degrees away.
    far = root / "far.fits"
    with fits.open(good[1]) as hdul:
        hdul["IMAGE"].header["CRVAL2"] += 10.0
        hdul[0].header["EXPID"] = 999
        hdul.writeto(far)
    return root, good, truncated, far


def run_calibrate(root: Path, inputs: list[Path], out: Path) -> int:
    return main(
        ["calibrate", *map(str, inputs), "--refcat", str(root / "store"), "--out", str(out)]
    )


@pytest.fixture(scope="module")
def calibrated(survey):
    root, good, truncated, far = survey
    out = root / "out"
    status = run_calibrate(root, [*good, truncated, far], out)
    return root, good, out, status


def test_every_exposure_ends_in_a_folder_and_failures_make_the_exit_nonzero(calibrated):
    _, good, out, status = calibrated
    assert status == 1
    folders = {p.name: p for p in (out / "exposures").iterdir() if not p.name.startswith(".")}
    for path in good:
        expid = str(fits.getheader(path)["EXPID"])
        assert {p.name for p in folders[expid].iterdir()} == OUTPUT_FILES
    assert len(folders) == len(good) + 2


def test_failures_write_only_a_summary_with_a_readable_reason(calibrated):
    _, _, out, _ = calibrated
    # a field without reference stars: a partial calibration, its catalogue kept
    far = out / "exposures" / "999"
    assert {p.name for p in far.iterdir()} == OUTPUT_FILES - {"matches.fits", "matches.parquet"}
    summary = json.loads((far / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["stage"] == "astrometry"
    assert "no reference stars" in summary["reason"]
    # the truncated file is known by the EXPID of its surviving primary header
    truncated = out / "exposures" / "998"
    assert [p.name for p in truncated.iterdir()] == ["summary.json"]
    summary = json.loads((truncated / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stage"] == "read"
    assert "truncated" in summary["reason"]


def test_a_failure_never_replaces_a_complete_calibration(calibrated, tmp_path):
    import shutil

    from calibstream.io.outputs import write_failure

    _, good, out, _ = calibrated
    expid = str(fits.getheader(good[1])["EXPID"])
    shutil.copytree(out / "exposures" / expid, tmp_path / "exposures" / expid)
    write_failure(tmp_path, expid, "read", "truncated", "a later, broken copy")
    kept = json.loads((tmp_path / "exposures" / expid / "summary.json").read_text())
    assert kept["status"] == "ok"


def test_outputs_open_with_astropy_and_match_the_truth(calibrated):
    _, good, out, _ = calibrated
    for path in good[1:]:
        truth = read_truth(path.with_name(path.stem + ".truth.fits"))
        folder = out / "exposures" / str(truth.expid)
        header = fits.getheader(folder / "calexp.fits")
        for key in (
            "MAGZERO",
            "MAGZERO_ERR",
            "MAGZERO_RMS",
            "MAGZERO_NOBJ",
            "COLORTERM1",
            "COLORTERM2",
            "COLORTERM3",
            "ASTRMS",
            "ASTNMATCH",
            "ASTMODEL",
            "ASTDOF",
            "ASTERR",
            "EXPID",
            "BAND",
            "MJD-OBS",
            "EXPTIME",
            "CSVERS",
        ):
            assert key in header, key
        assert abs(header["MAGZERO"] - truth.magzero) < 0.01
        wcs = WCS(header, naxis=2)
        grid = np.linspace(0, 1535, 8)
        x, y = np.meshgrid(grid, grid)
        fitted = wcs.all_pix2world(x.ravel(), y.ravel(), 0)
        true = truth.wcs.all_pix2world(x.ravel(), y.ravel(), 0)
        offset = (
            np.hypot((fitted[0] - true[0]) * np.cos(np.radians(true[1])), fitted[1] - true[1])
            * 3.6e6
        )
        assert offset.max() < 50  # mas; the tight limits are tests/test_astrometry.py's
        src = Table.read(folder / "src.fits", hdu="SRC")
        for column in (
            "psf_mag",
            "psf_mag_err",
            "calib_astrometry_used",
            "calib_photometry_used",
            "ra",
            "dec",
        ):
            assert column in src.colnames
        assert src["calib_astrometry_used"].sum() == header["ASTNMATCH"]
        assert src["calib_photometry_used"].sum() == header["MAGZERO_NOBJ"]
        matches = Table.read(folder / "matches.fits", hdu="MATCHES")
        assert len(matches) >= header["ASTNMATCH"] // 2
        assert np.all(matches["distance_mas"] < 500)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["flags"] == []
        assert summary["header"]["MAGZERO"] == header["MAGZERO"]
        assert summary["header"]["ASTMODEL"] == header["ASTMODEL"]
        assert header["ASTDOF"] > 0 and header["ASTRMS"] > 0
        stats = summary["summary_stats"]
        assert stats["zeroPoint"] == header["ZEROPNT"] == header["MAGZERO"] + 2.5 * np.log10(30)
        for key in ("PSFSIGMA", "SKYBG", "MAGLIM", "EFFTIME", "PIXSCALE", "QSTATUS"):
            assert key in header, key


def test_a_second_run_writes_the_same_bytes(calibrated, tmp_path):
    root, good, out, _ = calibrated
    again = tmp_path / "again"
    time.sleep(1.0)  # nothing in the files may depend on the clock
    assert run_calibrate(root, good[1:], again) == 0
    for path in good[1:]:
        expid = str(fits.getheader(path)["EXPID"])
        for name in OUTPUT_FILES:
            first = (out / "exposures" / expid / name).read_bytes()
            assert (again / "exposures" / expid / name).read_bytes() == first, name


def test_publish_is_atomic_under_kill_minus_nine(tmp_path):
    """A writer killed at random moments leaves the folder complete or absent, never partial."""
    files = {f"part{i}.bin": os.urandom(1 << 20) * 4 for i in range(5)}
    (tmp_path / "payload.npz").write_bytes(b"")
    np.savez(tmp_path / "payload.npz", **{k: np.frombuffer(v, np.uint8) for k, v in files.items()})
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from calibstream.io.outputs import publish_folder\n"
        f"data = np.load({str(tmp_path / 'payload.npz')!r})\n"
        "files = {k: data[k].tobytes() for k in data.files}\n"
        "while True:\n"
        f"    publish_folder(Path({str(tmp_path / 'target')!r}), files)\n"
        f"    publish_folder(Path({str(tmp_path / 'target')!r}), {{'other': b'x'}})\n"
    )
    rng = np.random.default_rng(0)
    seen_complete = 0
    for _ in range(8):
        writer = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(0.6 + rng.uniform(0, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        target = tmp_path / "target"
        if target.exists():
            names = {p.name for p in target.iterdir()}
            if names == {"other"}:
                assert (target / "other").read_bytes() == b"x"
            else:
                assert names == set(files)
                assert all((target / n).read_bytes() == files[n] for n in files)
                seen_complete += 1
    # A new publish after the crashes still lands the folder whole, and clears what the
    # killed writers left beside it once it is stale (never a live writer's folder).
    leftovers = list(tmp_path.glob(".target.*-*"))
    publish_folder(tmp_path / "target", {"fresh": b"y"})
    assert set(tmp_path.glob(".target.*-*")) == set(leftovers), "a fresh staging folder went"
    for leftover in leftovers:
        os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    publish_folder(tmp_path / "target", files)
    assert {p.name for p in (tmp_path / "target").iterdir()} == set(files)
    assert not list(tmp_path.glob(".target.*-*")), "stale staging folders were left"
