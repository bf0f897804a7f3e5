"""A crowded 4k chip (issue 16): calibstream's whole calibration beside SExtractor, fresh
processes in turn, and its quality against the simulation's truth.

    python benchmarks/crowded.py [--size 4096 4096] [--density 100100] [--seed 7] [--pairs 3]

Simulates one exposure with ``--density`` sources per 4096² px (``SimConfig.n_sources``)
and its reference catalog, then runs N pairs in turn: ``calibstream calibrate`` of the
exposure (a fresh process: read, detect, measure, astrometry, photometry, the folder
written), then Debian's ``source-extractor`` on the same pixels (the variance plane as
weight map, ``measure.detection_options``: 1.5σ, min area 5, the PSF-sized filter).
Prints the medians of wall and CPU seconds and the peak resident memory of each side
(GNU time's, ``fresh.run_measured``), then what calibstream recovered against truth:
sources, astrometric matches, the WCS on a 20×20 pixel grid, MAGZERO. SExtractor only
detects and measures; calibstream also calibrates, so the ratio flatters SExtractor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402
from calibrate import run_sextractor, tpv_header, wcs_errors  # noqa: E402  (beside this script)
from fresh import RECORD, Usage, calibstream_command, run_measured  # noqa: E402
from measure import gaussian_filter_file  # noqa: E402

from calibstream.astrometry.refcat import ingest_refcat  # noqa: E402
from calibstream.io.exposure import read_exposure  # noqa: E402
from calibstream.simulate.config import SimConfig  # noqa: E402
from calibstream.simulate.survey import write_simulation  # noqa: E402
from calibstream.simulate.truth import read_truth  # noqa: E402


def prepare(work: Path, size: tuple[int, int], density: float, seed: int) -> tuple[Path, Path]:
    """The exposure, its truth and reference store; the peer's image, weight and filter."""
    start = time.perf_counter()
    config = SimConfig(n_sources=density)
    exposure_path = write_simulation(work / "sim", 1, size, seed, config=config)[0]
    ingest_refcat([work / "sim" / "refcat.fits"], work / "store")
    exposure = read_exposure(exposure_path)
    header = tpv_header(exposure.wcs, exposure.shape)
    fits.writeto(work / "image.fits", exposure.image, header, overwrite=True)
    fits.writeto(work / "variance.fits", exposure.variance, overwrite=True)
    gaussian_filter_file(exposure.psf.fwhm, work / "psf.conv")
    print(f"simulated and written in {time.perf_counter() - start:.0f} s")
    return exposure_path, work / "store"


def run_pairs(work: Path, exposure: Path, store: Path, config: str | None, pairs: int, exe: str):
    """``pairs`` of (calibstream calibrate, source-extractor) in turn; their usages."""
    saturation = 0.999 * read_truth(truth_path(exposure)).saturation
    mine: list[Usage] = []
    theirs: list[Usage] = []
    for i in range(pairs):
        done = run_measured(calibstream_command(exposure, store, work / f"out{i}", config), work)
        if done.returncode not in (0, 1):  # 1: calibrated, but not in full (reported below)
            raise RuntimeError(f"calibstream calibrate failed (exit {done.returncode})")
        mine.append(done)
        run_sextractor(exe, work / "image.fits", work / "variance.fits", saturation, work)
        theirs.append(RECORD[-1][1])
    return mine, theirs


def truth_path(exposure: Path) -> Path:
    return exposure.with_name(exposure.stem + ".truth.fits")


def quality(folder: Path, exposure: Path) -> list[str]:
    """What the calibration recovered, against the simulation's truth."""
    truth = read_truth(truth_path(exposure))
    summary = json.loads((folder / "summary.json").read_text())
    header = fits.getheader(folder / "calexp.fits")
    with fits.open(folder / "src.fits") as hdul:
        n_src = len(hdul["SRC"].data)
    lines = [
        f"  status {summary['status']}"
        + (f" ({summary.get('reason')})" if summary["status"] != "ok" else ""),
        f"  true sources on the chip {int(np.count_nonzero(truth.sources['in_chip']))}, "
        f"detected {n_src}",
    ]
    if "ASTNMATCH" not in header:
        return lines
    wcs = WCS(header, naxis=2)
    error = wcs_errors(wcs, truth.wcs, truth.size[::-1])
    lines += [
        f"  astrometry: {header['ASTNMATCH']} matches ({header['ASTMODEL']}), ASTRMS "
        f"{header['ASTRMS']:.1f} mas, ASTERR {header['ASTERR']:.2f} mas; WCS vs truth rms "
        f"{np.sqrt(np.mean(error**2)):.2f}, max {error.max():.2f} mas",
    ]
    if "MAGZERO" in header:
        lines.append(
            f"  photometry: MAGZERO {header['MAGZERO']:.4f} ± {header['MAGZERO_ERR']:.4f} "
            f"(rms {header['MAGZERO_RMS']:.3f}, {header['MAGZERO_NOBJ']} stars), true "
            f"{truth.magzero:.4f}: {header['MAGZERO'] - truth.magzero:+.4f} mag"
        )
    return lines


def report(mine: list[Usage], theirs: list[Usage], n_se: int) -> list[str]:
    """Medians of each side, their ratios, and the peaks."""

    def median(runs: list[Usage], field: str) -> float:
        return statistics.median(getattr(u, field) for u in runs)

    rows = [
        f"\nfresh processes, {len(mine)} pairs in turn (medians):",
        f"  {'':<24s} {'calibstream':>12s} {'SExtractor':>11s} {'ratio':>7s}",
    ]
    for label, field in (("wall seconds", "wall"), ("CPU seconds (user+sys)", "cpu")):
        ours, peer = median(mine, field), median(theirs, field)
        rows.append(f"  {label:<24s} {ours:12.2f} {peer:11.2f} {ours / peer:6.2f}x")
    ours, peer = max(u.peak_mb for u in mine), max(u.peak_mb for u in theirs)
    rows.append(f"  {'peak RSS (MB)':<24s} {ours:12.0f} {peer:11.0f} {ours / peer:6.2f}x")
    rows.append(
        f"  (calibstream: the whole calibration; SExtractor: detection and measurement "
        f"only, {n_se} sources)"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(4096, 4096), metavar=("NX", "NY"))
    parser.add_argument("--density", type=float, default=100_100.0, help="sources per 4096² px")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--config", default=None, help="calibstream TOML configuration")
    args = parser.parse_args()
    exe = shutil.which("source-extractor") or shutil.which("sex")
    if exe is None:
        raise SystemExit("source-extractor not found (apt-get install source-extractor)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exposure, store = prepare(work, tuple(args.size), args.density, args.seed)
        mine, theirs = run_pairs(work, exposure, store, args.config, args.pairs, exe)
        with fits.open(work / "se.cat") as hdul:
            n_se = len(hdul["LDAC_OBJECTS"].data)
        print("\n".join(report(mine, theirs, n_se)))
        folder = next((work / f"out{args.pairs - 1}" / "exposures").iterdir())
        print(f"\ncalibstream against truth ({args.size[0]}x{args.size[1]}, seed {args.seed}):")
        print("\n".join(quality(folder, exposure)))


if __name__ == "__main__":
    main()
