"""The read model's visits: a row per visit for the dashboard, mixed into the Redis read model.

The visit agent persists ``ROOT/visits/<VISIT>/summary.json`` and ``detectors.json`` and then
records them here (:meth:`VisitQueries.record_visit`); :mod:`streams.rebuild` records them
again from the folders into an emptied Redis. The folders stay the truth: these rows only let
the dashboard page through the night's visits without reading every folder.

Keys (under the prefix): ``visits`` (visit -> the summary as JSON, plus its detectors' expids),
``visits:detectors`` (visit -> the detectors' outcomes, ``VisitState.to_dict()`` JSON, apart so
that a list never loads them), ``visits:first`` (``<visit>|first_ms``, ``|persisted_ms``,
``|fingerprint``), ``visits:by_time`` (scored by the visit's first persistence: a late
detector's update replaces the row but does not move the visit to the top of the night) and
``visits:complete`` / ``visits:incomplete`` (the counts by completeness).

A replay of the same content (same fingerprint: a digest of summary and detectors) keeps the
time of its first persistence, as an exposure's row does; ``first_ms`` is never rewritten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import redis

from streams.redis_client import json_text, loads_row

__all__ = ["MAX_VISITS_PAGE", "RECORD_VISIT", "VisitQueries", "VisitReadModel", "visit_row"]

#: The most visit rows one page holds.
MAX_VISITS_PAGE = 1000

#: Completeness classes (sorted sets of their own, so that counting them is two ZCARDs).
COMPLETENESS = ("complete", "incomplete")

# Replace a visit's row and detectors atomically, keeping the times of its first persistence.
# KEYS: rows hash, detectors hash, first hash, by_time zset, complete zset, incomplete zset
# ARGV: visit, row JSON, detectors JSON, fingerprint, persisted_ms, completeness
# Returns 1 when this record's content is new (its persisted_ms taken), 0 for a replay.
RECORD_VISIT = """
local v, fingerprint, ms = ARGV[1], ARGV[4], ARGV[5]
local first = redis.call('HGET', KEYS[3], v .. '|first_ms')
if not first then
  first = ms
  redis.call('HSET', KEYS[3], v .. '|first_ms', first)
end
local fresh = 0
if redis.call('HGET', KEYS[3], v .. '|fingerprint') ~= fingerprint then
  redis.call('HSET', KEYS[3], v .. '|fingerprint', fingerprint, v .. '|persisted_ms', ms)
  fresh = 1
end
redis.call('HSET', KEYS[1], v, ARGV[2])
redis.call('HSET', KEYS[2], v, ARGV[3])
redis.call('ZADD', KEYS[4], first, v)
if ARGV[6] == 'complete' then
  redis.call('ZADD', KEYS[5], first, v)
  redis.call('ZREM', KEYS[6], v)
else
  redis.call('ZADD', KEYS[6], first, v)
  redis.call('ZREM', KEYS[5], v)
end
return fresh
"""


@runtime_checkable
class VisitReadModel(Protocol):
    """What the visit agent writes and the dashboard reads of visits (part of ``ReadModel``)."""

    def record_visit(self, visit: int | str, summary: dict, state: dict, persisted_ms: int) -> bool:
        """Store a visit's summary and detectors, replacing any earlier ones; True when the
        content is new (a replay of the same keeps its first persistence's time)."""

    def visit(self, visit: int | str) -> dict | None:
        """``{"summary": row, "state": detectors}`` of one visit, or None."""

    def visits(self, limit: int = 100, after: int | str | None = None) -> list[dict]:
        """Visit rows newest first (by first persistence), after the visit ``after``."""

    def count_visits(self) -> dict[str, int]:
        """Visits by completeness: ``complete`` and ``incomplete``."""


def visit_row(summary: Mapping[str, Any], state: Mapping[str, Any]) -> dict:
    """The row a visit list shows: the summary, and its detectors' expids (sorted) to find
    the visit's time of observation in the exposures' rows."""
    outcomes = state.get("outcomes") or []
    expids = sorted({o["expid"] for o in outcomes if isinstance(o.get("expid"), int)})
    return {**summary, "expids": expids}


def _fingerprint(row_text: str, state_text: str) -> str:
    """A digest of what the visit's folder says: the same content replayed is not news."""
    return hashlib.sha256(f"{row_text}\n{state_text}".encode()).hexdigest()[:32]


class VisitQueries:
    """The visit rows of :class:`~streams.readmodel.RedisReadModel` (a mixin over
    :class:`~streams.redis_client.RedisClient`: every call degrades when Redis is down)."""

    _call: Callable[..., Any]
    _key: Callable[..., str]
    _visit_script: Any = None

    def _register_visit_scripts(self, client: redis.Redis) -> None:
        self._visit_script = client.register_script(RECORD_VISIT)

    def record_visit(self, visit: int | str, summary: dict, state: dict, persisted_ms: int) -> bool:
        """Store a visit's row (its summary) and detectors (``VisitState.to_dict()``),
        replacing earlier ones; the times of its first persistence are kept for the same
        content (a replay), ``first_ms`` always. True when this content is new."""
        row_text = json_text(visit_row(summary, state))
        state_text = json_text(state)
        completeness = "complete" if summary.get("complete") else "incomplete"
        keys = [self._key("visits", *p) for p in ((), ("detectors",), ("first",), ("by_time",))]
        keys += [self._key("visits", c) for c in COMPLETENESS]
        args = [str(visit), row_text, state_text, _fingerprint(row_text, state_text)]
        args += [str(int(persisted_ms)), completeness]
        return bool(self._call(lambda r: self._visit_script(keys=keys, args=args, client=r), 0))

    def visit(self, visit: int | str) -> dict | None:
        """``{"summary": row, "state": detectors}`` of one visit (the row with its times and
        time of observation), or None (unknown, or Redis unavailable)."""

        def read(r: redis.Redis) -> dict | None:
            pipe = r.pipeline(transaction=False)
            pipe.hget(self._key("visits"), str(visit))
            pipe.hget(self._key("visits", "detectors"), str(visit))
            raw_row, raw_state = pipe.execute()
            row = loads_row(raw_row)
            if row is None:
                return None
            [row] = self._with_times(r, [row])
            return {"summary": row, "state": loads_row(raw_state) or {"outcomes": []}}

        return self._call(read, None)

    def visits(self, limit: int = 100, after: int | str | None = None) -> list[dict]:
        """Visit rows newest first (by first persistence), at most ``limit`` (bounded by
        :data:`MAX_VISITS_PAGE`), starting after the visit ``after`` (the last of the page
        before; an unknown one gives an empty page). Empty when Redis is unavailable."""
        limit = min(int(limit), MAX_VISITS_PAGE)
        if limit <= 0:
            return []
        by_time = self._key("visits", "by_time")

        def page(r: redis.Redis) -> list[dict]:
            start = 0
            if after is not None:
                rank = r.zrevrank(by_time, str(after))
                if rank is None:
                    return []
                start = int(rank) + 1
            ids = r.zrevrange(by_time, start, start + limit - 1)
            if not ids:
                return []
            rows = [loads_row(raw) for raw in r.hmget(self._key("visits"), ids)]
            return self._with_times(r, [row for row in rows if row is not None])

        return self._call(page, [])

    def count_visits(self) -> dict[str, int]:
        """Visits by completeness (zeros when Redis is unavailable)."""

        def count(r: redis.Redis) -> dict[str, int]:
            pipe = r.pipeline(transaction=False)
            for name in COMPLETENESS:
                pipe.zcard(self._key("visits", name))
            return dict(zip(COMPLETENESS, (int(n) for n in pipe.execute()), strict=True))

        return self._call(count, dict.fromkeys(COMPLETENESS, 0))

    def _with_times(self, r: redis.Redis, rows: list[dict]) -> list[dict]:
        """The rows with ``first_ms``, ``persisted_ms`` and ``mjd_obs`` (the MJD-OBS of the
        visit's first exposure in the exposures' rows, null when it has none there)."""
        if not rows:
            return rows
        pipe = r.pipeline(transaction=False)
        for row in rows:
            visit = str(row.get("visit"))
            pipe.hmget(self._key("visits", "first"), f"{visit}|first_ms", f"{visit}|persisted_ms")
        # the first exposure of each visit ("" for none: no such row); one HMGET for them all
        pipe.hmget(self._key("metrics"), [str((row.get("expids") or [""])[0]) for row in rows])
        *times, firsts = pipe.execute()
        for row, (first_ms, persisted_ms), raw in zip(rows, times, firsts, strict=True):
            row["first_ms"] = int(first_ms) if first_ms is not None else None
            row["persisted_ms"] = int(persisted_ms) if persisted_ms is not None else None
            exposure = loads_row(raw)
            row["mjd_obs"] = exposure.get("mjd_obs") if exposure else None
        return rows
