"""Peak memory of one calibration, as ``calibstream calibrate`` runs it (issue 17).

One simulated exposure is calibrated in a fresh Python process (its VmHWM is its own: a
new address space), through the command's own entry point. The baseline counts every
module the calibration loads, those imported lazily included (the astrometric fit and
photocal load scipy.spatial once detection is done). What the calibration adds over
the imports must stay within a few input planes (image, mask, variance: 12 bytes a
pixel): measured 2.00 planes at 2048² (2.25 before issue 17's last round: the summary
reading the background model at its pixels, a uint16 mask and segmentation map, the S/N
image reading its invalid pixels off the mask; 2.8 before the S/N image subtracted the
background band by band). A regression that adds back one full-size float32 plane
(a third of the input planes) fails it.
"""

from __future__ import annotations

from pathlib import Path

from measured import calibrate_measured

from calibstream.astrometry.refcat import ingest_refcat
from calibstream.simulate.survey import write_simulation

SIZE = (2048, 2048)
#: Bytes a pixel of the input planes: float32 image and variance, 32-bit mask.
PLANE_BYTES = 12
#: The bound on the peak beyond the imports, in input planes (measured 2.00).
MAX_PLANES = 2.25


def test_peak_memory_of_one_calibration(tmp_path: Path) -> None:
    paths = write_simulation(tmp_path / "sim", n=1, size=SIZE, seed=7)
    ingest_refcat([tmp_path / "sim" / "refcat.fits"], tmp_path / "store")
    usage = calibrate_measured(tmp_path / "store", tmp_path / "out", paths[0])
    planes = SIZE[0] * SIZE[1] * PLANE_BYTES / 2**20
    print(
        f"\n{SIZE[0]}x{SIZE[1]}: peak RSS {usage.peak_mb:.0f} MB, imports "
        f"{usage.imports_mb:.0f} MB, beyond them {usage.beyond_mb:.0f} MB = "
        f"{usage.beyond_mb / planes:.2f} x the input planes ({planes:.0f} MB; bound {MAX_PLANES})"
    )
    assert usage.code == 0
    assert usage.beyond_mb <= MAX_PLANES * planes
