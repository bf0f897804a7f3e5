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

import json
import subprocess
import sys
from pathlib import Path

from calibstream.astrometry.refcat import ingest_refcat
from calibstream.simulate.survey import write_simulation

SIZE = (2048, 2048)
#: Bytes a pixel of the input planes: float32 image and variance, 32-bit mask.
PLANE_BYTES = 12
#: The bound on the peak beyond the imports, in input planes (measured 2.00).
MAX_PLANES = 2.25

CHILD = """
import json, re, sys
def kib(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
import streams.batch, streams.cli  # the command's imports, before any pixel
# and those it makes later, when a step first needs them (lazily: after detection's peak)
import calibstream.astrometry.fit, calibstream.astrometry.solve, calibstream.photometry.photocal
imports = kib("VmRSS")
code = streams.cli.main(["calibrate", "--refcat", sys.argv[1], "--out", sys.argv[2], sys.argv[3]])
print(json.dumps({"code": code, "imports_kib": imports, "peak_kib": kib("VmHWM")}))
"""


def test_peak_memory_of_one_calibration(tmp_path: Path) -> None:
    paths = write_simulation(tmp_path / "sim", n=1, size=SIZE, seed=7)
    ingest_refcat([tmp_path / "sim" / "refcat.fits"], tmp_path / "store")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "store"), str(tmp_path / "out"), paths[0]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    usage = json.loads(done.stdout.strip().splitlines()[-1])
    planes = SIZE[0] * SIZE[1] * PLANE_BYTES / 2**20
    beyond = (usage["peak_kib"] - usage["imports_kib"]) / 1024
    print(
        f"\n{SIZE[0]}x{SIZE[1]}: peak RSS {usage['peak_kib'] / 1024:.0f} MB, imports "
        f"{usage['imports_kib'] / 1024:.0f} MB, beyond them {beyond:.0f} MB = "
        f"{beyond / planes:.2f} x the input planes ({planes:.0f} MB; bound {MAX_PLANES})"
    )
    assert usage["code"] == 0
    assert beyond <= MAX_PLANES * planes
