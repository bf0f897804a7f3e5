"""The read model's indexes and the bounded queries the dashboard makes over them.

Every metrics row is in sorted sets scored by its persisted time: ``metrics:by_time`` (all),
``metrics:by_status:<status>`` and one per value of each :data:`INDEXED` field
(``metrics:by_band:r``, ``metrics:by_visit:104``, ``metrics:by_detector:3``), kept by the
record script (:data:`RECORD_METRICS`) in the same atomic step as the row, and by
:meth:`IndexedQueries.reindex_metrics` for rows recorded before the indexes existed. A page
(:data:`PAGE_METRICS`) walks the smallest of the sets its filters name, newest first, checks
membership in the others, and reads at most ``budget`` entries: no query scans the rows.

Rows also have an arrival number (``metrics:by_arrival``, from the counter ``metrics:seq``),
bumped whenever a row is new or changes: the live stream follows it (:meth:`arrivals`), so a
burst is paged to a page, never cut, and a row recorded late (an older persisted time) is not
skipped either.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

from streams.redis_client import loads_row

__all__ = [
    "INDEXED",
    "READ_BUDGET",
    "RECORD_METRICS",
    "Arrivals",
    "IndexedQueries",
    "MetricsPage",
    "index_value",
]

#: The row fields with a sorted set per value (status has its own, ``by_status``).
INDEXED = ("band", "visit", "detector")

#: The most index entries one page may read (a filter that matches rarely stops here and
#: says where to go on: ``MetricsPage.next_before``).
READ_BUDGET = 20_000

_LONGEST_VALUE = 64

# Replace a metrics row atomically: the JSON, its place in time, its status and value indexes,
# its arrival number, and the FIRST_FIELDS rule. The row comes as sorted JSON whose
# FIRST_FIELDS values are placeholders ("\u0000first:<name>"); their JSON texts come in ARGV
# ('' when the record has no such field) and are kept as texts in a hash of their own (field
# "<id>|<name>"), with the fingerprint. The value indexes a row is in are listed in a hash
# (id -> keys, one a line) so that a changed value leaves its old set.
# KEYS: rows hash, by_time zset, status hash, first-fields hash, indexed hash, by_arrival
#       zset, arrival counter
# ARGV: id, row template, score, status, by_status key prefix, fingerprint text ('' if none),
#       value index keys (one a line), then name, text pairs
# Returns 1 when the row took this record's FIRST_FIELDS, 0 when it kept earlier ones.
RECORD_METRICS = """
local id, status, fingerprint = ARGV[1], ARGV[4], ARGV[6]
local text = {}
for i = 8, #ARGV, 2 do text[ARGV[i]] = ARGV[i + 1] end
local score, fresh = ARGV[3], 1
local old = redis.call('HGET', KEYS[3], id)
if old == status then
  local function same(name, value)
    local was = redis.call('HGET', KEYS[4], id .. '|' .. name)
    return was and was ~= '' and was ~= 'null' and was == value
  end
  local submission = status == 'ok' and same('submitted_ms', text.submitted_ms)
  if same('fingerprint', fingerprint) or submission then
    fresh = 0
    for name, _ in pairs(text) do
      text[name] = redis.call('HGET', KEYS[4], id .. '|' .. name) or 'null'
    end
    score = redis.call('ZSCORE', KEYS[2], id) or score
  end
end
text.fingerprint = fingerprint
for name, value in pairs(text) do
  if fresh == 1 or name == 'fingerprint' then
    if value == '' then redis.call('HDEL', KEYS[4], id .. '|' .. name)
    else redis.call('HSET', KEYS[4], id .. '|' .. name, value) end
  end
end
local row = string.gsub(ARGV[2], '"\\\\u0000first:([%w_]+)"', function(name)
  local value = text[name]
  if value == nil or value == '' then return 'null' end
  return value
end)
if old and old ~= status then redis.call('ZREM', ARGV[5] .. old, id) end
local previous = redis.call('HGET', KEYS[1], id)
redis.call('HSET', KEYS[1], id, row)
redis.call('ZADD', KEYS[2], score, id)
redis.call('HSET', KEYS[3], id, status)
redis.call('ZADD', ARGV[5] .. status, score, id)
local wanted = {}
for key in string.gmatch(ARGV[7], '[^\\n]+') do wanted[key] = true end
local was = redis.call('HGET', KEYS[5], id)
if was then
  for key in string.gmatch(was, '[^\\n]+') do
    if not wanted[key] then redis.call('ZREM', key, id) end
  end
end
for key, _ in pairs(wanted) do redis.call('ZADD', key, score, id) end
if ARGV[7] == '' then redis.call('HDEL', KEYS[5], id)
else redis.call('HSET', KEYS[5], id, ARGV[7]) end
if row ~= previous then redis.call('ZADD', KEYS[6], redis.call('INCR', KEYS[7]), id) end
return fresh
"""

# A page newest first: walk the smallest of the sets (within the score range), keep the ids
# in every other set, stop at ARGV[3] rows or ARGV[4] entries read. Returns the score of the
# last entry read when it stopped early ('' at the end), the arrival counter, then the rows.
# KEYS: rows hash, arrival counter, the sets (at least one)
# ARGV: top, bottom (ZREVRANGEBYSCORE bounds), limit, budget, chunk
_PAGE_METRICS = """
local top, bottom = ARGV[1], ARGV[2]
local limit, budget, chunk = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local sets = {}
for i = 3, #KEYS do sets[#sets + 1] = {KEYS[i], redis.call('ZCOUNT', KEYS[i], bottom, top)} end
table.sort(sets, function(a, b) return a[2] < b[2] end)
local ids, read, offset, last, ended = {}, 0, 0, '', sets[1][2] == 0
while not ended and #ids < limit and read < budget do
  local want = math.min(chunk, budget - read)
  local got = redis.call('ZREVRANGEBYSCORE', sets[1][1], top, bottom, 'WITHSCORES',
                         'LIMIT', offset, want)
  local members = {}
  for i = 1, #got, 2 do members[#members + 1] = got[i] end
  local keep = {}
  for i = 1, #members do keep[i] = true end
  for s = 2, #sets do
    if #members > 0 then
      local scores = redis.call('ZMSCORE', sets[s][1], unpack(members))
      for i = 1, #members do if not scores[i] then keep[i] = false end end
    end
  end
  for i = 1, #members do
    read, last = read + 1, got[2 * i]
    if keep[i] then ids[#ids + 1] = members[i] end
    if #ids == limit then break end
  end
  offset = offset + #members
  ended = #members < want or offset >= sets[1][2]
end
if ended and #ids < limit then last = '' end
local out = {last, redis.call('GET', KEYS[2]) or '0'}
for i = 1, #ids, 1000 do
  local rows = redis.call('HMGET', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #rows do out[#out + 1] = rows[j] end
end
return out
"""

# Rows that arrived after ARGV[1] (arrival numbers), oldest first, at most ARGV[2]; returns
# the arrival counter, then number, row pairs.
# KEYS: rows hash, by_arrival zset, arrival counter
_ARRIVALS = """
local got = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[2]))
local out = {redis.call('GET', KEYS[3]) or '0'}
for i = 1, #got, 2 do
  out[#out + 1] = got[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[1], got[i])
end
return out
"""

# Index rows recorded before the value indexes existed (no entry in the indexed hash), unless
# the row changed since it was read (its SHA-1 differs: the record script indexed it then).
# KEYS: rows hash, by_time zset, indexed hash; ARGV: id, sha1, keys (one a line) triples
_REINDEX = """
local done = 0
for i = 1, #ARGV, 3 do
  local id, keys = ARGV[i], ARGV[i + 2]
  local row = redis.call('HGET', KEYS[1], id)
  local score = redis.call('ZSCORE', KEYS[2], id)
  if row and score and redis.call('HEXISTS', KEYS[3], id) == 0
      and redis.sha1hex(row) == ARGV[i + 1] and keys ~= '' then
    for key in string.gmatch(keys, '[^\\n]+') do redis.call('ZADD', key, score, id) end
    redis.call('HSET', KEYS[3], id, keys)
    done = done + 1
  end
end
return done
"""


def index_value(value: Any) -> str | None:
    """The text a field's value is indexed under (None: not indexed): integers (and integral
    floats) as decimal, strings as they are; not booleans, long or multi-line strings."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str) and value and len(value) <= _LONGEST_VALUE and "\n" not in value:
        return value
    return None


@dataclass(frozen=True)
class MetricsPage:
    """A page of rows newest first; ``next_before`` is where the next (older) page starts
    (None at the end), ``cursor`` the arrival number when it was read (the live stream goes
    on from there; None when Redis is unavailable), ``partial`` whether the read budget
    ended the page before it was full."""

    rows: list[dict]
    next_before: float | None = None
    cursor: int | None = None
    partial: bool = False


@dataclass(frozen=True)
class Arrivals:
    """Rows that arrived after a cursor, oldest first, and the cursor after them."""

    rows: list[dict]
    cursor: int | None


class IndexedQueries:
    """The indexes' share of :class:`~streams.readmodel.RedisReadModel` (a mixin over
    :class:`~streams.redis_client.RedisClient`)."""

    _call: Callable[..., Any]
    _key: Callable[..., str]
    prefix: str

    def _register_index_scripts(self, client: redis.Redis) -> None:
        self._page_script = client.register_script(_PAGE_METRICS)
        self._arrivals_script = client.register_script(_ARRIVALS)
        self._reindex_script = client.register_script(_REINDEX)

    def _index_keys(self, row: Mapping[str, Any]) -> list[str]:
        """The value index keys of a row (see :data:`INDEXED`)."""
        found = ((name, index_value(row.get(name))) for name in INDEXED)
        return [self._key("metrics", f"by_{name}", v) for name, v in found if v is not None]

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
        """Rows newest first with ``since_ms < persisted_ms < before_ms`` (bounds optional),
        ``status`` and the ``where`` values (fields of :data:`INDEXED`), at most ``limit``,
        reading at most ``budget`` index entries (the smallest set's)."""
        sets = [] if status is None else [self._key("metrics", "by_status", status)]
        for name, value in (where or {}).items():
            if name not in INDEXED:
                raise ValueError(f"{name} has no index (indexed: {', '.join(INDEXED)})")
            text = index_value(value)
            if text is None:
                return MetricsPage([])  # no row is indexed under it
            sets.append(self._key("metrics", f"by_{name}", text))
        if limit <= 0:
            return MetricsPage([])
        sets = sets or [self._key("metrics", "by_time")]  # every row is in by_time
        top = "+inf" if before_ms is None else f"({float(before_ms)!r}"
        bottom = "-inf" if since_ms is None else f"({float(since_ms)!r}"
        keys = [self._key("metrics"), self._key("metrics", "seq"), *sets]
        args = [top, bottom, limit, max(1, budget), min(1000, max(limit, 100))]
        raw = self._call(lambda r: self._page_script(keys=keys, args=args, client=r), None)
        if raw is None:
            return MetricsPage([])
        last, seq, *texts = raw
        rows = [row for row in map(loads_row, texts) if row is not None]
        next_before = float(last) if last else None
        partial = next_before is not None and len(texts) < limit
        return MetricsPage(rows, next_before, int(seq), partial)

    def arrivals(self, after: int | None, limit: int = 500) -> Arrivals:
        """Rows that arrived (were recorded new or changed) after the arrival number
        ``after``, oldest first, at most ``limit``; ``after=None``: none, only the cursor of
        now. The cursor is None when Redis is unavailable."""
        keys = [self._key("metrics", *p) for p in ((), ("by_arrival",), ("seq",))]
        if after is None:
            seq = self._call(lambda r: r.get(keys[2]), False)
            return Arrivals([], None if seq is False else int(seq or 0))
        raw = self._call(
            lambda r: self._arrivals_script(keys=keys, args=[after, limit], client=r), None
        )
        if raw is None:
            return Arrivals([], after)
        if int(raw[0]) < after:  # the counter went back (Redis emptied): start again from 0
            return self.arrivals(0, limit) if after > 0 else Arrivals([], 0)
        rows = [row for row in map(loads_row, raw[2::2]) if row is not None]
        return Arrivals(rows, int(float(raw[-2])) if len(raw) > 1 else after)

    # ------------------------------------------------------------------ (re)indexing

    def indexed(self) -> bool | None:
        """Whether every row is in its value indexes (the ``indexed`` marker; None when
        Redis is unavailable)."""
        return self._call(lambda r: bool(r.exists(self._key("metrics", "indexed_v1"))), None)

    def reindex_metrics(self, batch: int = 1000) -> int:
        """Put every row that is in no value index yet into its indexes (rows recorded
        before they existed); sets the ``indexed`` marker. Returns the rows indexed (0 when
        Redis is unavailable: the marker is then left unset)."""
        keys = [self._key("metrics", *p) for p in ((), ("by_time",), ("indexed",))]

        def run(r: redis.Redis) -> int:
            done, cursor = 0, 0
            while True:
                cursor, rows = r.hscan(keys[0], cursor, count=batch)
                args: list[Any] = []
                for field_, raw in rows.items():
                    row = loads_row(raw)
                    if row is not None:
                        sha = hashlib.sha1(raw).hexdigest()
                        args += [field_, sha, "\n".join(self._index_keys(row))]
                if args:
                    done += int(self._reindex_script(keys=keys, args=args, client=r))
                if cursor == 0:
                    r.set(self._key("metrics", "indexed_v1"), "1")
                    return done

        return int(self._call(run, 0))
