"""The read model: what the sink persisted and the service's metrics, in Redis for the dashboard.

Redis holds the sink's ledger of persisted exposures (so a replayed event is recognised without
a look at the disk), and per-exposure metrics, throughput counters and histograms for the
dashboard. It is never the only copy of anything: the truth is the output folders on disk and
the Kafka topics, and a flushed or lost Redis is rebuilt by replaying them, so nothing here may
ever stop or slow calibration (see :class:`~streams.redis_client.RedisClient`: every call
degrades when Redis is down). The reference-shard cache is :mod:`streams.shard_cache`.
"""

from __future__ import annotations

import json
import math
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Protocol, runtime_checkable

import redis

from streams.redis_client import COUNTERS, RedisClient

__all__ = ["HISTOGRAM_BUCKETS_S", "Histogram", "ReadModel", "RedisReadModel", "json_text"]

#: Upper bounds (seconds) of the histograms' buckets: stage durations and latency.
HISTOGRAM_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# Replace a metrics entry atomically: the JSON, its place in time, and its status index.
# KEYS: metrics hash, by_time zset, status hash; ARGV: id, json, score, status, status key prefix.
_RECORD_METRICS = """
local old = redis.call('HGET', KEYS[3], ARGV[1])
if old and old ~= ARGV[4] then redis.call('ZREM', ARGV[5] .. old, ARGV[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('ZADD', ARGV[5] .. ARGV[4], ARGV[3], ARGV[1])
return 1
"""


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


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars and arrays as Python values, NaN/inf as None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    for attr in ("item", "tolist"):  # numpy scalar / array
        method = getattr(value, attr, None)
        if callable(method):
            try:
                return _plain(method())
            except (TypeError, ValueError):
                break
    return str(value)


def json_text(value: Any) -> str:
    """Strict, compact JSON of ``value`` (numpy values as Python ones, NaN/inf as null): the
    read model's rows and the dashboard's answers."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _loads(raw: bytes | str | None) -> dict | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@runtime_checkable
class ReadModel(Protocol):
    """What the service's code asks of the read model: the workers' steps write it (``incr``,
    ``observe``, ``record_persisted``, ``record_metrics``), the dashboard reads it."""

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

    def record_metrics(self, exposure_id: int | str, metrics: dict) -> None:
        """Store an exposure's metrics row, replacing any earlier one."""

    def metrics(self, exposure_id: int | str) -> dict | None:
        """One exposure's metrics row, or None."""

    def page_metrics(
        self,
        limit: int = 100,
        *,
        before_ms: float | None = None,
        since_ms: float | None = None,
        status: str | None = None,
        match: Callable[[dict], bool] | None = None,
        scan: int = 1000,
    ) -> list[dict]:
        """Metrics rows newest first between two times, filtered, at most ``limit``."""

    def count_between(self, intervals: list[tuple[float, float]]) -> list[int]:
        """Exposures persisted in each ``[start, end)`` interval of ms."""

    def count_by_status(self) -> dict[str, int]:
        """Exposures in the read model by status (``ok``, ``failed``)."""

    def counters(self) -> dict[str, int]:
        """Every throughput counter by name."""

    def histograms(self, name: str) -> dict[str, Histogram]:
        """Every label's histogram of ``name``."""


class RedisReadModel(RedisClient):
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
        self._record_script = client.register_script(_RECORD_METRICS)

    # ------------------------------------------------------------------ persisted ledger

    def record_persisted(self, exposure_id: int | str, entry: dict) -> None:
        """Note that the sink persisted an exposure (status, folder, fingerprint, persisted_ms)."""
        text = json_text(entry)
        self._call(lambda r: r.hset(self._key("ledger"), str(exposure_id), text), None)

    def persisted(self, exposure_id: int | str) -> dict | None:
        """The ledger entry of an exposure, or None (unknown, or Redis unavailable)."""
        raw = self._call(lambda r: r.hget(self._key("ledger"), str(exposure_id)), None)
        return _loads(raw)

    def ledger_size(self) -> int:
        """How many exposures the ledger holds (0 when Redis is unavailable)."""
        return int(self._call(lambda r: r.hlen(self._key("ledger")), 0))

    # ------------------------------------------------------------------ metrics

    def record_metrics(self, exposure_id: int | str, metrics: dict) -> None:
        """Store an exposure's metrics, replacing any earlier record of it; ordered by
        ``persisted_ms`` (now when absent), indexed by ``status``."""
        member = str(exposure_id)
        body = dict(metrics)
        body.setdefault("exposure_id", exposure_id)
        score = body.get("persisted_ms")
        if not isinstance(score, int | float) or not math.isfinite(score):
            score = time.time() * 1000.0
            body["persisted_ms"] = int(score)
        status = str(body.get("status") or "unknown")
        text = json_text(body)
        keys = [
            self._key("metrics"),
            self._key("metrics", "by_time"),
            self._key("metrics", "status"),
        ]
        args = [member, text, repr(float(score)), status, self._key("metrics", "by_status", "")]
        self._call(lambda r: self._record_script(keys=keys, args=args, client=r), None)

    def metrics(self, exposure_id: int | str) -> dict | None:
        """One exposure's metrics, or None."""
        return _loads(self._call(lambda r: r.hget(self._key("metrics"), str(exposure_id)), None))

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
            rows = (_loads(raw) for raw in r.hmget(self._key("metrics"), ids))
            return [row for row in rows if row is not None]

        return self._call(page, [])

    def count_metrics(self) -> int:
        """How many exposures have metrics (0 when Redis is unavailable)."""
        return int(self._call(lambda r: r.zcard(self._key("metrics", "by_time")), 0))

    # ------------------------------------------------------------------ counters

    def incr(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to a throughput counter (e.g. ``"processed:detect"``)."""
        self._call(lambda r: r.hincrby(self._key(COUNTERS), name, amount), None)

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
        """Exposures in the read model by status (``ok``, ``failed``)."""
        statuses = ("ok", "failed")

        def count(r: redis.Redis) -> dict[str, int]:
            pipe = r.pipeline(transaction=False)
            for status in statuses:
                pipe.zcard(self._key("metrics", "by_status", status))
            return dict(zip(statuses, (int(n) for n in pipe.execute()), strict=True))

        return self._call(count, dict.fromkeys(statuses, 0))

    def page_metrics(
        self,
        limit: int = 100,
        *,
        before_ms: float | None = None,
        since_ms: float | None = None,
        status: str | None = None,
        match: Callable[[dict], bool] | None = None,
        scan: int = 1000,
    ) -> list[dict]:
        """Metrics newest first with ``since_ms < persisted_ms < before_ms`` (bounds optional),
        at most ``limit`` of them that have ``status`` and pass ``match``. Pages by time,
        not offset, so a live stream does not shift the pages; reads ``scan`` at a time."""
        if limit <= 0:
            return []
        index = self._key("metrics", *(("by_time",) if status is None else ("by_status", status)))
        top = "+inf" if before_ms is None else f"({float(before_ms)!r}"
        bottom = "-inf" if since_ms is None else f"({float(since_ms)!r}"

        def page(r: redis.Redis) -> list[dict]:
            rows: list[dict] = []
            start = 0
            while len(rows) < limit:
                ids = r.zrevrangebyscore(index, top, bottom, start=start, num=scan)
                if not ids:
                    break
                start += len(ids)
                for raw in r.hmget(self._key("metrics"), ids):
                    row = _loads(raw)
                    if row is not None and (match is None or match(row)):
                        rows.append(row)
                        if len(rows) == limit:
                            break
            return rows

        return self._call(page, [])

    def count_between(self, intervals: list[tuple[float, float]]) -> list[int]:
        """Exposures persisted in each interval ``[start, end)`` of ms (throughput)."""

        def count(r: redis.Redis) -> list[int]:
            pipe = r.pipeline(transaction=False)
            for lo, hi in intervals:
                pipe.zcount(self._key("metrics", "by_time"), float(lo), f"({float(hi)!r}")
            return [int(n) for n in pipe.execute()]

        return self._call(count, [0] * len(intervals))
