"""One detector's part of a visit (:class:`DetectorOutcome`), from its exposure's summary.

What a visit needs of a calibrated (or failed) exposure is small: its status and why,
the zero-point, a few summary statistics and where the detector lies on the sky
through the first guess and the fitted WCS. It is kept as plain JSON in the visit's
state, so :meth:`DetectorOutcome.to_dict` and :meth:`DetectorOutcome.from_dict` round
trip exactly (floats as Python's shortest repr, points as lists).

``sky`` is Rubin's ``skyBg`` (the sky level, electrons per pixel), ``seeing`` the PSF's
FWHM in arcsec (``psfSigma`` x sqrt(8 ln 2) x ``pixelScale``), ``m5`` Rubin's
``magLim`` and ``astrms`` the header's ASTRMS in mas.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from calibstream.summary_stats import FWHM_PER_SIGMA

STATUSES = ("ok", "partial", "failed")
#: An exposure folder's status -> the visit's: a calibration with warnings is calibrated.
_FOLDER_STATUS = {"ok": "ok", "warning": "ok", "partial": "partial", "failed": "failed"}

Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class DetectorOutcome:
    """What one detector contributes to its visit (units: see this module)."""

    detector: int
    expid: int
    status: str  # "ok" | "partial" | "failed"
    reason: str | None = None
    band: str | None = None
    magzero: float | None = None
    magzero_err: float | None = None
    seeing: float | None = None  # arcsec
    sky: float | None = None  # skyBg, e-/px
    m5: float | None = None  # magLim
    astrms: float | None = None  # mas
    #: the detector's centre and corners on the sky: first guess and fitted WCS, (ra, dec)
    #: deg; None where not fitted. Order: centre, then 0-based pixel corners (0, 0),
    #: (nx-1, 0), (nx-1, ny-1), (0, ny-1).
    guess_points: Points | None = None
    fitted_points: Points | None = None

    def __post_init__(self) -> None:
        """A status outside the three would be folded into no list of the summary."""
        if self.status not in STATUSES:
            raise ValueError(f"detector {self.detector}: status {self.status!r} not in {STATUSES}")
        if isinstance(self.detector, bool) or not isinstance(self.detector, int):
            raise ValueError(f"detector id must be an integer, got {self.detector!r}")

    def to_dict(self) -> dict:
        """JSON-safe: points as lists of [ra, dec]; exact floats."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("guess_points", "fitted_points"):
            if out[key] is not None:
                out[key] = [list(p) for p in out[key]]
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> DetectorOutcome:
        """Inverse of :meth:`to_dict`; ValueError naming an unknown or missing field."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"detector outcome: unknown field(s) {unknown}")
        missing = sorted({"detector", "expid", "status"} - set(d))
        if missing:
            raise ValueError(f"detector outcome: missing field(s) {missing}")
        values = dict(d)
        for key in ("guess_points", "fitted_points"):
            if values.get(key) is not None:
                values[key] = _points(values[key])
        return cls(**values)


def _points(items) -> Points:
    """(ra, dec) pairs as a tuple of float pairs."""
    return tuple((float(ra), float(dec)) for ra, dec in items)


def outcome_from_summary(
    summary: Mapping,
    guess_wcs_header: Mapping | None,
    fitted_wcs_header: Mapping | None,
    shape: tuple[int, int],
    *,
    detector: int | None = None,
) -> DetectorOutcome:
    """A detector's outcome from its exposure's summary.json and the two WCS headers.

    ``shape`` is numpy's (ny, nx). The fitted header counts only when astrometry fitted
    (it has ASTNMATCH: a partial calibration's calexp holds the first guess otherwise).
    A failure to read a file names no detector in its summary: pass ``detector`` (from
    the file's primary header or the event) then; a detector in the summary wins.
    """
    status = _FOLDER_STATUS.get(summary.get("status"))  # type: ignore[arg-type]
    if status is None:
        raise ValueError(f"summary status {summary.get('status')!r} is not an exposure status")
    header = summary.get("header") or {}
    det = summary.get("detector", header.get("DETECTOR", detector))
    expid = summary.get("expid")
    if det is None or not isinstance(expid, int) or isinstance(expid, bool):
        raise ValueError(f"summary names no detector or no integer expid: {det!r}, {expid!r}")
    stats = summary.get("summary_stats") or {}
    calibrated = status != "failed"
    fitted = fitted_wcs_header if fitted_wcs_header and "ASTNMATCH" in fitted_wcs_header else None
    return DetectorOutcome(
        detector=int(det),
        expid=expid,
        status=status,
        reason=_reason(summary, status),
        band=summary.get("band"),
        magzero=_finite(header.get("MAGZERO")) if calibrated else None,
        magzero_err=_finite(header.get("MAGZERO_ERR")) if calibrated else None,
        seeing=_seeing(stats),
        sky=_finite(stats.get("skyBg")),
        m5=_finite(stats.get("magLim")),
        astrms=_finite(header.get("ASTRMS")) if calibrated else None,
        guess_points=wcs_points(guess_wcs_header, shape) if guess_wcs_header else None,
        fitted_points=wcs_points(fitted, shape) if fitted and calibrated else None,
    )


def _reason(summary: Mapping, status: str) -> str | None:
    """A failure's or partial's reason; a calibration with warnings names its flags."""
    if status != "ok":
        return str(summary.get("reason") or summary.get("error") or status)
    flags = summary.get("flags") or []
    return f"warning: {', '.join(map(str, flags))}" if flags else None


def _finite(value) -> float | None:
    """A number as float, None for null, NaN or anything not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _seeing(stats: Mapping) -> float | None:
    """FWHM in arcsec from Rubin's psfSigma (px) and pixelScale (arcsec/px)."""
    sigma, scale = _finite(stats.get("psfSigma")), _finite(stats.get("pixelScale"))
    return None if sigma is None or scale is None else sigma * FWHM_PER_SIGMA * scale


def point_pixels(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """0-based (x, y) of the centre and the four corners of a (ny, nx) detector."""
    ny, nx = (int(s) for s in shape)
    x = np.array([(nx - 1) / 2.0, 0.0, nx - 1.0, nx - 1.0, 0.0])
    y = np.array([(ny - 1) / 2.0, 0.0, 0.0, ny - 1.0, ny - 1.0])
    return x, y


def wcs_points(header: Mapping, shape: tuple[int, int]) -> Points:
    """The centre and corners through a WCS given as FITS header cards (a mapping)."""
    cards = fits.Header()
    for key, value in header.items():
        if key not in ("COMMENT", "HISTORY", "") and value is not None:
            cards[key if len(key) <= 8 else f"HIERARCH {key}"] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(cards, naxis=2, relax=True)
    if not wcs.has_celestial:
        raise ValueError("WCS header has no celestial axes")
    x, y = point_pixels(shape)
    ra, dec = wcs.all_pix2world(x, y, 0)
    return _points(zip(np.asarray(ra) % 360.0, np.asarray(dec), strict=True))
