"""CalibrateTask's stages, as the agents and the batch command run them.

1. :func:`detect`: read the characterized exposure, detect and measure deep;
2. :func:`astrometry`: reference stars in the footprint at the epoch, TAN-SIP, matches;
3. :func:`photometry`: the zero-point, calibrated magnitudes, the folder's content;
4. persist: :func:`calibstream.io.outputs.write_calibration`.

Each labels the errors it raises with its stage. Reading holds the file to the
configuration's ``[limits]`` (before any plane) and ``[sanity]``; the photometric stage
holds MAGZERO and MAGZERO_ERR to ``[sanity]``. Stages 2 and 3 read no pixels, only
the catalog and the :class:`~calibstream.frame.Frame`, so each runs on its own event.
Pure but for reading the exposure and the reference store.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from calibstream.config import Config
from calibstream.detection.background import Background
from calibstream.detection.pipeline import Measurement, measure_exposure
from calibstream.errors import CalibstreamError, ExpidMismatchError, stage
from calibstream.frame import Frame, frame_of
from calibstream.io.exposure import Exposure, read_exposure
from calibstream.io.outputs import CalibratedExposure, persisted_exposure
from calibstream.partial import (
    first_guess_positions,
    fitted_positions,
    partial_of,
    without_photometry,
)
from calibstream.summary_image import image_summary
from calibstream.verdicts import Partial

if TYPE_CHECKING:  # stages 2 and 3 import theirs when they run: after detection's peak
    from calibstream.astrometry.refcat import RefCatalog, ShardCache
    from calibstream.astrometry.solve import AstrometricSolution, Matches
    from calibstream.photometry.photocal import PhotoCalResult


def detect(uri: Path, config: Config, expid: int | None = None) -> tuple[Frame, Measurement]:
    """The exposure's frame and deep catalog (with the pixels' summary statistics and the
    PSF stars' shapes); its timings include the read. ``expid``: the exposure id the file
    must have (the event's), if given."""
    start = time.perf_counter()
    with stage("read"):
        exposure = narrow_mask(read_exposure(uri, config.limits, config.sanity))
        if expid is not None and exposure.metadata.expid != expid:
            raise ExpidMismatchError(
                f"the file's EXPID {exposure.metadata.expid} is not the event's exposure id "
                f"{expid}",
                where="EXPID",
            )
    read = time.perf_counter() - start
    with stage("detect"):
        measurement = measure_exposure(exposure, config)
        start = time.perf_counter()
        stats, shapes = image_summary(
            exposure,
            measurement.catalog,
            measurement.background,
            config.fiducials.get(exposure.metadata.band),
            config.summary,
        )
    timings = {"read": read, **measurement.timings, "summary": time.perf_counter() - start}
    frame = dataclasses.replace(frame_of(exposure), stats=stats)
    catalog = {**measurement.catalog, **shapes}
    return frame, dataclasses.replace(measurement, catalog=catalog, timings=timings)


#: The largest mask value, and plane bit, a 16-bit mask holds.
_UINT16_MAX = 0xFFFF


def narrow_mask(exposure: Exposure) -> Exposure:
    """``exposure`` with its mask as uint16 when every value and declared plane fits (the
    same bits: a 4k×4k mask 32 MB smaller through the whole detect stage), else as read."""
    mask = exposure.mask
    planes = exposure.mask_planes.values()
    if mask.dtype == np.uint16 or max(planes, default=0) >= 16 or mask.size == 0:
        return exposure
    if mask.min() < 0 or mask.max() > _UINT16_MAX:
        return exposure
    return dataclasses.replace(exposure, mask=mask.astype(np.uint16))


def astrometry(
    frame: Frame,
    catalog: dict[str, np.ndarray],
    store: Path,
    config: Config,
    cache: ShardCache | None = None,
) -> AstrometricSolution:
    from calibstream.astrometry.solve import solve_astrometry

    with stage("astrometry"):
        return solve_astrometry(frame, catalog, store, config, cache)


def astrometry_or_partial(
    frame: Frame,
    catalog: dict[str, np.ndarray],
    store: Path,
    config: Config,
    cache: ShardCache | None = None,
) -> AstrometricSolution | Partial:
    """The astrometric solution (its catalogue's first-guess flag down), or, when the fit
    fails for the data's fault, what it lacks (:mod:`calibstream.partial`)."""
    try:
        solution = astrometry(frame, catalog, store, config, cache)
    except CalibstreamError as exc:
        return partial_of(exc, "astrometry")
    return dataclasses.replace(solution, catalog=fitted_positions(solution.catalog))


@dataclass(frozen=True)
class Fitted:
    """What the photometric stage starts from: the astrometric stage's results."""

    frame: Frame  # with the fitted WCS (the first guess when astrometry did not fit)
    catalog: dict[str, np.ndarray]  # with sky positions
    refs: RefCatalog
    matches: Matches
    astrms_mas: float | None  # None: astrometry did not fit
    astnmatch: int
    background: Background
    partial: Partial | None = None  # astrometry did not fit: why


def photometry(
    fitted: Fitted, config: Config, store: Path | None = None, cache: ShardCache | None = None
) -> tuple[PhotoCalResult | None, CalibratedExposure, dict[str, float]]:
    """The zero-point (None when it could not be fitted: the calibration is partial), and
    the exposure's folder content (what the sink persists), assessed."""
    from calibstream.photometry.calibrate import calibrate_photometry

    result, partial, timings = None, fitted.partial, {}
    catalog = fitted.catalog
    if partial is None:
        try:
            with stage("photometry"):
                result, catalog, timings = calibrate_photometry(
                    fitted.frame, fitted.catalog, fitted.refs, fitted.matches, config, store,
                    cache,
                )  # fmt: skip
                config.sanity.check("magzero", result.magzero, "MAGZERO")
                config.sanity.check("magzero_err", result.magzero_err, "MAGZERO_ERR")
        except CalibstreamError as exc:
            result, partial = None, partial_of(exc, "photometry")
    if result is None:
        catalog = without_photometry(catalog)
    calibrated = persisted_exposure(
        fitted.frame,
        fitted.astrms_mas,
        fitted.astnmatch,
        result,
        catalog,
        None if fitted.partial is not None else (fitted.refs, fitted.matches),
        fitted.background,
        partial,
        config,
    )
    return result, calibrated, timings


def first_guess_fitted(
    frame: Frame, catalog: dict[str, np.ndarray], background: Background, partial: Partial
) -> Fitted:
    """What the photometric stage starts from when astrometry did not fit: the first-guess
    frame and positions, no references, no matches."""
    from calibstream.astrometry.refcat import RefCatalog
    from calibstream.astrometry.solve import Matches

    none = np.zeros(0, dtype=np.int64)
    return Fitted(
        frame=frame,
        catalog=first_guess_positions(catalog),
        refs=RefCatalog.from_columns({"id": none}),
        matches=Matches(none, none, np.zeros(0)),
        astrms_mas=None,
        astnmatch=0,
        background=background,
        partial=partial,
    )
