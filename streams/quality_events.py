"""The events' quality fields (v3): summary statistics, verdicts, status, partial calibrations.

Pure conversions between the core's :class:`~calibstream.assess.Assessment`,
:class:`~calibstream.verdicts.Partial` and the records of ``schemas/*.v3.avsc``; the events
themselves are :mod:`streams.events`'. A v1 or v2 event read as v3 has these fields'
defaults (no statistics, no verdicts, status ``ok``, not partial): its consumer computes what
the event allows (the sink: :func:`calibstream.io.outputs.assessed`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from calibstream import __version__
from calibstream.assess import Assessment
from calibstream.io.outputs import finite_or_none
from calibstream.summary_stats import SummaryStats
from calibstream.verdicts import Partial, Verdict
from streams.wire import catalog_to_columns, stats_to_record

if TYPE_CHECKING:  # photocal loads scipy.spatial, needed only once photometry runs
    from calibstream.photometry.photocal import PhotoCalResult

NAN = math.nan


def photometry_fields(photometry: PhotoCalResult | None) -> dict[str, Any]:
    """The zero-point event's photometric fields; NaN (or none) when photometry did not fit."""
    if photometry is None:
        return {
            "magzero": NAN, "magzero_err": NAN, "magzero_rms": NAN, "magzero_nobj": 0,
            "colorterm": [], "nreserved": 0, "reserved_mean_offset": None, "sigma_int": NAN,
        }  # fmt: skip
    return {
        "magzero": float(photometry.magzero),
        "magzero_err": float(photometry.magzero_err),
        "magzero_rms": float(photometry.magzero_rms),
        "magzero_nobj": int(photometry.nobj),
        "colorterm": [float(c) for c in photometry.colorterm],
        "nreserved": int(photometry.nreserved),
        "reserved_mean_offset": finite_or_none(photometry.reserved_mean_offset),
        "sigma_int": float(photometry.sigma_int),
    }


def assessment_fields(assessment: Assessment | None) -> dict[str, Any]:
    """The zero-point event's summary_stats, verdicts, status and partial."""
    if assessment is None:
        return {"summary_stats": None, "verdicts": [], "status": "ok", "partial": None}
    partial = assessment.partial
    return {
        "summary_stats": stats_to_record(assessment.stats),
        "verdicts": [v.as_record() for v in assessment.verdicts],
        "status": assessment.status,
        "partial": None if partial is None else partial.as_record(),
    }


def assessment_from_event(event: Mapping[str, Any]) -> Assessment | None:
    """The assessment a zero-point event carries; None when it has no statistics (a writer
    older than v3)."""
    stats = SummaryStats.from_record(event.get("summary_stats"))
    if stats is None:
        return None
    return Assessment(
        stats=stats,
        verdicts=tuple(Verdict.from_record(v) for v in event.get("verdicts", [])),
        status=str(event.get("status", "ok")),
        partial=Partial.from_record(event.get("partial")),
    )


def partial_of_event(event: Mapping[str, Any]) -> Partial | None:
    return Partial.from_record(event.get("partial"))


def partial_match_event(
    detection: Mapping[str, Any],
    catalog: Mapping[str, np.ndarray],
    partial: Partial,
    timings: Mapping[str, float],
) -> dict:
    """The match event of an exposure whose astrometry did not fit: the first-guess WCS and
    positions (``catalog``, flagged), nothing fitted (NaN), no matches, no references."""
    pairs = {"source": np.zeros(0, dtype=np.int64), "distance_mas": np.zeros(0)}
    return {
        **{name: detection[name] for name in ("exposure_id", "input", "metadata", "psf_fwhm")},
        "image_height": detection["image_height"],
        "image_width": detection["image_width"],
        "wcs": detection["first_guess_wcs"],
        "astrms_mas": NAN,
        "astnmatch": 0,
        "distortion": "",
        "fit_order": 0,
        "n_refs": 0,
        "match_radius_arcsec": NAN,
        "n_sources": len(catalog["id"]),
        "catalog": catalog_to_columns(catalog),
        "matches": catalog_to_columns(pairs),
        "references": catalog_to_columns({"id": np.zeros(0, dtype=np.int64)}),
        "background": detection["background"],
        "timings": {**detection["timings"], **timings},
        "software_version": __version__,
        "summary_stats": detection.get("summary_stats"),
        "partial": partial.as_record(),
        "first_guess_wcs": detection["first_guess_wcs"],
    }
