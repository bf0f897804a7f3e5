"""What the dashboard and its JSON API show, read from the read model, the outputs and the
broker: summaries, pages of exposures, one exposure, its quality plots. No HTTP here.

Everything is paged or aggregated so that the answers stay small however many exposures
the read model holds: exposures come newest first in pages bounded in time (a live stream
does not shift them), throughput is counted by Redis per minute, latency percentiles are
taken over the most recent exposures.
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
from streams.lag import PartitionLag
from streams.readmodel import Histogram, ReadModel

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
)

MAX_PAGE = 5000
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
        if status not in (None, "ok", "failed"):
            raise ValueError(f"status must be ok or failed, not {status!r}")
        limit = number("limit", int)
        return cls(
            limit=1000 if limit is None else max(1, min(MAX_PAGE, limit)),
            before_ms=number("before", float),
            since_ms=number("since", float),
            status=status,
            band=params.get("band") or None,
            visit=number("visit", int),
            detector=number("detector", int),
        )

    def matches(self, row: Mapping[str, Any]) -> bool:
        return (
            (self.band is None or row.get("band") == self.band)
            and (self.visit is None or row.get("visit") == self.visit)
            and (self.detector is None or row.get("detector") == self.detector)
        )

    @property
    def filtered(self) -> bool:
        return (self.band, self.visit, self.detector) != (None, None, None)


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
        """A page of exposure rows, newest first, and the cursor of the next (older) page."""
        rows = self.readmodel.page_metrics(
            query.limit,
            before_ms=query.before_ms,
            since_ms=query.since_ms,
            status=query.status,
            match=query.matches if query.filtered else None,
        )
        full = len(rows) == query.limit
        return {
            "rows": [_row(r) for r in rows],
            "next_before": rows[-1]["persisted_ms"] if rows and full else None,
        }

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
        rows = self.readmodel.page_metrics(LATENCY_WINDOW, status="ok")
        values = [r.get("latency_s") for r in rows]
        return {
            "p50_s": _percentile(values, 50),
            "p95_s": _percentile(values, 95),
            "over": len(rows),
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
