"""The read model: what the sink persisted and the service's metrics, in Redis for the dashboard.

Redis holds the sink's ledger of persisted exposures, a row per exposure for the dashboard
(what its output folder says, with the time and latency of its first persistence), and
throughput counters and histograms. It is never the only copy of anything: the truth is the
output folders on disk and the Kafka topics, and a flushed or lost Redis is rebuilt from the
folders (:mod:`streams.rebuild`; the workers notice an emptied Redis and do it on their own),
so nothing here may ever stop or slow calibration (see
:class:`~streams.redis_client.RedisClient`: every call degrades when Redis is down). The
reference-shard cache is :mod:`streams.shard_cache`, in a Redis of its own in production.
The rows' indexes (status, band, visit, detector, arrival) and the bounded queries over
them are :mod:`streams.readmodel_index`.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import redis

from streams.readmodel_index import (
    READ_BUDGET,
    RECORD_METRICS,
    Arrivals,
    IndexedQueries,
    MetricsPage,
)
from streams.readmodel_visits import VisitQueries, VisitReadModel
from streams.redis_client import COUNTERS, RedisClient, json_text, loads_row

__all__ = [
    "FIRST_FIELDS",
    "HISTOGRAM_BUCKETS_S",
    "Arrivals",
    "Histogram",
    "MetricsPage",
    "ReadModel",
    "RedisReadModel",
    "json_text",
]

#: Upper bounds (seconds) of the histograms' buckets: stage durations and latency.
HISTOGRAM_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: The fields of a row that belong to its first persistence. A record of the same folder
#: content (same status and ``fingerprint``, a digest of the folder's summary) or, for an ok
#: row, of the same submission (same ``submitted_ms``: a replay, a redelivery) keeps the
#: earlier values, and so the row's place in time; any other record replaces them.
FIRST_FIELDS = ("latency_s", "persisted_ms", "submitted_ms", "timings")


@dataclass(frozen=True)
class Histogram:
    """Observations counted per bucket: ``cumulative[i]`` observations <= ``bounds[i]``
    (the last bound is +inf), their ``sum`` and ``count``."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0


@runtime_checkable
class ReadModel(VisitReadModel, Protocol):
    """What the service's code asks of the read model: the workers' steps write it (``incr``,
    ``observe``, ``record_persisted``, ``record_metrics``), the dashboard reads it. The
    visits' share is :class:`~streams.readmodel_visits.VisitReadModel`."""

    @property
    def state(self) -> str:
        """``"up"``, ``"down"`` or ``"disabled"``: whether the read model is reachable now."""

    def status(self) -> dict:
        """State and error counts, for the dashboard (no secrets)."""

    def incr(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the throughput counter ``name`` (``"<kind>:<label>"``)."""

    def observe(self, name: str, label: str, seconds: float) -> None:
        """Count one observation of ``seconds`` in histogram ``name``, series ``label``."""

    def record_persisted(self, exposure_id: int | str, entry: dict) -> None:
        """Note in the ledger that the sink persisted an exposure."""

    def record_metrics(self, exposure_id: int | str, metrics: dict) -> bool:
        """Store an exposure's row, replacing any earlier one but for the fields of its first
        persistence; True when they are this record's (a first persistence)."""

    def metrics(self, exposure_id: int | str) -> dict | None:
        """One exposure's metrics row, or None."""

    def page_metrics(
        self,
        limit: int = 100,
        *,
        before_ms: float | None = None,
        since_ms: float | None = None,
        status: str | None = None,
        where: Mapping[str, Any] | None = None,
        budget: int = READ_BUDGET,
    ) -> list[dict]:
        """Metrics rows newest first between two times, filtered, at most ``limit``."""

    def query_metrics(
        self,
        limit: int = 100,
        *,
        before_ms: float | None = None,
        since_ms: float | None = None,
        status: str | None = None,
        where: Mapping[str, Any] | None = None,
        budget: int = READ_BUDGET,
    ) -> MetricsPage:
        """As ``page_metrics``, with where the next page starts and the arrival cursor."""

    def arrivals(self, after: int | None, limit: int = 500) -> Arrivals:
        """Rows recorded (new or changed) after an arrival cursor, oldest first."""

    def count_between(self, intervals: list[tuple[float, float]]) -> list[int]:
        """Exposures persisted in each ``[start, end)`` interval of ms."""

    def count_by_status(self) -> dict[str, int]:
        """Exposures in the read model by status (``ok``, ``failed``)."""

    def counters(self) -> dict[str, int]:
        """Every throughput counter by name."""

    def histograms(self, name: str) -> dict[str, Histogram]:
        """Every label's histogram of ``name``."""


class RedisReadModel(IndexedQueries, VisitQueries, RedisClient):
    """The read model in Redis: persisted ledger, metrics, counters and histograms.

    Every method is safe to call whatever Redis does (see :class:`RedisClient`): failures
    become None / empty results / dropped writes. ``url=None`` disables it for good.
    """

    role = "Redis read model"

    def __init__(
        self,
        url: str | None,
        *,
        prefix: str = "calibstream",
        socket_timeout: float = 0.5,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._record_script: Any = None
        super().__init__(
            url,
            prefix=prefix,
            socket_timeout=socket_timeout,
            retry_after=retry_after,
            clock=clock,
        )

    def _connected(self, client: redis.Redis) -> None:
        self._record_script = client.register_script(RECORD_METRICS)
        self._register_index_scripts(client)
        self._register_visit_scripts(client)

    # ------------------------------------------------------------------ persisted ledger

    def record_persisted(self, exposure_id: int | str, entry: dict) -> None:
        """Note that the sink persisted an exposure (status, folder, fingerprint, persisted_ms)."""
        text = json_text(entry)
        self._call(lambda r: r.hset(self._key("ledger"), str(exposure_id), text), None)

    def persisted(self, exposure_id: int | str) -> dict | None:
        """The ledger entry of an exposure, or None (unknown, or Redis unavailable)."""
        raw = self._call(lambda r: r.hget(self._key("ledger"), str(exposure_id)), None)
        return loads_row(raw)

    def ledger_size(self) -> int:
        """How many exposures the ledger holds (0 when Redis is unavailable)."""
        return int(self._call(lambda r: r.hlen(self._key("ledger")), 0))

    # ------------------------------------------------------------------ rebuilds

    def built(self) -> bool | None:
        """Whether this Redis was built from the folders since it was last empty (the
        ``built`` marker; :mod:`streams.rebuild`), None when Redis is unavailable."""
        return self._call(lambda r: bool(r.exists(self._key("built"))), None)

    def mark_built(self) -> None:
        """Set the ``built`` marker (no expiry: it goes only with the data, in a flush or a
        restart without persistence)."""
        self._call(lambda r: r.set(self._key("built"), str(int(time.time() * 1000))), None)

    def claim_rebuild(self, ttl_s: float) -> bool:
        """Take the rebuild for this process (SET NX, expiring after ``ttl_s`` in case it
        dies); False when another has it or Redis is unavailable."""
        ms = max(1, int(ttl_s * 1000))
        key = self._key("rebuilding")
        return bool(self._call(lambda r: r.set(key, "1", nx=True, px=ms), False))

    def renew_rebuild(self, ttl_s: float) -> None:
        """Push the claim's expiry ``ttl_s`` on (a long rebuild)."""
        self._call(lambda r: r.pexpire(self._key("rebuilding"), max(1, int(ttl_s * 1000))), None)

    def release_rebuild(self) -> None:
        self._call(lambda r: r.delete(self._key("rebuilding")), None)

    # ------------------------------------------------------------------ metrics

    def record_metrics(self, exposure_id: int | str, metrics: dict) -> bool:
        """Store an exposure's row, replacing any earlier one, except for the fields of its
        first persistence (:data:`FIRST_FIELDS`: kept for the same folder content or the
        same submission); ordered by ``persisted_ms`` (now when absent), indexed by
        ``status``, band, visit and detector. True when the row took this record's
        first-persistence fields (a first persistence: count its latency), False when it
        kept earlier ones (a replay, a redelivery) or Redis is unavailable."""
        keys, args = self._record_call(exposure_id, metrics)
        fresh = self._call(lambda r: self._record_script(keys=keys, args=args, client=r), 0)
        return bool(fresh)

    def record_metrics_batch(self, items: Iterable[tuple[int | str, dict]]) -> int:
        """:meth:`record_metrics` for many rows, pipelined (a test's 100,000 rows); returns
        how many took their first-persistence fields (0 when Redis is unavailable)."""

        def run(r: redis.Redis) -> int:
            pipe = r.pipeline(transaction=False)
            for exposure_id, metrics in items:
                keys, args = self._record_call(exposure_id, metrics)
                self._record_script(keys=keys, args=args, client=pipe)
            return sum(int(fresh) for fresh in pipe.execute())

        return int(self._call(run, 0))

    def _record_call(self, exposure_id: int | str, metrics: dict) -> tuple[list[str], list[str]]:
        """The record script's keys and arguments for a row (``RECORD_METRICS``)."""
        body = dict(metrics)
        body.setdefault("exposure_id", exposure_id)
        score = body.get("persisted_ms")
        if not isinstance(score, int | float) or not math.isfinite(score):
            score = time.time() * 1000.0
            body["persisted_ms"] = int(score)
        status = str(body.get("status") or "unknown")
        indexes = "\n".join(self._index_keys(body))
        pairs: list[str] = []
        for name in FIRST_FIELDS:  # their values go apart, placeholders stay in the row
            pairs += [name, json_text(body[name]) if name in body else ""]
            if name in body:
                body[name] = f"\x00first:{name}"
        parts = ((), ("by_time",), ("status",), ("first",), ("indexed",), ("by_arrival",), ("seq",))
        keys = [self._key("metrics", *part) for part in parts]
        fingerprint = json_text(body["fingerprint"]) if "fingerprint" in body else ""
        args = [str(exposure_id), json_text(body), repr(float(score)), status]
        args += [self._key("metrics", "by_status", ""), fingerprint, indexes, *pairs]
        return keys, args

    def metrics(self, exposure_id: int | str) -> dict | None:
        """One exposure's metrics, or None."""
        return loads_row(self._call(lambda r: r.hget(self._key("metrics"), str(exposure_id)), None))

    def recent_metrics(
        self, limit: int = 100, offset: int = 0, *, status: str | None = None
    ) -> list[dict]:
        """Metrics newest first (by ``persisted_ms``), ``limit`` from ``offset``; only those
        with ``status`` when given. Empty when Redis is unavailable."""
        if limit <= 0 or offset < 0:
            return []
        index = (
            self._key("metrics", "by_time")
            if status is None
            else self._key("metrics", "by_status", status)
        )

        def page(r: redis.Redis) -> list[dict]:
            ids = r.zrevrange(index, offset, offset + limit - 1)
            if not ids:
                return []
            rows = (loads_row(raw) for raw in r.hmget(self._key("metrics"), ids))
            return [row for row in rows if row is not None]

        return self._call(page, [])

    def count_metrics(self) -> int:
        """How many exposures have metrics (0 when Redis is unavailable)."""
        return int(self._call(lambda r: r.zcard(self._key("metrics", "by_time")), 0))

    # ------------------------------------------------------------------ counters

    def incr(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to a throughput counter (e.g. ``"processed:detect"``)."""
        self.count(name, amount)

    def counters(self) -> dict[str, int]:
        """Every counter by name (empty when Redis is unavailable)."""
        raw = self._call(lambda r: r.hgetall(self._key(COUNTERS)), {})
        return {k.decode(): int(v) for k, v in raw.items()}

    # ------------------------------------------------------------------ histograms

    def observe(self, name: str, label: str, seconds: float) -> None:
        """Count one observation of ``name`` (e.g. ``"stage_seconds"``, label ``"detect"``)
        in its bucket of :data:`HISTOGRAM_BUCKETS_S`."""
        if not math.isfinite(seconds):
            return
        bucket = bisect_left(HISTOGRAM_BUCKETS_S, seconds)  # len(...) is the +inf bucket
        key = self._key("hist", name)

        def write(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=False)
            pipe.hincrby(key, f"{label}|{bucket}", 1)
            pipe.hincrbyfloat(key, f"{label}|sum", seconds)
            pipe.execute()

        self._call(write, None)

    def histograms(self, name: str) -> dict[str, Histogram]:
        """Every label's histogram of ``name`` (empty when Redis is unavailable)."""
        raw = self._call(lambda r: r.hgetall(self._key("hist", name)), {})
        n = len(HISTOGRAM_BUCKETS_S) + 1
        counts: dict[str, list[int]] = {}
        sums: dict[str, float] = {}
        for field_, value in raw.items():
            label, _, slot = field_.decode().rpartition("|")
            if slot == "sum":
                sums[label] = float(value)
            elif slot.isdigit() and int(slot) < n:
                counts.setdefault(label, [0] * n)[int(slot)] += int(value)
        bounds = (*HISTOGRAM_BUCKETS_S, math.inf)
        return {
            label: Histogram(bounds, tuple(accumulate(per_bucket)), sums.get(label, 0.0))
            for label, per_bucket in counts.items()
        }

    # ------------------------------------------------------------------ dashboard queries

    def count_by_status(self) -> dict[str, int]:
        """Exposures in the read model by status: ``ok`` and ``failed`` always, ``warning``
        (ok with warnings) and ``partial`` when there are some."""
        statuses = ("ok", "warning", "partial", "failed")

        def count(r: redis.Redis) -> dict[str, int]:
            pipe = r.pipeline(transaction=False)
            for status in statuses:
                pipe.zcard(self._key("metrics", "by_status", status))
            found = dict(zip(statuses, (int(n) for n in pipe.execute()), strict=True))
            return {k: n for k, n in found.items() if n or k in ("ok", "failed")}

        return self._call(count, {"ok": 0, "failed": 0})

    def page_metrics(
        self,
        limit: int = 100,
        *,
        before_ms: float | None = None,
        since_ms: float | None = None,
        status: str | None = None,
        where: Mapping[str, Any] | None = None,
        budget: int = READ_BUDGET,
    ) -> list[dict]:
        """Metrics newest first with ``since_ms < persisted_ms < before_ms`` (bounds optional),
        at most ``limit`` of them that have ``status`` and the ``where`` values, reading at
        most ``budget`` index entries (:meth:`query_metrics`). Pages by time, not offset, so
        a live stream does not shift the pages."""
        query = {"before_ms": before_ms, "since_ms": since_ms, "status": status, "where": where}
        return self.query_metrics(limit, **query, budget=budget).rows

    def count_between(self, intervals: list[tuple[float, float]]) -> list[int]:
        """Exposures persisted in each interval ``[start, end)`` of ms (throughput)."""

        def count(r: redis.Redis) -> list[int]:
            pipe = r.pipeline(transaction=False)
            for lo, hi in intervals:
                pipe.zcount(self._key("metrics", "by_time"), float(lo), f"({float(hi)!r}")
            return [int(n) for n in pipe.execute()]

        return self._call(count, [0] * len(intervals))
