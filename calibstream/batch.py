"""``calibstream calibrate``: the whole chain for each exposure file, in one process.

Every exposure ends as a complete folder or as a failure summary with its
reason; one bad exposure never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from calibstream.astrometry.refcat import ShardCache
from calibstream.calibrate import calibrate_exposure
from calibstream.config import Config
from calibstream.errors import CalibstreamError, stage
from calibstream.io.exposure import read_exposure
from calibstream.io.outputs import write_calibration, write_failure


@dataclass(frozen=True)
class Outcome:
    path: Path
    expid: int | str
    status: str  # "ok" or "failed"
    folder: Path
    reason: str = ""
    summary: dict | None = None


def calibrate_file(
    path: Path,
    refcat: Path,
    root: Path,
    config: Config,
    photometry_refcat: Path | None = None,
    cache: ShardCache | None = None,
) -> Outcome:
    """Calibrate one file and persist the result (or the failure)."""
    metadata = None
    try:
        with stage("read"):
            exposure = read_exposure(path)
        metadata = exposure.metadata
        calibration = calibrate_exposure(exposure, refcat, config, photometry_refcat, cache)
        folder = write_calibration(calibration, root)
        return Outcome(path, metadata.expid, "ok", folder)
    except CalibstreamError as exc:
        expid = metadata.expid if metadata is not None else expid_of_unreadable(path)
        folder = write_failure(
            root,
            expid,
            exc.stage or "calibrate",
            exc.kind,
            str(exc),
            metadata,
            {"input": str(path)},
        )
        return Outcome(path, expid, "failed", folder, str(exc))


def expid_of_unreadable(path: Path) -> int | str:
    """The EXPID of a file that failed to read, if its primary header survives; else its name."""
    try:
        with fits.open(path) as hdul:
            return int(hdul[0].header["EXPID"])
    except Exception:
        return path.stem
