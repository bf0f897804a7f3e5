"""Partial calibrations (README "Partial outputs"): one of each kind, what their folders
hold, the same folder from the stream's steps and from the batch command, and replays and
redeliveries that change nothing.

* astrometry did not fit (a field 10° from every reference star): the catalogue with its
  first-guess positions, flagged; calexp.fits with the first-guess WCS; no matches.fits;
* photometry did not fit (too few calibration stars) or could not run (the reference
  catalogue has no band for the colour term): the fitted WCS, the matches, the catalogue
  with its fitted positions; MAGZERO and the calibrated magnitudes nulled, the reason said.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from streaming import OUTPUT_FILES, expid_of, make_survey, same_folders

from calibstream.cli import main as core_main
from calibstream.config import Config, config_from_dict
from calibstream.io.outputs import exposure_dir, read_summary
from streams import runner
from streams.cli import main as cli_main
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings
from streams.topology import CALIBRATE
from streams.worker import characterized_exposure


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("partial"), n_good=3, size=768, seed=8)


@pytest.fixture(scope="module")
def no_i_band(survey, tmp_path_factory):
    """A reference store whose catalogue lost its i band (the r colour term's secondary)."""
    root = tmp_path_factory.mktemp("no-i")
    table = Table.read(survey.root / "sim" / "refcat.fits")
    table.remove_columns(["i_mag", "i_mag_err"])
    table.write(root / "refcat.fits")
    assert (
        core_main(["ingest-refcat", str(root / "refcat.fits"), "--out", str(root / "store")]) == 0
    )
    return root / "store"


KINDS = {
    # kind: (exposure, store, configuration tables)
    "astrometry": ("no_refs", None, {}),
    "few_stars": ("good", None, {"photometry": {"min_stars": 500}}),
    "no_band": ("good", "no_i_band", {}),
}


def setup_of(kind, survey, no_i_band):
    which, store, tables = KINDS[kind]
    path = survey.bad["no_refs"] if which == "no_refs" else survey.good[0]
    return path, (no_i_band if store else survey.store), tables


def stream_steps(path, store, config, root) -> None:
    """The exposure through the agents' steps one by one, as the service runs them."""
    settings = StreamSettings(refcat=str(store), output_root=str(root))
    ctx = runner.Context(settings, config, RedisReadModel(None), None, CALIBRATE)
    value = characterized_exposure(path)[2]
    for agent in ("detect", "astrometry", "photometry", "sink"):
        message = runner.Message(f"calibstream.{agent}", 0, 3, b"k", value, 1)
        outputs = runner.run(ctx, agent, message)
        assert [o.role for o in outputs] == [CALIBRATE.stage(agent).produces]
        value = outputs[0].value if outputs else b""


def batch(path, store, tables, root, tmp_path) -> int:
    argv = ["calibrate", str(path), "--refcat", str(store), "--out", str(root)]
    if tables:
        config = tmp_path / "partial.toml"
        config.write_text("".join(f"[{t}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items())
                                  for t, kv in tables.items()))  # fmt: skip
        argv += ["--config", str(config)]
    return cli_main(argv)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_partial_exposure_of_each_kind(kind, survey, no_i_band, tmp_path):
    path, store, tables = setup_of(kind, survey, no_i_band)
    expid = expid_of(path)
    assert batch(path, store, tables, tmp_path / "batch", tmp_path) == 1  # not in full: exit 1
    folder = exposure_dir(tmp_path / "batch", expid)
    summary = read_summary(folder)
    assert summary["status"] == "partial" and summary["partial"]["stage"] in kind.replace(
        "few_stars", "photometry").replace("no_band", "photometry")  # fmt: skip
    assert summary["reason"] == summary["partial"]["reason"] and summary["stage"]
    stats = summary["summary_stats"]
    header = fits.getheader(folder / "calexp.fits")
    src = fits.getdata(folder / "src.fits", "SRC")
    assert header["QSTATUS"] == "partial" and header["PARTIAL"] == summary["stage"]
    # what was never fitted is nulled; the pixels' statistics are there
    assert "MAGZERO" not in header and stats["zeroPoint"] is None and stats["magLim"] is None
    assert stats["effTime"] is None and stats["effTimeZeroPointScale"] is None
    assert np.all(np.isnan(src["psf_mag"])) and not src["calib_photometry_used"].any()
    assert stats["psfSigma"] > 1 and stats["skyBg"] > 0 and stats["effTimeSkyBgScale"] > 0
    assert len(src) == summary["n_sources"] > 20
    if kind == "astrometry":
        assert "no reference stars" in summary["reason"]
        unmatched = OUTPUT_FILES - {"matches.fits", "matches.parquet"}
        assert {p.name for p in folder.iterdir()} == unmatched
        assert header["WCSGUESS"] is True and "ASTRMS" not in header
        assert src["flag_radec_first_guess"].all() and not src["calib_astrometry_used"].any()
        with fits.open(path) as hdul:  # the positions are the first guess's
            guess = WCS(hdul["IMAGE"].header)
        ra, dec = guess.all_pix2world(src["x"], src["y"], 0)
        assert np.allclose(src["ra"], ra, atol=1e-9) and np.allclose(src["dec"], dec, atol=1e-9)
        assert stats["pixelScale"] is None and stats["astromOffsetMean"] is None
        assert not [v for v in summary["verdicts"] if v["group"] != "image"]
    else:
        words = "calibration stars" if kind == "few_stars" else "no i_mag column"
        assert words in summary["reason"]
        assert {p.name for p in folder.iterdir()} == OUTPUT_FILES
        assert "WCSGUESS" not in header and header["ASTNMATCH"] >= 10
        assert not src["flag_radec_first_guess"].any()
        assert src["calib_astrometry_used"].sum() == header["ASTNMATCH"]
        assert math.isclose(stats["pixelScale"], 0.2, rel_tol=0.01) and stats["raCorners"]
        assert len(Table.read(folder / "matches.fits", hdu="MATCHES")) > 0
        groups = {v["group"] for v in summary["verdicts"]}
        assert groups == {"astrometric", "image"}  # no photometric verdict: nothing fitted


@pytest.mark.parametrize("kind", list(KINDS))
def test_partial_folders_are_the_same_from_stream_and_batch_and_replays_change_nothing(
    kind, survey, no_i_band, tmp_path
):
    path, store, tables = setup_of(kind, survey, no_i_band)
    name = str(expid_of(path))
    assert batch(path, store, tables, tmp_path / "batch", tmp_path) == 1
    config = config_from_dict(tables) if tables else Config()
    stream_steps(path, store, config, tmp_path / "stream")
    assert same_folders(tmp_path / "stream", tmp_path / "batch", [name]) == []
    folder = tmp_path / "stream" / "exposures" / name
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    stream_steps(path, store, config, tmp_path / "stream")  # a replay, a redelivery
    assert batch(path, store, tables, tmp_path / "stream", tmp_path) == 1  # the batch again
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    assert after == before, "a folder of the same bytes is left untouched"


def test_a_failure_never_replaces_a_partial_calibration(survey, tmp_path):
    from calibstream.io.outputs import write_failure

    path = survey.bad["no_refs"]
    assert batch(path, survey.store, {}, tmp_path, tmp_path) == 1
    folder = exposure_dir(tmp_path, expid_of(path))
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}
    write_failure(tmp_path, expid_of(path), "read", "truncated", "a later, broken copy")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == kept
    assert json.loads(kept["summary.json"])["status"] == "partial"
    assert not os.path.exists(folder / "matches.fits")
