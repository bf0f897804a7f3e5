"""The commands, run as a user runs them: simulate, measure."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from calibstream.cli import main
from calibstream.detection.pipeline import read_background

SRC_COLUMNS = (
    "id",
    "parent",
    "x",
    "y",
    "x_err",
    "y_err",
    "ra",
    "dec",
    "psf_flux",
    "psf_flux_err",
    "flag_edge",
    "flag_saturated",
    "flag_bad",
    "flag_deblended",
    "flag_bad_centroid",
    "calib_psf_candidate",
    "calib_psf_used",
    "calib_psf_reserved",
)


def test_simulate_then_measure_writes_the_contract_columns_byte_identically(tmp_path):
    assert (
        main(["simulate", str(tmp_path / "sim"), "--n", "2", "--size", "512", "512", "--seed", "4"])
        == 0
    )
    exposures = sorted((tmp_path / "sim").glob("exp_*[0-9].fits"))
    assert len(exposures) == 2 and (tmp_path / "sim" / "refcat.fits").is_file()
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["measure", str(exposures[0]), "--out", str(first)]) == 0
    assert main(["measure", str(exposures[0]), "--out", str(second)]) == 0
    for name in ("src.fits", "background.fits"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    with fits.open(first / "src.fits") as hdul:
        table = hdul["SRC"].data
        assert set(SRC_COLUMNS) <= set(table.columns.names)
        assert len(table) > 10
        assert np.all(np.isfinite(table["ra"])) and hdul[0].header["EXPID"] == 1000
    with fits.open(first / "background.fits") as hdul:
        background = read_background(hdul)
    assert background.mesh.shape == (4, 4)  # 128-px cells
    rendered = background.image
    assert rendered.shape == (512, 512) and np.all(np.isfinite(rendered))
    # A sky of a few e-: the rendered mesh is the residual sky, not an image of stars.
    assert abs(float(np.median(rendered)) - background.global_level) < 5 * background.global_rms
    assert not list(first.glob(".*.tmp")), "a temporary file was left behind"


def test_measure_reports_a_bad_file_and_exits_nonzero(tmp_path, capsys):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = T" + b" " * 100)
    assert main(["measure", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "bad.fits" in capsys.readouterr().err
    assert not (tmp_path / "out" / "src.fits").exists()


#: The console script's process, with an exit handler and an object that speaks only when
#: the interpreter tears its modules down.
CONSOLE = """
import atexit, sys
atexit.register(lambda: print("exit handlers ran", flush=True))
class Torn:
    def __del__(self):
        print("torn down", flush=True)
keep = Torn()
sys.argv = ["calibstream", *sys.argv[1:]]
from streams.cli import run
run()
"""


def test_a_one_shot_command_ends_at_once_with_its_output_and_exit_code(tmp_path):
    """``calibstream measure``/``calibrate`` end without the interpreter's teardown (~0.25 s),
    yet their exit handlers run, their output is all there and their exit code kept;
    other commands end as usual."""
    import subprocess
    import sys

    def console(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", CONSOLE, *argv], capture_output=True, text=True, timeout=300
        )

    assert main(["simulate", str(tmp_path / "sim"), "--n", "1", "--size", "512", "512"]) == 0
    exposure = str(tmp_path / "sim" / "exp_1000.fits")
    measured = console("measure", exposure, "--out", str(tmp_path / "m"))
    assert measured.returncode == 0, measured.stderr
    assert (tmp_path / "m" / "src.fits").is_file()
    assert "exit handlers ran" in measured.stdout and "torn down" not in measured.stdout
    assert (
        main(["ingest-refcat", str(tmp_path / "sim" / "refcat.fits"), "--out", str(tmp_path / "s")])
        == 0
    )
    calibrated = console(
        "calibrate", exposure, "--refcat", str(tmp_path / "s"), "--out", str(tmp_path / "c")
    )
    assert calibrated.returncode == 1  # 512² holds too few stars: partial, so exit 1
    assert f"{exposure}: partial -> " in calibrated.stdout
    assert "1 of 1 exposures not calibrated in full" in calibrated.stderr
    assert "torn down" not in calibrated.stdout
    usage = console("dashboard", "--help")
    assert usage.returncode == 0 and "torn down" in usage.stdout
