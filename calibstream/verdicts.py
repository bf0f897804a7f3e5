"""Quality verdicts and an exposure's status (pure functions).

Each verdict is a flag and a reason: a reason code (``astrom_offset``, ``psf_too_large``,
...), the figure, its threshold (``[verdicts]``) and words. An exposure is

* ``ok``: calibrated, no verdict flagged;
* ``warning`` ("ok with warnings"): calibrated, at least one verdict flagged;
* ``partial``: a stage could not fit for the data's fault (astrometry or photometry), the
  folder holds what was fitted (:class:`Partial` says what was not, and why);
* ``failed``: nothing usable (the failure summary, written elsewhere).

Verdicts are judged only on what was fitted: a partial exposure has no photometric
verdicts when photometry did not run, and no astrometric ones when astrometry did not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibstream.quality_config import Fiducial, VerdictConfig
from calibstream.summary_stats import SummaryStats

#: The statuses of an exposure's folder; all but ``failed`` hold a calibration (whole or
#: partial) that a later failure never replaces.
OK, WARNING, PARTIAL, FAILED = "ok", "warning", "partial", "failed"
CALIBRATED = (OK, WARNING, PARTIAL)
STATUSES = (*CALIBRATED, FAILED)


@dataclass(frozen=True)
class Partial:
    """What a partial calibration lacks: the stage that could not fit, the error's kind, and
    the reason in words (as a failure would say them)."""

    stage: str
    error: str
    reason: str

    def as_record(self) -> dict[str, str]:
        return {"stage": self.stage, "error": self.error, "reason": self.reason}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Partial | None:
        if record is None:
            return None
        return cls(str(record["stage"]), str(record["error"]), str(record["reason"]))


@dataclass(frozen=True)
class Verdict:
    """One check of one figure: ``flag`` True when it is past its threshold."""

    code: str  # reason code
    group: str  # astrometric, photometric, image
    flag: bool
    value: float | None
    threshold: float
    reason: str  # words: what was found against what is allowed

    def as_record(self) -> dict[str, Any]:
        return {
            "code": self.code, "group": self.group, "flag": self.flag,
            "value": self.value, "threshold": self.threshold, "reason": self.reason,
        }  # fmt: skip

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Verdict:
        value = record.get("value")
        return cls(
            str(record["code"]), str(record["group"]), bool(record["flag"]),
            None if value is None else float(value), float(record["threshold"]),
            str(record["reason"]),
        )  # fmt: skip


#: code -> (group, FITS key of its flag, what it checks)
CODES = {
    "astrom_offset": ("astrometric", "QAASTOFF", "mean astrometric offset"),
    "astrom_scatter": ("astrometric", "QAASTRMS", "astrometric scatter ASTRMS"),
    "astrom_few_matches": ("astrometric", "QAASTNM", "astrometric matches"),
    "phot_scatter": ("photometric", "QAPHRMS", "zero-point scatter MAGZERO_RMS"),
    "phot_few_stars": ("photometric", "QAPHNST", "photometric calibration stars"),
    "phot_colour_coverage": ("photometric", "QAPHCOL", "colour span of the calibration stars"),
    "psf_too_large": ("image", "QAPSF", "PSF sigma over the band's fiducial"),
    "sky_too_bright": ("image", "QASKY", "sky rate over the band's fiducial"),
    "too_shallow": ("image", "QADEPTH", "depth loss against the fiducial m5"),
}


def _check(code: str, value: float | None, threshold: float, unit: str, most: bool) -> Verdict:
    """``value`` against ``threshold``: at most it (``most``) or at least it; unknown
    values are not flagged (there is nothing to judge)."""
    group, _, what = CODES[code]
    if value is None or not math.isfinite(value):
        return Verdict(code, group, False, None, threshold, f"{what}: unknown")
    flag = value > threshold if most else value < threshold
    bound = "at most" if most else "at least"
    words = f"{what} {value:.4g}{unit}, {bound} {threshold:.4g}{unit} allowed"
    return Verdict(code, group, bool(flag), float(value), float(threshold), words)


@dataclass(frozen=True)
class Figures:
    """What the verdicts judge besides the summary statistics: ``astnmatch`` None when
    astrometry did not fit, ``magzero_nobj`` None when photometry did not; ASTRMS and
    MAGZERO_RMS may be unknown (a fit without freedom, one star) when they did."""

    astrms_mas: float | None
    astnmatch: int | None
    magzero_rms: float | None
    magzero_nobj: int | None
    colours: np.ndarray | None  # reference colour of each star used in the zero-point


def judge(
    stats: SummaryStats,
    figures: Figures,
    exptime: float,
    fiducial: Fiducial | None,
    config: VerdictConfig,
) -> tuple[Verdict, ...]:
    """The verdicts on what was fitted: astrometric when astrometry fitted, photometric when
    the zero-point did, image verdicts when the band has a fiducial."""
    verdicts: list[Verdict] = []
    if figures.astnmatch is not None:
        verdicts += [
            _check("astrom_offset", stats.astromOffsetMean, config.max_astrom_offset, '"', True),
            _check("astrom_scatter", figures.astrms_mas, config.max_astrms, " mas", True),
            _check(
                "astrom_few_matches", figures.astnmatch, config.min_astrometric_matches, "", False
            ),
        ]
    if figures.magzero_nobj is not None:
        verdicts += [
            _check("phot_scatter", figures.magzero_rms, config.max_magzero_rms, " mag", True),
            _check(
                "phot_few_stars", figures.magzero_nobj, config.min_photometric_stars, "", False
            ),
            _check("phot_colour_coverage", colour_span(figures.colours), config.min_colour_span,
                   " mag", False),
        ]  # fmt: skip
    if fiducial is not None:
        verdicts += _image_verdicts(stats, exptime, fiducial, config)
    return tuple(verdicts)


def _image_verdicts(
    stats: SummaryStats, exptime: float, fiducial: Fiducial, config: VerdictConfig
) -> list[Verdict]:
    psf = None if stats.psfSigma is None else stats.psfSigma / fiducial.psf_sigma
    sky = None if stats.skyBg is None else stats.skyBg / exptime / fiducial.sky
    loss = None
    if stats.magLim is not None:
        expected = fiducial.m5 + 1.25 * math.log10(exptime / fiducial.exptime)
        loss = expected - stats.magLim
    return [
        _check("psf_too_large", psf, config.max_psf_sigma_ratio, "x", True),
        _check("sky_too_bright", sky, config.max_sky_ratio, "x", True),
        _check("too_shallow", loss, config.max_depth_loss, " mag", True),
    ]


def colour_span(colours: np.ndarray | None) -> float | None:
    """The 5th to 95th percentile span of the finite ``colours`` (None: none known)."""
    if colours is None:
        return None
    finite = np.asarray(colours, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [5, 95])
    return float(high - low)


def status_of(verdicts: tuple[Verdict, ...], partial: Partial | None) -> str:
    """``partial`` when a stage could not fit, else ``warning`` when a verdict is flagged,
    else ``ok``."""
    if partial is not None:
        return PARTIAL
    return WARNING if any(v.flag for v in verdicts) else OK


def flagged(verdicts: tuple[Verdict, ...]) -> list[str]:
    """The reason codes of the flagged verdicts, in the order judged."""
    return [v.code for v in verdicts if v.flag]
