"""CalibrateTask's stages, as the agents and the batch command run them.

1. :func:`detect`: read the characterized exposure, detect and measure deep;
2. :func:`astrometry`: reference stars in the footprint at the epoch, TAN-SIP, matches;
3. :func:`photometry`: the zero-point, calibrated magnitudes, the folder's content;
4. persist: :func:`calibstream.io.outputs.write_calibration`.

Each labels the errors it raises with its stage. Stages 2 and 3 read no pixels, only
the catalog and the :class:`~calibstream.frame.Frame`, so each runs on its own event.
Pure but for reading the exposure and the reference store.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibstream.astrometry.refcat import RefCatalog, ShardCache
from calibstream.astrometry.solve import AstrometricSolution, Matches, solve_astrometry
from calibstream.config import Config
from calibstream.detection.background import Background
from calibstream.detection.pipeline import Measurement, measure_exposure
from calibstream.errors import stage
from calibstream.frame import Frame, frame_of
from calibstream.io.exposure import read_exposure
from calibstream.io.outputs import CalibratedExposure, persisted_exposure
from calibstream.photometry.calibrate import calibrate_photometry
from calibstream.photometry.photocal import PhotoCalResult


def detect(uri: Path, config: Config) -> tuple[Frame, Measurement]:
    """The exposure's frame and deep catalog; its timings include the read."""
    start = time.perf_counter()
    with stage("read"):
        exposure = read_exposure(uri)
    read = time.perf_counter() - start
    with stage("detect"):
        measurement = measure_exposure(exposure, config)
    timings = {"read": read, **measurement.timings}
    return frame_of(exposure), dataclasses.replace(measurement, timings=timings)


def astrometry(
    frame: Frame,
    catalog: dict[str, np.ndarray],
    store: Path,
    config: Config,
    cache: ShardCache | None = None,
) -> AstrometricSolution:
    with stage("astrometry"):
        return solve_astrometry(frame, catalog, store, config, cache)


@dataclass(frozen=True)
class Fitted:
    """What the photometric stage starts from: the astrometric stage's results."""

    frame: Frame  # with the fitted WCS
    catalog: dict[str, np.ndarray]  # with sky positions
    refs: RefCatalog
    matches: Matches
    astrms_mas: float
    astnmatch: int
    background: Background


def photometry(
    fitted: Fitted, config: Config, store: Path | None = None, cache: ShardCache | None = None
) -> tuple[PhotoCalResult, CalibratedExposure, dict[str, float]]:
    """The zero-point, and the exposure's folder content (what the sink persists)."""
    with stage("photometry"):
        result, catalog, timings = calibrate_photometry(
            fitted.frame, fitted.catalog, fitted.refs, fitted.matches, config, store, cache
        )
    calibrated = persisted_exposure(
        fitted.frame.metadata,
        fitted.frame.wcs_header,
        fitted.astrms_mas,
        fitted.astnmatch,
        result,
        catalog,
        fitted.refs,
        fitted.matches,
        fitted.background,
    )
    return result, calibrated, timings
