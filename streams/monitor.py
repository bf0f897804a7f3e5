"""What the dashboard and its JSON API show, read from the read model, the outputs and the
broker: summaries, pages of exposures, one exposure, its quality plots. No HTTP here.

Everything is paged or aggregated so that the answers stay small however many exposures
the read model holds: exposures come newest first in pages bounded in time (a live stream
does not shift them) and read through per-value indexes, never by scanning the rows
(:mod:`streams.readmodel_index`), the live stream follows the rows' arrival numbers a page
at a time, throughput is counted by Redis per minute, latency percentiles are taken over the
most recent exposures.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibstream.config import ColorTerm
from calibstream.io.outputs import exposure_dir, read_summary
from calibstream.quality import exposure_quality
from calibstream.verdicts import CALIBRATED, STATUSES
from streams.lag import PartitionLag
from streams.readmodel import Histogram, ReadModel
from streams.readmodel_index import index_value

__all__ = ["ROW_FIELDS", "ExposureQuery", "LagState", "Monitor"]

#: The fields of an exposure row that the page and the API carry (the read model's rows
#: also hold per-step timings, left out of lists).
ROW_FIELDS = (
    "expid",
    "visit",
    "detector",
    "band",
    "mjd_obs",
    "status",
    "magzero",
    "magzero_err",
    "magzero_rms",
    "magzero_nobj",
    "astrms_mas",
    "astnmatch",
    "n_sources",
    "latency_s",
    "submitted_ms",
    "persisted_ms",
    "stage",
    "error",
    "reason",
    "exptime",
    "psf_fwhm_arcsec",
    "sky_bg",
    "maglim",
    "efftime",
    "flags",
)

MAX_PAGE = 5000
LIVE_PAGE = 500  # rows per live message (a burst goes out in several)
LATENCY_WINDOW = 1000  # exposures the latency percentiles are taken over
THROUGHPUT_MINUTES = 60


@dataclass(frozen=True)
class ExposureQuery:
    """A page of exposures: newest first, before/since a time, filtered."""

    limit: int = 1000
    before_ms: float | None = None
    since_ms: float | None = None
    status: str | None = None
    band: str | None = None
    visit: int | None = None
    detector: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ExposureQuery:
        """From URL query parameters (raises ValueError on a malformed one)."""

        def number(name: str, kind: type) -> Any:
            value = params.get(name)
            return None if value in (None, "") else kind(value)

        status = params.get("status") or None
        if status not in (None, *STATUSES):
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        band = params.get("band") or None
        if band is not None and index_value(band) is None:
            raise ValueError("band must be a short one-line name")
        limit = number("limit", int)
        before_ms, since_ms = number("before", float), number("since", float)
        if not all(math.isfinite(t) for t in (before_ms, since_ms) if t is not None):
            raise ValueError("before and since must be finite times in ms")
        return cls(
            limit=1000 if limit is None else max(1, min(MAX_PAGE, limit)),
            before_ms=before_ms,
            since_ms=since_ms,
            status=status,
            band=band,
            visit=number("visit", int),
            detector=number("detector", int),
        )

    @property
    def where(self) -> dict[str, Any]:
        """The indexed filters given (band, visit, detector)."""
        given = {"band": self.band, "visit": self.visit, "detector": self.detector}
        return {name: value for name, value in given.items() if value is not None}


@dataclass
class LagState:
    """The broker's latest answer about the group's lag (refreshed in the background)."""

    partitions: list[PartitionLag] = field(default_factory=list)
    updated_ms: float | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "partitions": [p.as_dict() for p in self.partitions],
            "total": sum(p.lag for p in self.partitions),
            "updated_ms": self.updated_ms,
            "error": self.error,
        }


def _row(metrics: Mapping[str, Any]) -> dict:
    return {name: metrics.get(name) for name in ROW_FIELDS}


def _percentile(values: list[float], q: float) -> float | None:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return float(np.percentile(finite, q)) if finite else None


class Monitor:
    """The dashboard's data: every method returns JSON-ready values."""

    def __init__(
        self,
        readmodel: ReadModel,
        output_root: Path,
        colorterms: Mapping[str, ColorTerm],
        lag: LagState | None = None,
        clock: Any = time.time,
        summary_ttl_s: float = 1.0,
    ) -> None:
        self.readmodel = readmodel
        self.output_root = Path(output_root)
        self.colorterms = colorterms
        self.lag = lag or LagState()
        self._clock = clock
        self.summary_ttl_s = summary_ttl_s
        self._summary: tuple[float, dict] | None = None  # (when, what): shared by clients

    def exposures(self, query: ExposureQuery) -> dict:
        """A page of exposure rows, newest first, read through the indexes (a bounded number
        of entries: :data:`~streams.readmodel_index.READ_BUDGET`); ``next_before`` is where
        the next (older) page starts, ``partial`` says the read budget ended this one before
        it was full, ``cursor`` is where the live stream (``arrivals``) goes on from."""
        page = self.readmodel.query_metrics(
            query.limit,
            before_ms=query.before_ms,
            since_ms=query.since_ms,
            status=query.status,
            where=query.where,
        )
        return {
            "rows": [_row(r) for r in page.rows],
            "next_before": page.next_before,
            "partial": page.partial,
            "cursor": page.cursor,
        }

    def arrivals(self, after: int | None, limit: int = LIVE_PAGE) -> dict:
        """Rows recorded (new or changed) after the arrival cursor ``after``, oldest first,
        at most ``limit``, and the cursor after them (``after=None``: none, the cursor of
        now; the cursor is None while Redis is unavailable)."""
        found = self.readmodel.arrivals(after, limit)
        return {"rows": [_row(r) for r in found.rows], "cursor": found.cursor}

    def exposure(self, expid: int) -> dict | None:
        """One exposure: its read-model row (timings included) and its summary.json."""
        metrics = self.readmodel.metrics(expid)
        summary = read_summary(exposure_dir(self.output_root, expid))  # not its FITS files
        if metrics is None and summary is None:
            return None
        return {"metrics": metrics, "summary": summary}

    def quality(self, expid: int) -> dict | None:
        """The per-exposure page's plots (from the output folder)."""
        return exposure_quality(self.output_root, expid, self.colorterms)

    def throughput(self, now_ms: float, minutes: int = THROUGHPUT_MINUTES) -> dict:
        """Exposures persisted per minute over the last ``minutes`` (whole minutes, the
        current one last and partial), and the rate over the last five minutes."""
        this_minute = math.floor(now_ms / 60000.0) * 60000.0
        edges = [this_minute + 60000.0 * (i - minutes + 1) for i in range(minutes + 1)]
        intervals = [*itertools.pairwise(edges), (now_ms - 300000.0, now_ms + 1.0)]
        *counts, recent = self.readmodel.count_between(intervals)
        return {"minute_ms": edges[:-1], "count": counts, "per_minute_5": recent / 5.0}

    def latency(self) -> dict:
        """Percentiles over the latest calibrations (ok, with warnings or partial)."""
        rows = self.readmodel.page_metrics(LATENCY_WINDOW)
        values = [r.get("latency_s") for r in rows if r.get("status") in CALIBRATED]
        return {
            "p50_s": _percentile(values, 50),
            "p95_s": _percentile(values, 95),
            "over": len(values),
        }

    def counters(self) -> dict[str, dict[str, int]]:
        """Redis counters grouped by kind: ``processed``, ``failed``, ``deadletter``, ``cache``."""
        grouped: dict[str, dict[str, int]] = {}
        for name, value in self.readmodel.counters().items():
            kind, _, label = name.partition(":")
            grouped.setdefault(kind, {})[label] = value
        return grouped

    def histograms(self) -> dict[str, dict[str, Histogram]]:
        return {
            name: self.readmodel.histograms(name) for name in ("stage_seconds", "latency_seconds")
        }

    def summary(self) -> dict:
        """The page's figures; made at most once per ``summary_ttl_s`` however many live
        pages ask (each would otherwise read the latest 1,000 rows every 2 s)."""
        now = self._clock()
        if self._summary is not None and now - self._summary[0] < self.summary_ttl_s:
            return self._summary[1]
        summary = self._make_summary(now * 1000.0)
        self._summary = (now, summary)
        return summary

    def _make_summary(self, now_ms: float) -> dict:
        return {
            "now_ms": now_ms,
            "exposures": self.readmodel.count_by_status(),
            "throughput": self.throughput(now_ms),
            "latency": self.latency(),
            "counters": self.counters(),
            "lag": self.lag.as_dict(),
            "redis": self.readmodel.status(),
        }
