"""One ``calibstream calibrate`` run in a fresh Python process, measured: its exit code,
CPU seconds and peak resident memory beyond its imports (VmHWM is the child's own: a new
address space). Shared by the memory and crowded-field tests."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CHILD = """
import json, re, sys, time
def kib(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
import streams.batch, streams.cli  # the command's imports, before any pixel
# and those it makes later, when a step first needs them (lazily: after detection's peak)
import calibstream.astrometry.fit, calibstream.astrometry.solve, calibstream.photometry.photocal
imports = kib("VmRSS")
start = time.process_time()
code = streams.cli.main(["calibrate", "--refcat", sys.argv[1], "--out", sys.argv[2], sys.argv[3]])
cpu = time.process_time() - start
print(json.dumps({"code": code, "imports_kib": imports, "peak_kib": kib("VmHWM"), "cpu_s": cpu}))
"""


@dataclass(frozen=True)
class Measured:
    code: int
    imports_mb: float
    peak_mb: float
    cpu_s: float

    @property
    def beyond_mb(self) -> float:
        """What the calibration added over the imports."""
        return self.peak_mb - self.imports_mb


def calibrate_measured(store: Path, out: Path, exposure: Path, timeout: float = 300) -> Measured:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(store), str(out), str(exposure)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    usage = json.loads(done.stdout.strip().splitlines()[-1])
    kib = 1024
    return Measured(
        usage["code"], usage["imports_kib"] / kib, usage["peak_kib"] / kib, usage["cpu_s"]
    )
