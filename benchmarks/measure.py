"""Detect-and-measure speed: calibstream beside SExtractor on the same pixels, one core.

    python benchmarks/measure.py [--size 4000 4072] [--seed 3] [--repeat 3]

Simulates one exposure, runs ``calibstream measure``'s stages in-process and
Debian's ``source-extractor`` (1.5σ, min area 5, a PSF-sized Gaussian filter,
the variance plane as weight map) on the same background-subtracted pixels,
and prints seconds per stage, the totals and their ratio (best of --repeat).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from calibstream.config import Config  # noqa: E402
from calibstream.detection.pipeline import measure_file  # noqa: E402
from calibstream.io.exposure import write_exposure  # noqa: E402
from calibstream.runtime import reuse_freed_memory  # noqa: E402
from calibstream.simulate.config import SimConfig  # noqa: E402
from calibstream.simulate.survey import simulate_survey  # noqa: E402

SEXTRACTOR_PARAMS = """NUMBER
X_IMAGE
Y_IMAGE
XWIN_IMAGE
YWIN_IMAGE
ERRX2WIN_IMAGE
ERRY2WIN_IMAGE
X2_IMAGE
Y2_IMAGE
XY_IMAGE
A_IMAGE
B_IMAGE
THETA_IMAGE
FLUX_APER(4)
FLUXERR_APER(4)
KRON_RADIUS
FLUX_AUTO
FLUXERR_AUTO
FLUX_RADIUS
FLAGS
"""


def gaussian_filter_file(fwhm: float, path: Path) -> None:
    """A SExtractor .conv file: a Gaussian of the PSF's FWHM on a (2k+1)² grid."""
    half = max(1, int(np.ceil(fwhm)))
    grid = np.arange(-half, half + 1)
    sigma = fwhm / 2.3548
    kernel = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * sigma**2))
    lines = [f"CONV NORM\n# Gaussian, FWHM {fwhm:.2f} px"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in kernel]
    path.write_text("\n".join(lines) + "\n")


def detection_options(filter_file: Path, weight: Path) -> list[str]:
    """SExtractor's detection settings in every benchmark: 1.5σ, 5 pixels, the PSF-sized
    filter, the variance plane as weight, 128-px background cells."""
    return [
        "-DETECT_THRESH",
        "1.5",
        "-ANALYSIS_THRESH",
        "1.5",
        "-DETECT_MINAREA",
        "5",
        "-FILTER",
        "Y",
        "-FILTER_NAME",
        str(filter_file),
        "-WEIGHT_TYPE",
        "MAP_VAR",
        "-WEIGHT_IMAGE",
        str(weight),
        "-BACK_SIZE",
        "128",
        "-BACK_FILTERSIZE",
        "3",
    ]


def run_sextractor(exe: str, image: Path, weight: Path, fwhm: float, radii, work: Path) -> float:
    gaussian_filter_file(fwhm, work / "psf.conv")
    (work / "bench.param").write_text(SEXTRACTOR_PARAMS)
    apertures = ",".join(f"{2 * r:g}" for r in radii)
    command = [
        exe,
        str(image),
        "-CATALOG_NAME",
        str(work / "se.cat"),
        "-CATALOG_TYPE",
        "FITS_1.0",
        "-PARAMETERS_NAME",
        str(work / "bench.param"),
        *detection_options(work / "psf.conv", weight),
        "-PHOT_APERTURES",
        apertures,
        "-PHOT_AUTOPARAMS",
        "2.5,3.5",
        "-SATUR_LEVEL",
        "1e9",
        "-NTHREADS",
        "1",
        "-VERBOSE_TYPE",
        "QUIET",
        "-CHECKIMAGE_TYPE",
        "NONE",
        "-WRITE_XML",
        "N",
        "-STARNNW_NAME",
        "/dev/null",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=work)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(4000, 4072))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    exe = shutil.which("source-extractor") or shutil.which("sex")
    config = Config()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        survey = simulate_survey(1, SimConfig(size=tuple(args.size)), seed=args.seed)
        exposure, truth = survey.exposures[0]
        print(
            f"simulated {args.size[0]}x{args.size[1]} exposure with "
            f"{len(truth.sources['x'])} sources in {time.perf_counter() - start:.1f} s"
        )
        path = work / "exposure.fits"
        write_exposure(exposure, path)
        fits.writeto(work / "image.fits", exposure.image, overwrite=True)
        fits.writeto(work / "variance.fits", exposure.variance, overwrite=True)

        # As `calibstream measure` and the workers run: freed planes are reused.
        reuse_freed_memory()
        ours = []
        for _ in range(args.repeat + 1):
            result = measure_file(path, work / "out", config)
            ours.append(result.timings)
        cold, warm = ours[0], min(ours[1:], key=lambda t: sum(t.values()))
        n_ours = len(result.catalog["id"])
        print(
            f"\ncalibstream measure ({n_ours} sources, threshold "
            f"{config.detection.threshold}σ PSF-matched), seconds per stage:"
        )
        print(f"  {'stage':<12s} {'first':>7s} {'steady':>7s}")
        for stage in warm:
            print(f"  {stage:<12s} {cold[stage]:7.3f} {warm[stage]:7.3f}")
        total, total_cold = sum(warm.values()), sum(cold.values())
        print(f"  {'total':<12s} {total_cold:7.3f} {total:7.3f}")

        if exe is None:
            print("\nsource-extractor not found (apt-get install source-extractor): no peer figure")
            return
        se_times = [
            run_sextractor(
                exe,
                work / "image.fits",
                work / "variance.fits",
                exposure.psf.fwhm,
                config.measurement.aperture_radii,
                work,
            )
            for _ in range(args.repeat)
        ]
        with fits.open(work / "se.cat") as hdul:
            n_se = len(hdul[-1].data)
        se_total = min(se_times)
        print(
            f"\nsource-extractor ({n_se} sources, 1.5σ, min area 5, PSF-sized filter, "
            f"variance weight map): {se_total:.3f} s"
        )
        print(
            f"\nratio calibstream / SExtractor: {total / se_total:.2f}x steady state "
            f"(a worker's exposures after its first), {total_cold / se_total:.2f}x for the "
            "first exposure of a process, its imports done (a fresh process, imports and "
            "all: benchmarks/calibrate.py --fresh N)"
        )


if __name__ == "__main__":
    main()
